"""Histogram encoding: Python and SQL agree, every width and exception round-trips, bad bytes refused."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text

from crlib.db.histcodec import (
    EDGE,
    HistogramError,
    counts_array,
    decode_histogram,
    encode_array,
    encode_counts,
    encode_histogram,
    encode_histograms,
)

PEAKS = (0, 1, 255, 256, 65535, 65536, 2**24 - 1, 2**24, 2**32 - 1, 2**32, 2**60)


def _cases() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    cases = []
    for peak in PEAKS:
        for n_bins in (1, 2 * EDGE, 2 * EDGE + 1, 40, 1699):
            counts = rng.integers(0, peak + 1, n_bins)
            counts[n_bins // 2] = peak
            cases.append(counts)
            spiky = counts.copy()
            spiky[0] = 2**40  # a huge edge bin becomes an exception
            spiky[-1] = min(3 * peak + 7, 2**62)
            cases.append(spiky)
    return cases


@pytest.mark.parametrize("counts", _cases(), ids=lambda c: f"{c.size}-{c.max()}")
def test_every_width_and_exception_round_trips(counts: np.ndarray) -> None:
    n_bins = counts.size
    for encoded in (
        encode_histogram(counts),
        encode_histograms(counts[np.newaxis, :])[0],
        encode_array(counts.astype(np.int64)),
    ):
        np.testing.assert_array_equal(decode_histogram(encoded, n_bins), counts)
    fast = encode_counts(tuple(counts.tolist()))
    if fast is not None:
        np.testing.assert_array_equal(decode_histogram(fast, n_bins), counts)


def test_huge_edge_bins_do_not_widen_the_interior() -> None:
    counts = np.full(1699, 300, dtype=np.int64)
    counts[0] = 12_800_000  # non-CR pixels at probability ~0
    counts[-1] = 48_000  # fits 2 bytes anyway
    encoded = encode_histogram(counts)
    assert encoded[0] == 2 and encoded[1] == 1  # width 2, one exception
    assert len(encoded) == 2 + 10 + 2 * 1699
    assert encode_histogram(np.zeros(50, dtype=np.int64)) == b"\x00\x00"
    assert encode_histogram(counts) == encode_histograms(counts[np.newaxis, :])[0]


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ((1, 2, float("nan")), "NaN"),
        ((1, -1), "negative"),
        ((1.5, 2), "non-integer"),
        ((), "non-empty"),
        (("a", 1), "integers"),
        ((1, 2**64), "outside"),
        (np.array([[1, 2]]), "1-D"),
    ],
)
def test_bad_counts_are_refused(values: Any, problem: str) -> None:
    with pytest.raises(HistogramError, match=problem):
        counts_array(values)


def test_three_byte_counts_decode_in_python_and_sql(sessions: Any) -> None:
    """Encoders never choose 3 bytes (slow to decode), but the format and both decoders allow it."""
    counts = [0, 1, 70_000, 2**24 - 1, 5]
    encoded = b"\x03\x01" + struct.pack(">Hq", 4, 2**40) + b"".join(c.to_bytes(3, "big") for c in counts)
    expected = [*counts[:4], 2**40]
    assert decode_histogram(encoded, 5).tolist() == expected
    with sessions() as session:
        assert session.execute(text("SELECT hist_decode(:h, 5)"), {"h": encoded}).scalar_one() == expected


def test_malformed_bytes_are_refused() -> None:
    with pytest.raises(HistogramError):
        decode_histogram(b"\x02\x00\x00", 5)  # 1 byte of payload for 5 bins of 2 bytes
    with pytest.raises(HistogramError):
        decode_histogram(b"\x05\x00" + bytes(25), 5)  # width 5 does not exist


def test_sql_functions_agree_with_python(sessions: Any) -> None:
    with sessions() as session:
        for counts in _cases()[::3]:
            n_bins = int(counts.size)
            encoded = encode_histogram(counts)
            decoded = session.execute(
                text("SELECT hist_decode(:h, :n)"), {"h": encoded, "n": n_bins}
            ).scalar_one()
            assert decoded == counts.tolist()
            from_sql = session.execute(text("SELECT hist_encode(:c)"), {"c": counts.tolist()}).scalar_one()
            np.testing.assert_array_equal(decode_histogram(from_sql, n_bins), counts)
        assert session.execute(text("SELECT hist_encode(ARRAY[1, -2]::bigint[])")).scalar_one() is None


def test_the_schema_refuses_malformed_histograms(factory: Any, sessions: Any) -> None:
    from crlib.db import repo
    from crlib.db.validation import translated_errors
    from crlib.errors import DatabaseError

    records = factory.visit_records()
    with sessions() as session:
        repo.record_observations(session, records["observations"])
        repo.record_metrics(session, records["metrics"][:1])
        rootname = records["metrics"][0].rootname
        for column, value in [
            ("hist_cr", b"\x02\x00\x01"),  # too short for 16 bins of 2 bytes
            ("hist_noncr", b"\x07\x00" + bytes(7 * 16)),  # no such width
            ("hist_cr_dilated", None),  # the dilated pair is both or neither
        ]:
            with (
                pytest.raises(DatabaseError, match=f"exposure_metrics\\.{column}|hist_noncr_dilated"),
                translated_errors("test"),
                session.begin(),
            ):
                session.execute(
                    text(f"UPDATE exposure_metrics SET {column} = :v WHERE rootname = :r"),
                    {"v": value, "r": rootname},
                )
