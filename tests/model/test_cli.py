from __future__ import annotations

import json
from pathlib import Path

import pytest

from crlib.cli.app import main


def test_infer_then_score_from_the_command_line(flc_factory, tmp_path: Path, capsys) -> None:
    flc, truths = flc_factory("jcli01abq")
    with pytest.raises(SystemExit) as done:
        main(["infer", str(flc), "--device", "cpu", "--out", str(tmp_path / "pred"), "--json"])
    assert done.value.code == 0
    records = json.loads(capsys.readouterr().out)
    assert records[0]["status"] == "ok" and records[0]["model_name"] == "ACS-WFC-F814W"
    from astropy.io import fits

    truth = tmp_path / "jcli01abq_simtruth.fits"
    fits.HDUList(
        [fits.PrimaryHDU()]
        + [fits.ImageHDU(m.astype("uint8"), name="CRMASK", ver=v) for v, m in truths.items()]
    ).writeto(truth)
    png = tmp_path / "roc.png"
    with pytest.raises(SystemExit) as done:
        main(["score", records[0]["path"], str(truth), "--json", "--roc-png", str(png)])
    assert done.value.code == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["tp"] > 0 and 0 < scored["tpr_at_fpr"]["0.005"] <= 1
    assert png.stat().st_size > 1000


def test_infer_reports_the_bad_file_and_exits_nonzero(flc_factory, tmp_path: Path, capsys) -> None:
    good, _ = flc_factory("jgood02aq")
    bad = tmp_path / "jbadd02aq_flc.fits"
    bad.write_text("not fits")
    with pytest.raises(SystemExit) as done:
        main(["infer", str(good), str(bad), "--device", "cpu", "--out", str(tmp_path / "o")])
    assert done.value.code == 1
    captured = capsys.readouterr()
    assert "jgood02aq" in captured.out
    assert "jbadd02aq_flc.fits" in captured.err and "1 of 2 exposures failed" in captured.err
    assert (tmp_path / "o" / "jgood02aq_crpred.fits").exists()


def test_cuda_request_without_gpu_is_a_one_line_error(flc_factory, capsys) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    flc, _ = flc_factory()
    with pytest.raises(SystemExit) as done:
        main(["infer", str(flc), "--device", "cuda"])
    assert done.value.code == 1
    assert "no CUDA device" in capsys.readouterr().err
