"""The main job on the embedded defaults: what ``make demo`` runs.

Until the pipeline stages and DAGs exist, the demo simulates a small archive covering all three
field types and reports what it made.
"""

from __future__ import annotations

import logging
from pathlib import Path

from crlib.config import Settings

log = logging.getLogger(__name__)


def run_demo(settings: Settings, *, out: Path | None = None, seed: int = 2026) -> str:
    """Simulate a small archive and return a human-readable summary.

    Parameters
    ----------
    settings
        Effective settings (the archive is written under ``settings.data_root`` unless ``out`` is given).
    out
        Archive directory to (re)write.
    seed
        Random seed for the simulation.

    Returns
    -------
    str
        Multi-line summary for the terminal.
    """
    from crlib.simulate import simulate_archive

    archive_dir = out or settings.data_root / "demo" / "archive"
    archive = simulate_archive(
        archive_dir, visits=3, exposures=3, field_type="mixed", filters=("F606W",), size="small", seed=seed
    )
    lines = [f"Simulated archive: {archive.root}"]
    for visit in archive.visits:
        lines.append(
            f"  visit {visit.visit} ({visit.field_type}, {visit.filter}): {len(visit.exposures)} exposures, "
            f"pointing error {visit.pointing_error_px:.2f} px"
        )
        for exposure in visit.exposures:
            lines.append(
                f"    {exposure.rootname}  {exposure.exptime_s:6.0f} s  CR pixels {exposure.cr_pixel_fraction:.2%}"
            )
    lines.append("Next: crlib screen <file>..., crlib --help")
    return "\n".join(lines)
