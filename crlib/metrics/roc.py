"""ROC curves and TPR at fixed FPR from score histograms; what dilation adds; ROC plots.

Definitions follow deepCR's ``evaluate.roc``: a pixel is predicted CR when its probability is
strictly above the threshold; TPR = TP / (TP + FN) and FPR = FP / (FP + TN). Unlike deepCR's code,
which counts ignored pixels as true negatives, invalid pixels are left out of every count (the
papers' text: "DQ-flagged pixels excluded from metrics"); with a few per cent of ignored pixels
that raises our FPR by the same few per cent relative to deepCR's, at any threshold.

TPR at a fixed FPR has **one definition** (:func:`interpolated_tpr`, stated in ``docs/metrics.md``),
used by every caller: scoring, ``crlib bench accuracy``, training evaluation, ``crlib stats`` and
the SQL function ``roc_tpr_at_fpr`` (migration 0006), which computes the same IEEE double
operations on the same integer sums, so the two agree exactly (``tests/db/test_tpr_definition.py``).

The ROC is the polyline through the points ``P_k`` (every pixel in bins ``>= k`` called a CR,
``k = 0 .. n_bins``) taken in threshold order; it runs from (0, 0) to (1, 1) and is monotone.
Where several points share an FPR (bins holding CR pixels but no non-CR pixel) the polyline runs
vertically there. The TPR at FPR ``t`` is the height of that polyline at ``t``, taking the top of
a vertical run: with ``a`` the largest point FPR ``<= t`` and ``T_a`` the largest TPR of a point
with FPR ``<= t``, and ``b``/``T_b`` the smallest FPR ``> t`` and the smallest TPR of a point with
FPR ``> t``::

    TPR(t) = T_a + (T_b - T_a) * (t - a) / (b - a)        (T_a when no point has FPR > t)

(monotonicity makes ``T_a`` the top of the run at ``a`` and ``T_b`` the bottom of the run at
``b``: the segment between them is the polyline's). NaN without CR or non-CR pixels, or for
``t`` outside [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crlib.metrics.histograms import SCORE_THRESHOLDS

#: The papers' operating points: FPR 0.05% and 0.5%, keyed as stored in ExposureMetrics.
FPR_POINTS: dict[str, float] = {"0.0005": 0.0005, "0.005": 0.005}


@dataclass(frozen=True)
class RocCurve:
    """A ROC curve at every bin threshold, FPR ascending.

    Attributes
    ----------
    fpr, tpr
        Arrays of equal length starting at (0, 0) and ending at (1, 1).
    thresholds
        Probability threshold of each point (``inf`` for the first point, ``-inf`` for the last).
    n_cr, n_noncr
        Pixel totals behind the curve.
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    n_cr: int
    n_noncr: int


def roc_from_histograms(
    hist_cr: Sequence[int] | np.ndarray, hist_noncr: Sequence[int] | np.ndarray
) -> RocCurve:
    """ROC curve from per-bin counts (one exposure's or a pooled sum).

    Raises
    ------
    ValueError
        If the histograms have the wrong length.
    """
    cr = np.asarray(hist_cr, dtype=np.int64)
    noncr = np.asarray(hist_noncr, dtype=np.int64)
    if cr.shape != noncr.shape or cr.size != SCORE_THRESHOLDS.size + 1:
        raise ValueError(
            f"histograms must both have {SCORE_THRESHOLDS.size + 1} bins, got {cr.size}/{noncr.size}"
        )
    n_cr = int(cr.sum())
    n_noncr = int(noncr.sum())
    # pixels above threshold k: sum of bins k+1..end; reverse cumulative sums.
    above_cr = np.cumsum(cr[::-1])[::-1][1:]
    above_noncr = np.cumsum(noncr[::-1])[::-1][1:]
    tpr = above_cr / n_cr if n_cr else np.zeros(above_cr.shape)
    fpr = above_noncr / n_noncr if n_noncr else np.zeros(above_noncr.shape)
    # thresholds ascending -> FPR descending; flip so FPR ascends, add end points.
    fpr_curve = np.concatenate([[0.0], fpr[::-1], [1.0]])
    tpr_curve = np.concatenate([[0.0], tpr[::-1], [1.0]])
    thresholds = np.concatenate([[np.inf], SCORE_THRESHOLDS[::-1], [-np.inf]])
    return RocCurve(fpr=fpr_curve, tpr=tpr_curve, thresholds=thresholds, n_cr=n_cr, n_noncr=n_noncr)


