"""Metadata rules: real recorded MAST/ESA rows and real ACS/WFC headers, then the vocabulary."""

from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from crlib.classify.labels import FieldTypeLabel
from crlib.classify.metadata import (
    classification_words,
    classify_caom_row,
    classify_metadata,
    galactic_latitude,
)

M31_CONE = "mast_api/esa_hubble/cone_search_m31_5.vot"


def _esa_rows(shared_data: Path) -> list[dict[str, Any]]:
    from astropy.io.votable import parse_single_table

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = parse_single_table(shared_data / M31_CONE).to_table()
    return [
        {
            "target_name": str(row["target_name"]),
            "target_classification": str(row["target_description"]),
            "obs_title": str(row["title"]),
            "s_ra": float(row["ra"]),
            "s_dec": float(row["dec"]),
            "instrument": str(row["instrument_name"]),
        }
        for row in table
    ]


# ----------------------------------------------------------------------------- real rows
def test_real_caom_rows_at_low_latitude_are_never_labelled_extragalactic(shared_data: Path) -> None:
    """MAST's recorded CAOM rows: the Medium-Deep Survey's low-latitude field (b = -1.8 deg)."""
    rows = json.loads((shared_data / "mast_api/astroquery_mast/caom.json").read_text())["data"]
    labels = {(row["target_name"], row["target_classification"]): classify_caom_row(row) for row in rows}
    mds = labels[("LO-LAT", "ACTIVE GALAXIES;GALAXIES;STARS")]
    assert mds.field_type == "unknown"
    assert "Galactic latitude b = -1.8" in mds.reasons[0]
    assert "active galaxy" in " ".join(mds.reasons)  # the evidence it refused is kept
    assert labels[("PARALLEL-FIELD", "A,101")].field_type == "unknown"
    assert {label.field_type for label in labels.values()} == {"unknown"}
    assert all(label.method == "unknown" for label in labels.values())


def test_real_m31_rows_are_resolved_galaxy_or_unknown_never_another_type(shared_data: Path) -> None:
    """ESA's 2000 real HST rows within 7' of M31's centre: every sky field there *is* M31."""
    labels = [(row, classify_caom_row(row)) for row in _esa_rows(shared_data)]
    assert len(labels) == 2000
    predicted = Counter(label.field_type for _, label in labels)
    assert set(predicted) == {"resolved_galaxy", "unknown"}
    assert predicted["resolved_galaxy"] >= 1000
    by_name: dict[str, set[str]] = {}
    for row, label in labels:
        by_name.setdefault(row["target_name"], set()).add(label.field_type)
    # The galaxy itself, by name (M31 = NGC 224) and with the category GALAXY;SPIRAL.
    assert by_name["M31"] == by_name["NGC224"] == by_name["NGC224-NUC"] == {"resolved_galaxy"}
    # EXT-STAR / EXT-CLUSTER (a star or cluster in an external galaxy), including the ACS/WFC rows.
    acs = [label for row, label in labels if row["instrument"] == "ACS/WFC"]
    assert acs and {label.field_type for label in acs} == {"resolved_galaxy"}
    assert by_name["NGC224-G170"] == by_name["CXOJ004242.2+411608"] == {"resolved_galaxy"}
    # A generic name with the category GALAXY: the pointing inside M31's disk decides.
    assert by_name["LIST-1"] == {"resolved_galaxy"}
    # Parallel fields whose generic description says "cluster of galaxies" / "parallel field"
    # but that lie on M31: contradictory metadata, so unknown (never extragalactic).
    assert by_name["PAR"] == by_name["ANY"] == {"unknown"}
    # An M31 globular cluster described as STELLAR CLUSTER;GLOBULAR CLUSTER: contradictory.
    assert by_name["M31-G170"] == {"unknown"}
    # Calibration exposures are not sky fields.
    for name in ("BIAS", "DARK", "EARTH-CALIB", "INTFLAT", "POST-SAA-DARK"):
        assert by_name[name] == {"unknown"}, name


