"""ROC curves and TPR at fixed FPR from score histograms; ROC plots.

Definitions follow deepCR's ``evaluate.roc``: a pixel is predicted CR when its probability is
strictly above the threshold; TPR = TP / (TP + FN) and FPR = FP / (FP + TN). Unlike deepCR's code,
which counts ignored pixels as true negatives, invalid pixels are left out of every count (the
papers' text: "DQ-flagged pixels excluded from metrics"); with a few per cent of ignored pixels
that raises our FPR by the same few per cent relative to deepCR's, at any threshold.
TPR at a fixed FPR is linearly interpolated along the ROC (FPR ascending).
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


def tpr_at_fpr(curve: RocCurve, fpr: float) -> float:
    """TPR at a fixed FPR, linearly interpolated along the curve; NaN without CR or non-CR pixels."""
    if curve.n_cr == 0 or curve.n_noncr == 0:
        return float("nan")
    # Where several points share an FPR, np.interp needs increasing x: keep the highest TPR for each.
    fprs, index = np.unique(curve.fpr[::-1], return_index=True)
    tprs = curve.tpr[::-1][index]
    return float(np.interp(fpr, fprs, tprs))


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
