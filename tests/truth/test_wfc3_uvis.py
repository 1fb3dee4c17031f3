"""WFC3/UVIS end to end: truth stage, deepCR inference and scoring on a visit whose headers say WFC3/UVIS.

``../shared/data`` holds no WFC3/UVIS header or reference file and nothing outside can be reached,
so the simulator only makes ACS/WFC. Here a small simulated visit is relabelled (``INSTRUME=WFC3``,
``DETECTOR=UVIS``, ``FILTER``): the pixels and WCS stay the simulator's (ACS optics), but every
instrument-dependent path runs for WFC3/UVIS -- profile detection from the headers, the
``wfc3_uvis_any_post_n2`` drizzlepac parameter set, drizzlepac's own WFC3/UVIS input class in
AstroDrizzle/driz_cr, the profile's saturation level in the valid mask, the deepCR ``WFC3-UVIS``
model, and scoring. Both chips map the same way on both instruments (SCI,1 = CCDCHIP 2, amps C/D).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")


@pytest.fixture(scope="module")
def uvis_visit(tmp_path_factory: pytest.TempPathFactory):
    from astropy.io import fits

    from crlib.simulate import simulate_visit

    visit = simulate_visit(
        tmp_path_factory.mktemp("uvis"), field_type="globular_cluster", exposures=3, size="small", seed=5
    )
    for exposure in visit.exposures:
        with fits.open(exposure.path, mode="update") as hdul:
            primary = hdul[0].header
            primary["INSTRUME"], primary["DETECTOR"], primary["FILTER"] = "WFC3", "UVIS", "F606W"
            for keyword in ("FILTER1", "FILTER2"):
                primary.remove(keyword, ignore_missing=True)
    return visit


def test_truth_prediction_and_scores_for_wfc3_uvis(uvis_visit, tmp_path):
    from astropy.io import fits

    from crlib.align import AlignOptions
    from crlib.bench.truth_scoring import mask_fidelity
    from crlib.metrics.scoring import score_prediction_file
    from crlib.model.exposure import predict_exposure
    from crlib.profiles import ACS_WFC, WFC3_UVIS
    from crlib.truth import TruthOptions, build_visit_truth

    options = TruthOptions(align_options=AlignOptions(query_catalogs=False))
    truth = build_visit_truth(Path(uvis_visit.directory), work_dir=tmp_path / "work", options=options)
    assert truth.alignment is not None and truth.alignment.status == "aligned_relative"
    for result in truth.exposures:
        assert result.status == "ok", result.reasons
        assert result.parameters["PARSET"] == "wfc3_uvis_any_post_n2"
        simtruth = Path(uvis_visit.directory) / "truth" / f"{result.rootname}_simtruth.fits"
        fidelity = mask_fidelity(Path(result.path), simtruth, read_noise_e=4.0, sky_e=0.0, profile=WFC3_UVIS)
        assert fidelity["recall_50e"] >= 0.93
        assert fidelity["false_positive_rate"] <= 1e-4

    # AstroDrizzle reads these files with its WFC3/UVIS input class (gain, read noise, CR bits)
    from drizzlepac import processInput, wfc3Data

    image = processInput._getInputImage(str(next(Path(uvis_visit.directory).glob("*_flc.fits"))))
    try:
        assert isinstance(image, wfc3Data.WFC3UVISInputImage)
    finally:
        image.close()

    first = truth.exposures[0]
    prediction = predict_exposure(
        next(Path(uvis_visit.directory).glob(f"{first.rootname}_flc.fits")),
        out_dir=tmp_path / "pred",
        device="cpu",
        threads=1,
    )
    assert prediction.status == "ok" and prediction.model_name == WFC3_UVIS.deepcr_model
    with fits.open(prediction.path) as hdul:
        assert WFC3_UVIS.deepcr_model in str(hdul[0].header)
    metrics, _ = score_prediction_file(Path(prediction.path), Path(first.path), field_type="globular_cluster")
    assert metrics.tp > 0 and metrics.tpr_at_fpr["0.005"] > 0.5

    # the ACS/WFC pipeline refuses the relabelled files instead of treating them as ACS
    from crlib.errors import InputDataError

    with pytest.raises(InputDataError, match="WFC3"):
        predict_exposure(
            next(Path(uvis_visit.directory).glob(f"{first.rootname}_flc.fits")),
            out_dir=tmp_path / "acs",
            expected_profile=ACS_WFC,
        )
