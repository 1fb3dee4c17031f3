from __future__ import annotations

from pathlib import Path

import pytest

from crlib.config import load_settings
from crlib.errors import ConfigError


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CRLIB_ARCHIVE", f"local:{tmp_path}")
    monkeypatch.setenv("CRLIB_DEVICE", "cpu")
    monkeypatch.setenv("CRLIB_THREADS", "2")
    settings = load_settings()
    assert settings.archive_location() == ("local", tmp_path.resolve())
    assert settings.device == "cpu"
    assert settings.torch_threads() == 2


def test_explicit_override_wins_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRLIB_DEVICE", "cuda")
    assert load_settings(device="cpu").device == "cpu"


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("CRLIB_ARCHIVE", "ftp://x", "CRLIB_ARCHIVE"),
        ("CRLIB_DEVICE", "tpu", "CRLIB_DEVICE"),
        ("CRLIB_THREADS", "-1", "CRLIB_THREADS"),
        ("CRLIB_INSTRUMENT", "nicmos", "CRLIB_INSTRUMENT"),
        ("CRLIB_INFERENCE_PRECISION", "fp16", "CRLIB_INFERENCE_PRECISION"),
    ],
)
def test_invalid_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, named: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=named):
        load_settings()


def test_masked_settings_hide_password_and_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRLIB_DATABASE_URL", "postgresql://crlib:s3cret@db.example:5432/crlib")
    monkeypatch.setenv("CRLIB_MAST_TOKEN", "tok-abcdef")
    shown = load_settings().masked()
    text = repr(shown)
    assert "s3cret" not in text
    assert "tok-abcdef" not in text
    assert "db.example" in shown["database_url"]
    assert shown["mast_token"] == "********"


def test_unset_database_and_mlflow_mean_embedded_defaults(tmp_path: Path) -> None:
    settings = load_settings(data_root=tmp_path)
    shown = settings.masked()
    assert "embedded" in shown["database_url"]
    assert settings.resolved_mlflow_uri().startswith("file://")
    assert str(tmp_path) in settings.resolved_mlflow_uri()


def test_inference_precision_defaults_to_auto_and_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().inference_precision == "auto"
    monkeypatch.setenv("CRLIB_INFERENCE_PRECISION", "fp32")
    assert load_settings().inference_precision == "fp32"