def test_real_target_classifications_map_to_their_types(shared_data: Path) -> None:
    """Real ``target_description`` strings recorded from ESA's HST archive, verbatim, on their own.

    A globular cluster's category (``BROAD_CATEGORY=STELLAR CLUSTER|TARGET_DESCRIP=STELLAR
    CLUSTER;GLOBULAR CLUSTER``) is a globular cluster; a cluster of galaxies' is extragalactic; a
    bare galaxy category is ``unknown`` until a name or pointing says how far away the galaxy is,
    and with M31's name it is a resolved galaxy.
    """
    rows = _esa_rows(shared_data)
    described = {row["target_classification"]: row for row in rows}
    globular = [d for d in described if "GLOBULAR CLUSTER" in d]
    galaxies = [d for d in described if "CLUSTER OF GALAXIES" in d]
    spiral = [d for d in described if d.startswith("GALAXY;SPIRAL")]
    assert globular and galaxies and spiral
    for description in globular:
        label = classify_metadata(target_classification=description)
        assert label.field_type == "globular_cluster", (description, label)
        # the same row with its real name and pointing (a cluster *in M31*) contradicts itself
        row = described[description]
        placed = classify_metadata(
            target_classification=description,
            target_name=row["target_name"],
            ra_deg=row["s_ra"],
            dec_deg=row["s_dec"],
        )
        assert placed.field_type in ("globular_cluster", "unknown")
    for description in galaxies:
        assert classify_metadata(target_classification=description).field_type == "extragalactic"
    for description in spiral:
        assert classify_metadata(target_classification=description).field_type == "unknown"
        m31 = classify_metadata(target_classification=description, target_name="M31")
        assert m31.field_type == "resolved_galaxy", (description, m31)


def test_real_acs_wfc_header_targets(shared_data: Path) -> None:
    """TARGNAME of the real ACS/WFC headers: 47 Tuc twice, omega Cen, and an anonymous galaxy."""
    from astropy.io import fits

    found = {}
    for path in sorted((shared_data / "acs_wfc_headers").glob("*.fits*")):
        header = fits.getheader(path, 0)
        label = classify_metadata(
            target_name=header["TARGNAME"], ra_deg=header.get("RA_TARG"), dec_deg=header.get("DEC_TARG")
        )
        found[header["TARGNAME"]] = label
    assert found["NGC104"].field_type == "globular_cluster"
    assert found["NGC104-WFC"].field_type == "globular_cluster"
    assert found["OMEGACEN"].field_type == "globular_cluster"
    assert found["NGC104"].method == "metadata" and found["NGC104"].confidence >= 0.8
    assert found["PGC2807133"].field_type == "unknown"  # a catalogue galaxy of unknown distance


def test_deepcr_simulator_targets_map_to_their_types() -> None:
    """The simulator's target names (real fields of the deepCR test set's kinds)."""
    from crlib.simulate.programs import TARGETS

    for field_type, targets in TARGETS.items():
        for target in targets:
            label = classify_metadata(target_name=target.name, ra_deg=target.ra_deg, dec_deg=target.dec_deg)
            assert label.field_type == field_type, (target.name, label)


# ----------------------------------------------------------------------------- vocabulary
@pytest.mark.parametrize(
    ("classification", "name", "expected"),
    [
        ("STAR CLUSTERS;GLOBULAR CLUSTERS", "", "globular_cluster"),
        ("STELLAR CLUSTER;GLOBULAR CLUSTER", "NGC6397", "globular_cluster"),
        ("", "47TUC", "globular_cluster"),
        ("", "NGC 104", "globular_cluster"),
        ("", "M15", "globular_cluster"),
        ("", "PAL5", "globular_cluster"),
        ("CLUSTERS OF GALAXIES", "", "extragalactic"),
        ("", "ABELL2744", "extragalactic"),
        ("", "MACSJ0416.1-2403", "extragalactic"),
        ("", "HUDF", "extragalactic"),
        ("UNIDENTIFIED;DEEP FIELD", "GOODS-S-DEEP10", "extragalactic"),
        ("GALAXY;SPIRAL", "M33", "resolved_galaxy"),
        ("GALAXY;DWARF IRREGULAR", "IC1613", "resolved_galaxy"),
        ("EXT-STAR;CEPHEID", "NGC300-CEPHEID-1", "resolved_galaxy"),
        ("EXT-CLUSTER;GLOBULAR CLUSTER", "NGC5128-GC1", "resolved_galaxy"),
        ("", "LMC-FIELD-7", "resolved_galaxy"),
        ("GALAXY;SPIRAL", "NGC1068", "unknown"),  # a galaxy, distance unknown from its name
        ("STELLAR CLUSTER;OPEN CLUSTER", "NGC6791", "unknown"),  # not one of the three types
        ("STAR;WHITE DWARF", "GD71", "unknown"),
        ("COMET;COMET BEING ORBITED BY THE ROSETTA SPACECRAFT;SOLAR SYSTEM", "67P", "unknown"),
        ("CALIBRATION;FLAT FIELD", "OMEGACEN", "unknown"),  # a calibration visit, whatever the name
        ("", "", "unknown"),
        (None, None, "unknown"),
    ],
)
def test_vocabulary(classification: str | None, name: str | None, expected: str) -> None:
    label = classify_metadata(target_classification=classification, target_name=name)
    assert label.field_type == expected, label
    assert label.method == ("unknown" if expected == "unknown" else "metadata")
    assert label.reasons  # never silent


