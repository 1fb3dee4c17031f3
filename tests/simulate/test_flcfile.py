"""Simulated FLC files carry every keyword later stages need, consistent with the exposure."""

from __future__ import annotations

import re

import numpy as np
import pytest
from astropy.io import fits
from astropy.time import Time

from crlib.simulate.programs import FILTERS


def test_required_keywords_are_present_and_consistent(small_archive) -> None:
    for visit in small_archive.visits:
        for exposure in visit.exposures:
            with fits.open(exposure.path) as hdul:
                primary = hdul[0].header
                assert (primary["INSTRUME"], primary["DETECTOR"], primary["OBSTYPE"]) == (
                    "ACS",
                    "WFC",
                    "IMAGING",
                )
                assert primary["EXPTIME"] == exposure.exptime_s > 0
                for amp in "ABCD":
                    assert primary[f"ATODGN{amp}"] > 0 and primary[f"READNSE{amp}"] > 0
                assert primary["ROOTNAME"] == exposure.rootname
                assert primary["FILENAME"] == exposure.path.name
                assert primary["PROPOSID"] == visit.proposal_id
                assert primary["FLATCORR"] == primary["DRIZCORR"] == "COMPLETE"
                assert primary["EXPEND"] == pytest.approx(primary["EXPSTART"] + exposure.exptime_s / 86400.0)
                start = Time(primary["EXPSTART"], format="mjd")
                assert primary["DATE-OBS"] == start.strftime("%Y-%m-%d")
                assert primary["TIME-OBS"] == start.strftime("%H:%M:%S")
                filters = {primary["FILTER1"], primary["FILTER2"]}
                assert visit.filter in filters and filters & {"CLEAR1L", "CLEAR2L"}
                assert primary["ASN_ID"].lower().startswith(visit.visit)
                assert primary["SIMULATE"] is True
                assert primary["NEXTEND"] == len(hdul) - 1
                names = [(h.name, h.ver) for h in hdul[1:]]
                assert names[:6] == [("SCI", 1), ("ERR", 1), ("DQ", 1), ("SCI", 2), ("ERR", 2), ("DQ", 2)]
                assert {n for n, _ in names[6:]} == {"D2IMARR", "WCSDVARR"}
                for extver, ccdchip in ((1, 2), (2, 1)):
                    sci = hdul["SCI", extver]
                    header = sci.header
                    assert header["CCDCHIP"] == ccdchip
                    assert (
                        header["BUNIT"] == "ELECTRONS" and hdul["ERR", extver].header["BUNIT"] == "ELECTRONS"
                    )
                    assert header["EXPNAME"] == exposure.rootname
                    assert header["MEANDARK"] > 0
                    assert header["NGOODPIX"] == int((hdul["DQ", extver].data == 0).sum())
                    assert header["WCSNAME"] == "IDC_4bb1536cj"
                    assert sci.header["BITPIX"] == -32 and hdul["DQ", extver].header["BITPIX"] == 16
                    assert np.all(np.isfinite(sci.data))
                    assert not [k for k in header if re.match(r"^(WCSNAME|CRVAL1|CD1_1)[A-Z]$", k)]
                    assert header["PHOTPLAM"] == FILTERS[visit.filter].pivot_angstrom
                    assert header["CRVAL1"] == hdul["ERR", extver].header["CRVAL1"]


def test_files_pass_fits_verification(ex_visit) -> None:
    with fits.open(ex_visit.exposures[0].path, checksum=True) as hdul:
        hdul.verify("exception")
