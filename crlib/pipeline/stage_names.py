"""The names of the stages a run can redo or reuse, in the order a run calls them.

One list for ``crlib run --redo``, :func:`crlib.pipeline.stages.run_stage` and the reprocessing
DAG's ``stages`` Param. Importing this module imports nothing else (the DAG files read it at parse
time).
"""

from __future__ import annotations

#: Stages run once per visit, in order.
VISIT_STAGES: tuple[str, ...] = ("fetch", "screen", "truth")

#: Stages run once per accepted exposure, in order.
EXPOSURE_STAGES: tuple[str, ...] = ("infer", "score")

#: Every stage a run can redo or reuse.
STAGES: tuple[str, ...] = VISIT_STAGES + EXPOSURE_STAGES
