"""Score histograms in the results database: a compact fixed-width encoding of non-negative counts.

A histogram column is ``bytea`` laid out as

* byte 0: the width ``w`` of a count in bytes, one of :data:`WIDTHS` (0: every count is 0);
* byte 1: the number ``k`` of exceptions (0-255);
* ``k`` exceptions of 10 bytes: bin index (``uint16``) and count (``int64``), big-endian;
* ``n_bins`` counts of ``w`` bytes, big-endian unsigned; at an exception's bin the exception wins.

The number of bins is the row's ``n_bins`` column, so ``length = 2 + 10 k + n_bins w`` (a CHECK
constraint holds every row to that). Exceptions exist because score histograms have one or two
huge edge bins (non-CR pixels pile up at probability ~0, CR pixels at ~1): without them those
bins would set the width of all 1,699; with them the width follows the interior bins. The
encoder keeps the bins within :data:`EDGE` of either end as exceptions when they do not fit.

Why not ``integer[]``: COPY parses and PostgreSQL compresses (pglz) every array element, which
capped bulk recording near a thousand rows per second with 1,699-bin histograms. These bytes are
copied as they are (the columns use ``STORAGE EXTERNAL``: no compression attempt), encode with
one :func:`struct.pack` per histogram, decode with two numpy calls, and take about 2 bytes per
bin instead of 4. Real ACS/WFC histograms are dense (counts in almost every bin), so a sparse
form would not be smaller; zlib would save another third but costs ~100 us per row in Python.

Decoders accept any valid width and exceptions; encoders choose a small width but need not
agree byte for byte. SQL users decode with the migration's ``hist_decode(data, n_bins) ->
bigint[]`` and encode with ``hist_encode(bigint[]) -> bytea``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

#: Allowed byte widths of one count (0: all counts are zero).
WIDTHS: tuple[int, ...] = (0, 1, 2, 3, 4, 8)
#: Bins at each end that may be stored as exceptions.
EDGE = 4
INT64_MAX = (1 << 63) - 1
# Encoders choose among 0, 1, 2, 4 and 8 bytes: 3-byte counts decode three times slower.
_LIMITS = np.array([1, 1 << 8, 1 << 16, 1 << 32], dtype=np.int64)
_WIDTH_OF_LEVEL = np.array([0, 1, 2, 4, 8], dtype=np.int64)
_EXCEPTION = struct.Struct(">Hq")
_EDGES = struct.Struct(f">{EDGE}H")
_EXCEPTIONS_DTYPE = np.dtype([("bin", ">u2"), ("count", ">i8")])


class HistogramError(ValueError):
    """A histogram is not a 1-D sequence of non-negative integer counts (the message says why)."""


def counts_array(values: Sequence[int] | np.ndarray) -> np.ndarray:
    """``values`` as a 1-D ``int64`` array, checking that every value is an integer count.

    Raises
    ------
    HistogramError
        Empty, not 1-D, NaN/infinite, non-integer, negative or above 2**63 - 1.
    """
    if isinstance(values, np.ndarray):
        array = values
    else:
        try:
            array = np.frombuffer(struct.pack(f"={len(values)}q", *values), dtype=np.int64)
        except (struct.error, TypeError, OverflowError):
            array = np.asarray(values)
    if array.ndim != 1 or array.size == 0:
        raise HistogramError(f"must be a non-empty 1-D sequence of counts, got shape {array.shape}")
    kind = array.dtype.kind
    if kind == "f":
        if not np.all(np.isfinite(array)):
            raise HistogramError("contains NaN or infinite values")
        if not np.all(array == np.round(array)):
            raise HistogramError("contains non-integer values")
        if array.max() > INT64_MAX:
            raise HistogramError(f"contains a count above {INT64_MAX}")
    elif kind == "u":
        if int(array.max()) > INT64_MAX:
            raise HistogramError(f"contains a count above {INT64_MAX}")
    elif kind == "O":
        items = array.tolist()
        if all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            raise HistogramError(f"contains a count outside 0 .. {INT64_MAX}")
        raise HistogramError("must hold integers only")
    elif kind != "i":
        raise HistogramError(f"must hold integers, not {array.dtype}")
    result = array.astype(np.int64, copy=False)
    if result.min() < 0:
        raise HistogramError("contains negative counts")
    return result


@lru_cache(maxsize=64)
def _counts_struct(n_bins: int, *, mixed: bool) -> struct.Struct:
    """Packer of ``n_bins`` counts: all 2-byte, or (``mixed``) 8-byte edge bins around 2-byte ones."""
    if mixed:
        return struct.Struct(f">{EDGE}q{n_bins - 2 * EDGE}H{EDGE}q")
    return struct.Struct(f">{n_bins}H")


def encode_counts(values: Sequence[int]) -> bytes | None:
    """Fast path for a tuple/list of ints: 2-byte counts, edge bins above 65535 as exceptions.

    One precompiled :class:`struct.Struct` converts and range-checks every value. Returns
    ``None`` (use :func:`encode_histograms` on :func:`counts_array` instead) when an interior
    count does not fit in 2 bytes, a value is not a non-negative integer, or the histogram is
    shorter than ``2 * EDGE + 1`` bins.
    """
    n = len(values)
    if n <= 2 * EDGE:
        return None
    head, tail = values[:EDGE], values[n - EDGE :]
    try:
        if max(head) <= 0xFFFF and max(tail) <= 0xFFFF:
            return b"\x02\x00" + _counts_struct(n, mixed=False).pack(*values)
        packed = _counts_struct(n, mixed=True).pack(*values)
        if min(head) < 0 or min(tail) < 0:
            return None
    except (struct.error, TypeError):
        return None
    exceptions: list[bytes] = []
    edges: list[int] = []
    for index in (*range(EDGE), *range(n - EDGE, n)):
        value = values[index]
        if value > 0xFFFF:
            exceptions.append(_EXCEPTION.pack(index, value))
            edges.append(0)
        else:
            edges.append(value)
    return b"".join(
        (
            bytes((2, len(exceptions))),
            *exceptions,
            _EDGES.pack(*edges[:EDGE]),
            memoryview(packed)[8 * EDGE : 8 * EDGE + 2 * (n - 2 * EDGE)],
            _EDGES.pack(*edges[EDGE:]),
        )
    )


def _encode_block(block: np.ndarray, width: int) -> bytes:
    """Concatenated payloads (no header) of the rows of ``block`` at ``width``."""
    if width == 3:
        wide = block.astype(">u4").view(np.uint8).reshape(block.shape[0], block.shape[1], 4)
        return wide[:, :, 1:].tobytes()
    return block.astype(f">u{width}").tobytes()


def encode_histograms(counts: np.ndarray) -> list[bytes]:
    """Encode each row of a 2-D array of non-negative counts (see the module docstring).

    The width is the smallest of 0, 1, 2, 4 and 8 bytes that holds every bin except the
    :data:`EDGE` bins at either end; edge bins that do not fit become exceptions.

    Parameters
    ----------
    counts
        ``(m, n_bins)`` non-negative integers (already checked, e.g. by :func:`counts_array`).

    Returns
    -------
    list of bytes
        ``m`` encoded histograms.
    """
    block = np.asarray(counts, dtype=np.int64)
    if block.ndim != 2:
        raise HistogramError(f"expected a 2-D array of histograms, got shape {block.shape}")
    n_bins = block.shape[1]
    edge = EDGE if n_bins > 2 * EDGE else 0
    inner = block[:, edge : n_bins - edge] if edge else block
    widths = _WIDTH_OF_LEVEL[np.searchsorted(_LIMITS, inner.max(axis=1), side="right")]
    headers: list[bytes] = [bytes((int(w), 0)) for w in widths.tolist()]
    limits = np.where(widths >= 8, INT64_MAX, np.left_shift(1, 8 * np.minimum(widths, 7)) - 1)
    if edge:
        indices = [*range(edge), *range(n_bins - edge, n_bins)]
        edges = block[:, indices]
        for row in np.flatnonzero((edges > limits[:, None]).any(axis=1)).tolist():
            big = [(i, int(block[row, i])) for i in indices if block[row, i] > limits[row]]
            headers[row] = bytes((int(widths[row]), len(big))) + b"".join(_EXCEPTION.pack(*e) for e in big)
    out: list[bytes] = list(headers)
    for width in np.unique(widths).tolist():
        if width == 0:
            continue
        rows = np.flatnonzero(widths == width)
        # Exception bins are clipped to the width (the decoder overwrites them).
        values = np.minimum(block[rows], int(limits[rows[0]])) if edge else block[rows]
        payload = _encode_block(values, width)
        size = n_bins * width
        for k, row in enumerate(rows.tolist()):
            out[row] = headers[row] + payload[k * size : (k + 1) * size]
    return out


def encode_array(counts: np.ndarray) -> bytes:
    """Encode one checked 1-D ``int64`` histogram (the single-row form of :func:`encode_histograms`)."""
    n_bins = counts.shape[0]
    edge = EDGE if n_bins > 2 * EDGE else 0
    peak = int(counts[edge : n_bins - edge].max())
    width = 0 if peak < 1 else 1 if peak < 1 << 8 else 2 if peak < 1 << 16 else 4 if peak < 1 << 32 else 8
    limit = INT64_MAX if width == 8 else (1 << (8 * width)) - 1
    exceptions = b""
    k = 0
    if edge:
        for index in (*range(edge), *range(n_bins - edge, n_bins)):
            value = int(counts[index])
            if value > limit:
                exceptions += _EXCEPTION.pack(index, value)
                k += 1
        if k:
            counts = np.minimum(counts, limit)
    payload = counts.astype(f">u{width}").tobytes() if width else b""
    return bytes((width, k)) + exceptions + payload


def encode_histogram(counts: Sequence[int] | np.ndarray) -> bytes:
    """Encode one histogram (checked with :func:`counts_array`)."""
    if not isinstance(counts, np.ndarray):
        fast = encode_counts(counts)
        if fast is not None:
            return fast
    return encode_array(counts_array(counts))


def decode_histogram(data: bytes | memoryview, n_bins: int) -> np.ndarray:
    """Counts (``int64``, length ``n_bins``) of an encoded histogram.

    Raises
    ------
    HistogramError
        When the length does not match ``n_bins``, the width and the exceptions.
    """
    view = memoryview(data).cast("B")  # psycopg2 hands bytea over as a memoryview of chars
    if len(view) < 2:
        raise HistogramError(f"encoded histogram of {len(view)} bytes is too short")
    width, k = view[0], view[1]
    start = 2 + 10 * k
    if width not in WIDTHS or len(view) != start + n_bins * width:
        raise HistogramError(
            f"encoded histogram of {len(view)} bytes does not hold {n_bins} bins of width {width} "
            f"and {k} exceptions"
        )
    if width == 0:
        counts = np.zeros(n_bins, dtype=np.int64)
    elif width == 3:
        raw = np.frombuffer(view[start:], dtype=np.uint8).reshape(n_bins, 3).astype(np.int64)
        counts = (raw[:, 0] << 16) | (raw[:, 1] << 8) | raw[:, 2]
    else:
        counts = np.frombuffer(view[start:], dtype=f">u{width}").astype(np.int64)
    if k:
        exceptions = np.frombuffer(view[2:start], dtype=_EXCEPTIONS_DTYPE)
        counts[exceptions["bin"].astype(np.intp)] = exceptions["count"]
    return counts
