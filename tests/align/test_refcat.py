"""Reference catalogs: files and the fail-fast VizieR chain."""

from __future__ import annotations

import pytest

from crlib.align.refcat import catalog_name_for_file, fetch_reference_catalog, read_catalog_file
from crlib.errors import InputDataError


def test_reads_the_real_gaia_file(shared_data):
    catalog = read_catalog_file(shared_data / "gaia" / "gaia_dr2_ngc6791_wfc3_ibwb01.cat")
    assert catalog.name == "GAIADR2"
    assert len(catalog.table) == 5940
    assert 290.0 < float(catalog.table["RA"].mean()) < 290.5


def test_bad_catalog_file_names_the_file(tmp_path):
    path = tmp_path / "junk.cat"
    path.write_text("# ra dec\nnot numbers\n")
    with pytest.raises(InputDataError, match=r"junk\.cat"):
        read_catalog_file(path)


def test_name_from_file():
    assert catalog_name_for_file("gaia_dr3_field.cat") == "GAIADR3"


def test_chain_reports_every_catalog_when_offline():
    catalog, attempts = fetch_reference_catalog(
        ra_deg=10.0, dec_deg=-20.0, radius_arcmin=3.0, timeout_s=1.0, server="127.0.0.1:9"
    )
    assert catalog is None
    assert [a.split(":")[0] for a in attempts] == ["GAIADR3", "GSC242", "2MASS"]