def _tail_counts(
    hist_cr: Sequence[int] | np.ndarray, hist_noncr: Sequence[int] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """CR and non-CR pixels in bins ``>= k`` for ``k = 0 .. n_bins``, float64, shape (n_bins + 1,).

    Raises
    ------
    ValueError
        If the histograms differ in length or are not 1-D.
    """
    cr = np.asarray(hist_cr, dtype=np.int64)
    noncr = np.asarray(hist_noncr, dtype=np.int64)
    if cr.shape != noncr.shape or cr.ndim != 1:
        raise ValueError(f"histograms must be 1-D of one length, got {cr.shape} and {noncr.shape}")
    return (
        np.concatenate([np.cumsum(cr[::-1])[::-1], [0]]).astype(np.float64),
        np.concatenate([np.cumsum(noncr[::-1])[::-1], [0]]).astype(np.float64),
    )


def roc_points(
    hist_cr: Sequence[int] | np.ndarray, hist_noncr: Sequence[int] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """ROC points from score histograms of any length (bins ascending in probability).

    Parameters
    ----------
    hist_cr, hist_noncr
        Counts of CR / non-CR pixels per bin, shape (n_bins,), non-negative integers.

    Returns
    -------
    fpr, tpr
        float64, shape (n_bins + 1,): point ``k`` calls every pixel in bins ``>= k`` a CR, so
        point 0 is (1, 1) and point ``n_bins`` is (0, 0). All NaN where a class is empty. Each
        rate is ``float64(count above) / float64(total)``, exactly as the SQL function computes it.

    Raises
    ------
    ValueError
        If the histograms differ in length.
    """
    tail_cr, tail_noncr = _tail_counts(hist_cr, hist_noncr)
    n_cr, n_noncr = tail_cr[0], tail_noncr[0]
    if n_cr <= 0 or n_noncr <= 0:
        nan = np.full(tail_cr.shape, np.nan)
        return nan, nan.copy()
    return tail_noncr / n_noncr, tail_cr / n_cr


def interpolated_tpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """The TPR at FPR ``target``: the one definition of this module's docstring.

    Parameters
    ----------
    fpr, tpr
        ROC points in any order (e.g. :func:`roc_points` or a :class:`RocCurve`), shape (n,).
    target
        False-positive rate in [0, 1].

    Returns
    -------
    float
        The TPR; NaN when the points are NaN (an empty class), empty, or ``target`` is outside
        [0, 1].
    """
    fpr = np.asarray(fpr, dtype=np.float64)
    tpr = np.asarray(tpr, dtype=np.float64)
    if not 0.0 <= target <= 1.0 or fpr.size == 0 or np.isnan(fpr).any() or np.isnan(tpr).any():
        return float("nan")
    below = fpr <= target
    if not below.any():
        return float("nan")
    fpr_a = fpr[below].max()
    tpr_a = tpr[below].max()
    if below.all():
        return float(tpr_a)
    fpr_b = fpr[~below].min()
    tpr_b = tpr[~below].min()
    return float(tpr_a + (tpr_b - tpr_a) * (target - fpr_a) / (fpr_b - fpr_a))


def top_bin_fpr(fpr: np.ndarray) -> float:
    """FPR of the highest score bin alone: the non-CR share of pixels stored as p = 1.0.

    Prediction files keep probabilities as float16, so every p above about 1 - 2.4e-4 is stored
    as 1.0, and the last bin (``p > SCORE_THRESHOLDS[-1]``) holds exactly those, whatever the
    model's own order among them. A TPR at an FPR below this value is read off the straight ROC
    segment through that bin (the TPR a random order inside it gives), not from the model's
    ranking (docs/metrics.md, §1).

    Parameters
    ----------
    fpr
        ROC points from :func:`roc_points` (point ``k``: bins ``>= k``), shape (n_bins + 1,).

    Returns
    -------
    float
        Point ``n_bins - 1``'s FPR; NaN for an empty or NaN curve.
    """
    fpr = np.asarray(fpr, dtype=np.float64)
    return float(fpr[-2]) if fpr.size >= 2 else float("nan")


def fpr_points_inside_top_bin(fpr: np.ndarray, points: Sequence[float]) -> list[float]:
    """The FPR ``points`` (e.g. 0.0005, 0.005) whose TPR is read inside the top bin's tie.

    That is, the points below :func:`top_bin_fpr` (none for a NaN curve).
    """
    top = top_bin_fpr(fpr)
    return [point for point in points if point < top]


def top_bin_tie_note(fpr: np.ndarray, points: Sequence[float]) -> str | None:
    """A reader's warning when a TPR at one of ``points`` is read inside the top bin's tie, else ``None``.

    For example ``"TPR at FPR 0.05% is read inside a tie: 0.065% of the non-CR pixels score p = 1.0
    in float16, which no threshold orders (docs/metrics.md, section 1)"``.
    """
    inside = fpr_points_inside_top_bin(fpr, points)
    if not inside:
        return None
    named = " and ".join(f"{100 * point:g}%" for point in inside)
    return (
        f"TPR at FPR {named} is read inside a tie: {100 * top_bin_fpr(fpr):.3g}% of the non-CR pixels "
        "score p = 1.0 in float16, which no threshold orders (docs/metrics.md, section 1)"
    )


def tpr_at_fpr_from_histograms(
    hist_cr: Sequence[int] | np.ndarray, hist_noncr: Sequence[int] | np.ndarray, target: float
) -> float:
    """TPR at FPR ``target`` of the ROC of two histograms (Python twin of SQL ``roc_tpr_at_fpr``)."""
    fpr, tpr = roc_points(hist_cr, hist_noncr)
    return interpolated_tpr(fpr, tpr, target)


def tpr_at_fpr(curve: RocCurve, fpr: float) -> float:
    """TPR at a fixed FPR by :func:`interpolated_tpr`; NaN without CR or non-CR pixels."""
    if curve.n_cr == 0 or curve.n_noncr == 0:
        return float("nan")
    return interpolated_tpr(curve.fpr, curve.tpr, fpr)


def tpr_at_fpr_points(curve: RocCurve, points: Mapping[str, float] = FPR_POINTS) -> dict[str, float]:
    """``{"0.0005": tpr, "0.005": tpr}`` (keys as given)."""
    return {key: tpr_at_fpr(curve, value) for key, value in points.items()}


def plot_roc(
    curves: Mapping[str, RocCurve], path: Path, *, title: str = "CR detection ROC", max_fpr: float = 0.02
) -> Path:
    """Write a ROC plot (TPR vs FPR, log FPR axis) as PNG with the Agg backend.

    Parameters
    ----------
    curves
        Label -> curve (e.g. ``{"ACS-WFC": ..., "ACS-WFC dilated": ..., "LACosmic": ...}``).
    path
        Output PNG.
    max_fpr
        Right edge of the FPR axis.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4.5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for label, curve in curves.items():
        keep = curve.fpr > 0
        axes.plot(curve.fpr[keep] * 100, curve.tpr[keep] * 100, label=label)
    for fpr in FPR_POINTS.values():
        axes.axvline(fpr * 100, color="0.7", linestyle=":", linewidth=1)
    axes.set_xscale("log")
    axes.set_xlim(1e-4, max_fpr * 100)
    axes.set_ylim(0, 100)
    axes.set_xlabel("false positive rate [%]")
    axes.set_ylabel("true positive rate [%]")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


@dataclass(frozen=True, slots=True)
class DilationEffect:
    """What deepCR's dilation of the predicted mask does at one threshold.

    The threshold is where the plain (undilated) mask reaches the FPR ``target``; the dilated mask
    at the same threshold contains the plain one, so the pixels it adds are the difference of the
    two counts above that threshold. On a truth whose CRs extend beyond what the model flags, the
    added ring is mostly CR and dilation raises the TPR at a fixed FPR; on a truth as tight as the
    model's mask it is mostly not, and the dilated FPR grows many times over.

    Attributes
    ----------
    target
        The plain mask's FPR that fixes the threshold.
    plain_tpr, dilated_tpr
        TPR of the plain and the dilated mask at that threshold.
    plain_fpr, dilated_fpr
        FPR of the plain mask (``target``) and of the dilated mask at that threshold.
    added_cr, added_noncr
        Pixels the dilation adds: truth CR pixels and non-CR pixels (interpolated between bins, so
        not integers).
    """

    target: float
    plain_tpr: float
    dilated_tpr: float
    plain_fpr: float
    dilated_fpr: float
    added_cr: float
    added_noncr: float

    @property
    def ring_cr_share(self) -> float:
        """Share of the added pixels that are truth CRs (NaN when nothing is added)."""
        added = self.added_cr + self.added_noncr
        return self.added_cr / added if added > 0 else float("nan")

    def summary(self) -> dict[str, float]:
        """The rates and the ring's CR share, as reports store them."""
        return {
            "plain_tpr": self.plain_tpr,
            "dilated_tpr": self.dilated_tpr,
            "plain_fpr": self.plain_fpr,
            "dilated_fpr": self.dilated_fpr,
            "ring_cr_share": self.ring_cr_share,
        }


def dilation_at_plain_fpr(
    plain: tuple[Sequence[int] | np.ndarray, Sequence[int] | np.ndarray],
    dilated: tuple[Sequence[int] | np.ndarray, Sequence[int] | np.ndarray],
    target: float,
) -> DilationEffect:
    """:class:`DilationEffect` at the threshold where the plain mask's FPR is ``target``.

    Parameters
    ----------
    plain, dilated
        ``(hist_cr, hist_noncr)`` of the same pixels scored plain and dilated (as recorded per
        exposure, or pooled), shape (n_bins,) each.
    target
        FPR of the plain mask, in [0, 1].

    Returns
    -------
    DilationEffect
        Counts above the threshold interpolated between the two ROC points around ``target`` with
        the weights :func:`interpolated_tpr` uses for the plain TPR (whose value ``plain_tpr`` is);
        all NaN for an empty class or a ``target`` outside [0, 1].

    Raises
    ------
    ValueError
        If the histograms differ in length or the two scorings cover different pixels.
    """
    nan = float("nan")
    cr_p, noncr_p = _tail_counts(*plain)
    cr_d, noncr_d = _tail_counts(*dilated)
    if cr_p.shape != cr_d.shape or cr_p[0] != cr_d[0] or noncr_p[0] != noncr_d[0]:
        raise ValueError("plain and dilated histograms must count the same CR and non-CR pixels")
    n_cr, n_noncr = cr_p[0], noncr_p[0]
    if n_cr <= 0 or n_noncr <= 0 or not 0.0 <= target <= 1.0:
        return DilationEffect(target, nan, nan, nan, nan, nan, nan)
    fpr = noncr_p / n_noncr
    below = np.flatnonzero(fpr <= target)  # never empty: the last point has FPR 0
    above = np.flatnonzero(fpr > target)
    # point a: the largest FPR <= target, top of its vertical run (the most pixels: lowest index);
    # point b: the smallest FPR > target, bottom of its run (the fewest pixels: highest index)
    a = below[fpr[below] == fpr[below].max()].min()
    if above.size:
        b = above[fpr[above] == fpr[above].min()].max()
        weight = (target - fpr[a]) / (fpr[b] - fpr[a])
    else:
        b, weight = a, 0.0

    def at(values: np.ndarray) -> float:
        return float(values[a] + weight * (values[b] - values[a]))

    tp_p, fp_p, tp_d, fp_d = at(cr_p), at(noncr_p), at(cr_d), at(noncr_d)
    return DilationEffect(
        target=target,
        plain_tpr=tp_p / n_cr,
        dilated_tpr=tp_d / n_cr,
        plain_fpr=fp_p / n_noncr,
        dilated_fpr=fp_d / n_noncr,
        added_cr=tp_d - tp_p,
        added_noncr=fp_d - fp_p,
    )