def test_contradictions_and_weak_evidence_give_unknown() -> None:
    contradiction = classify_metadata(target_classification="GLOBULAR CLUSTER", target_name="HUDF")
    assert contradiction.field_type == "unknown"
    assert "contradictory" in contradiction.reasons[0]
    weak = classify_metadata(target_classification="STELLAR CLUSTER", target_name="FIELD-3")
    assert weak.field_type == "unknown" and "weak evidence" in weak.reasons[0]
    # The same weak category plus a title naming globular clusters is enough.
    titled = classify_metadata(
        target_classification="STELLAR CLUSTER", obs_title="ACS Survey of Galactic Globular Clusters"
    )
    assert titled.field_type == "globular_cluster"


def test_classification_words_accept_mast_and_esa_spellings() -> None:
    assert classification_words("ACTIVE GALAXIES;GALAXIES;STARS") == {"ACTIVE", "GALAXY", "STAR"}
    esa = classification_words("BROAD_CATEGORY=CLUSTER OF GALAXIES|TARGET_DESCRIP=CLUSTER OF GALAXIES;")
    assert esa == classification_words("CLUSTER|GALAXIES;|OF") == {"CLUSTER", "OF", "GALAXY"}


def test_galactic_latitude_matches_astropy() -> None:
    from astropy.coordinates import SkyCoord

    for ra, dec in ((23.118, 60.642), (10.6847, 41.269), (266.4168, -29.0078), (192.859, 27.128)):
        expected = SkyCoord(ra, dec, unit="deg").galactic.b.deg
        assert galactic_latitude(ra, dec) == pytest.approx(expected, abs=1e-4)


def test_simulator_column_wins_and_is_labelled_as_such(caplog: pytest.LogCaptureFixture) -> None:
    row = {"obs_id": "jxx", "target_name": "NGC104", "crlib_field_type": "globular_cluster"}
    label = classify_caom_row(row)
    assert (label.field_type, label.method, label.confidence) == ("globular_cluster", "simulator", 1.0)
    assert "metadata rules say globular_cluster" in label.reasons[1]
    # A disagreement between the simulator and the metadata rules is logged, not hidden.
    disagree = classify_caom_row({**row, "crlib_field_type": "extragalactic"})
    assert disagree.field_type == "extragalactic" and "simulator says extragalactic" in caplog.text
    # Without the column (real MAST), or when told to ignore it, the rules decide.
    assert classify_caom_row({"target_name": "NGC104"}).method == "metadata"
    assert classify_caom_row(row, use_simulator_column=False).method == "metadata"
    # A value that is not a field type is ignored with a warning.
    bogus = classify_caom_row({"target_name": "HUDF", "crlib_field_type": "cluster"})
    assert bogus.method == "metadata" and "ignoring crlib_field_type" in caplog.text


def test_label_invariants() -> None:
    with pytest.raises(ValueError, match="not one of"):
        FieldTypeLabel("open_cluster", "metadata", 0.9)
    with pytest.raises(ValueError, match="unknown field type goes with method"):
        FieldTypeLabel("unknown", "metadata", 0.0)
    with pytest.raises(ValueError, match="goes with method 'unknown'"):
        FieldTypeLabel("extragalactic", "unknown", 0.5)
    assert FieldTypeLabel("unknown", "unknown").column_value is None
