"""The results database schema as a typed SQLAlchemy 2.0 ORM.

Natural keys are the primary keys wherever the domain has one (``rootname``, ``visit``,
``proposal_id``, ``(rootname, chip)`` ...), so repository upserts are single
``INSERT ... ON CONFLICT`` statements. Every CHECK constraint is named after the column it
guards (``ck_<table>_<column>``), which lets :mod:`crlib.db.repo` turn a rejection into an
error naming the field.

The schema is created and evolved only by the Alembic migrations in
:mod:`crlib.db.migrations`; deployments never call ``create_all``.
"""

from __future__ import annotations

from crlib.db.orm.archive import ArchiveWatermark, Exposure, Filter, PipelineRun, Proposal, Visit
from crlib.db.orm.base import NAMING_CONVENTION, Base, constraint_fields, table_of
from crlib.db.orm.models import Model, ModelAliasEvent, ModelVersion, ModelVersionSplit, PromotionDecisionRow
from crlib.db.orm.results import (
    AlignmentResultRow,
    CrStatisticsRow,
    ExposureMetricsRow,
    PredictionRow,
    ScreeningReasonRow,
    ScreeningVerdictRow,
    TruthChipRow,
    TruthResultRow,
)
from crlib.db.orm.summaries import (
    CrRateDaily,
    PerformanceMonthly,
    PerformanceTotal,
    SummaryChange,
    SummaryRefresh,
)

__all__ = [
    "NAMING_CONVENTION",
    "AlignmentResultRow",
    "ArchiveWatermark",
    "Base",
    "CrRateDaily",
    "CrStatisticsRow",
    "Exposure",
    "ExposureMetricsRow",
    "Filter",
    "Model",
    "ModelAliasEvent",
    "ModelVersion",
    "ModelVersionSplit",
    "PerformanceMonthly",
    "PerformanceTotal",
    "PipelineRun",
    "PredictionRow",
    "PromotionDecisionRow",
    "Proposal",
    "ScreeningReasonRow",
    "ScreeningVerdictRow",
    "SummaryChange",
    "SummaryRefresh",
    "TruthChipRow",
    "TruthResultRow",
    "Visit",
    "constraint_fields",
    "table_of",
]
