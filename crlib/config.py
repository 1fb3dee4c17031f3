"""Run-time configuration: one pydantic-settings object, environment prefix ``CRLIB_``.

Build it with :func:`load_settings` when a command or task starts; nothing here runs at import.

Examples
--------
>>> settings = load_settings(threads=1)          # doctest: +SKIP
>>> settings.archive_location()                  # doctest: +SKIP
('local', PosixPath('/data/archive'))
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from crlib.errors import ConfigError

DeviceName = Literal["auto", "cpu", "cuda"]
InferenceModelMode = Literal["auto", "registry", "deepcr"]
#: Inference arithmetic: ``auto`` (bf16 on a CPU with native bf16, else fp32), ``fp32`` or ``bf16``.
InferencePrecision = Literal["auto", "fp32", "bf16"]

#: How the truth stage drizzles (:mod:`crlib.truth.drizzle`, :mod:`crlib.truth.drizzle_inmemory`).
TruthEngine = Literal["inmemory", "astrodrizzle"]


def _default_data_root() -> Path:
    return Path.cwd() / ".crlib"


class Settings(BaseSettings):
    """Effective crlib settings (environment variables ``CRLIB_<FIELD>`` override defaults).

    Attributes
    ----------
    data_root
        Working storage: embedded database, local MLflow store, downloads, per-visit work dirs.
    database_url
        SQLAlchemy URL of the results database. Unset: an embedded PostgreSQL server under
        ``data_root/postgres``, shared by the commands and tasks using it at the same time and
        stopped when the last of them exits (``crlib db status``, ``crlib db start|stop``).
    mlflow_tracking_uri
        MLflow tracking URI. Unset: a local store under ``data_root/mlruns``.
    archive
        ``mast`` for the live archive or ``local:<dir>`` for a directory written by
        ``crlib simulate`` or a mirror.
    instrument
        Instrument profile name (see :mod:`crlib.profiles`).
    device
        ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
    threads
        Torch/BLAS threads per process; 0 means "all cores".
    mast_token
        MAST API token for exclusive-access data; never logged or printed.
    mast_server
        Base URL of the MAST service (tests point this at a fake on 127.0.0.1).
    inference_model
        Which weights inference uses when a stage or command names none: ``registry`` (the
        registered model's ``champion``), ``deepcr`` (deepCR's shipped weights, per filter where
        shipped), or ``auto`` (the champion when the registered model exists in the tracking
        store, else the shipped weights, with a logged reason).
    inference_precision
        Arithmetic of pipeline inference and ``crlib infer``: ``auto`` runs bf16 on a CPU with
        native bf16 (AVX512-BF16/AMX; ``crlib bench accuracy`` showed TPR within 0.2 points of
        fp32 per field type, docs/inference.md) and fp32 elsewhere (CUDA included, not yet
        measured in bf16); ``fp32`` or ``bf16`` force one (bf16 without native support is an error).
    truth_engine
        How the truth stage drizzles: ``inmemory`` (drizzlepac's steps with ``in_memory=True`` and
        driz_cr on arrays: the same masks as AstroDrizzle, no crmask/blot files, docs/truth.md) or
        ``astrodrizzle`` (the ``AstroDrizzle`` call and its files).
    truth_drizzle_processes
        Forked processes for the in-memory engine's single drizzle and blot (0: one per exposure,
        at most two per core the task may use (``threads``), none when that is one core; 1: in
        the task's own process, for a worker short of memory).
    warm_workers
        Celery pool processes of an Airflow worker import the inference stack and load the infer
        stage's models before their first task, so each forked task starts with them
        (``crlib_airflow.celery_config``, :mod:`crlib.pipeline.warm`).
    retrain_min_new_exposures
        Retraining (``crlib_retrain``) runs only when at least this many exposures (truth status
        ``ok``, >= 100 s) have been recorded that the last training run did not use.
    train_epochs, train_batch_size, train_lr, train_max_patches_per_epoch
        Training defaults of scheduled retraining (``crlib train`` options override them); the
        learning rate is for fine-tuning from the champion.
    train_validation_fraction, train_test_fraction
        Share of fields (proposal, target) per stratum hashed into the validation / held-out test
        split (see :mod:`crlib.training.splits`; a field never moves from train into test as the
        archive grows).
    gate_max_drop_points, gate_min_mean_gain_points
        Promotion gate: the largest allowed drop of any TPR number, and the mean gain the
        challenger must exceed, in percentage points.
    run_lease_minutes
        A run still ``running`` whose last heartbeat (every stage touches it) is older than this
        is recorded as ``abandoned`` when a later run starts or ``crlib stats pipeline`` looks.
        A ``crlib run`` whose process is gone from this host is abandoned at once.
    """

    model_config = SettingsConfigDict(env_prefix="CRLIB_", extra="ignore", validate_default=True)

    data_root: Path = Field(default_factory=_default_data_root)
    database_url: SecretStr | None = None
    mlflow_tracking_uri: str | None = None
    archive: str = "mast"
    instrument: str = "acs_wfc"
    device: DeviceName = "auto"
    threads: int = Field(default=0, ge=0, le=1024)
    mast_token: SecretStr | None = None
    mast_server: str = "https://mast.stsci.edu"
    download_concurrency: int = Field(default=4, ge=1, le=64)
    log_level: str = "INFO"
    inference_model: InferenceModelMode = "auto"
    inference_precision: InferencePrecision = "auto"
    truth_engine: TruthEngine = "inmemory"
    truth_drizzle_processes: int = Field(default=0, ge=0, le=256)
    warm_workers: bool = True
    retrain_min_new_exposures: int = Field(default=20, ge=1, le=1_000_000)
    train_epochs: int = Field(default=20, ge=1, le=10_000)
    train_batch_size: int = Field(default=16, ge=1, le=1024)
    train_lr: float = Field(default=0.001, gt=0.0, le=1.0)
    train_max_patches_per_epoch: int | None = Field(default=None, ge=1)
    train_validation_fraction: float = Field(default=0.15, ge=0.0, lt=1.0)
    train_test_fraction: float = Field(default=0.15, ge=0.0, lt=1.0)
    gate_max_drop_points: float = Field(default=0.5, ge=0.0, le=100.0)
    gate_min_mean_gain_points: float = Field(default=0.0, ge=-100.0, le=100.0)
    run_lease_minutes: float = Field(default=180.0, gt=0.0, le=7 * 24 * 60)

    @field_validator("archive")
    @classmethod
    def _check_archive(cls, value: str) -> str:
        if value == "mast" or (value.startswith("local:") and len(value) > len("local:")):
            return value
        raise ValueError("must be 'mast' or 'local:<directory>' (set CRLIB_ARCHIVE)")

    @field_validator("instrument")
    @classmethod
    def _check_instrument(cls, value: str) -> str:
        from crlib.profiles import PROFILES

        key = value.lower().replace("/", "_")
        if key not in PROFILES:
            raise ValueError(f"unknown instrument profile {value!r}; choose one of {sorted(PROFILES)}")
        return key

    @model_validator(mode="after")
    def _check_split_fractions(self) -> Settings:
        if self.train_validation_fraction + self.train_test_fraction >= 1.0:
            raise ValueError(
                "CRLIB_TRAIN_VALIDATION_FRACTION + CRLIB_TRAIN_TEST_FRACTION must leave visits for training"
            )
        return self

    # ------------------------------------------------------------------ derived values
    def archive_location(self) -> tuple[Literal["mast", "local"], Path | None]:
        """Return ``("mast", None)`` or ``("local", directory)``."""
        if self.archive == "mast":
            return "mast", None
        return "local", Path(self.archive.removeprefix("local:")).expanduser().resolve()

    def torch_threads(self) -> int:
        """Threads to give torch/BLAS: the configured count, or every core when 0."""
        return self.threads or (os.cpu_count() or 1)

    def resolved_mlflow_uri(self) -> str:
        """MLflow tracking URI, defaulting to a local store under the data root."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return (self.data_root / "mlruns").resolve().as_uri()

    def masked(self) -> dict[str, Any]:
        """Settings as plain values with secrets (tokens, URL passwords) masked, for display."""
        from crlib.database_url import mask_url

        shown: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name == "database_url":
                shown[name] = mask_url(value.get_secret_value()) if value else "(embedded PostgreSQL)"
            elif isinstance(value, SecretStr):
                shown[name] = "********" if value.get_secret_value() else None
            elif isinstance(value, Path):
                shown[name] = str(value)
            else:
                shown[name] = value
        shown["mlflow_tracking_uri"] = self.mlflow_tracking_uri or f"{self.resolved_mlflow_uri()} (local)"
        return shown


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from the environment plus explicit overrides.

    Parameters
    ----------
    **overrides
        Field values that win over the environment (e.g. from CLI options); ``None`` is ignored.

    Raises
    ------
    ConfigError
        When a value is invalid; the message names the ``CRLIB_`` variable.
    """
    from pydantic import ValidationError

    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"CRLIB_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            if err["loc"]
            else str(err["msg"]).removeprefix("Value error, ")
            for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None


def worker_count(requested: int, tasks: int) -> int:
    """Threads for ``tasks`` independent jobs: ``requested`` (0: one per CPU core), at most ``tasks``.

    Parameters
    ----------
    requested
        Wanted threads, e.g. :attr:`Settings.threads`; 0 means one per CPU core.
    tasks
        Number of jobs (no more threads than jobs, at least one).
    """
    cores = requested if requested > 0 else (os.cpu_count() or 1)
    return max(1, min(cores, tasks))
