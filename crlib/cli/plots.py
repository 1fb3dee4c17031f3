"""Plots for ``crlib stats --plot``: CR-rate trends and pooled ROC curves (matplotlib, PNG)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crlib.errors import InputDataError

if TYPE_CHECKING:
    from crlib.db.stats import PerformanceRow


def _figure() -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(8, 4.5), dpi=110)


def _save(figure: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path)
    except OSError as exc:
        raise InputDataError(
            path, f"cannot write the plot ({exc.strerror})", fix="choose a writable path"
        ) from None
    finally:
        plt.close(figure)


def plot_cr_rate(rows: Sequence[dict[str, Any]], *, dims: Sequence[str], path: Path) -> None:
    """CR rate against the first dimension, one line per combination of the others.

    Parameters
    ----------
    rows
        Output of :func:`crlib.db.stats.cr_rate`.
    dims
        The grouping dimensions, first on the x axis.
    path
        PNG file to write.
    """
    figure, axes = _figure()
    series: dict[str, list[tuple[Any, float]]] = defaultdict(list)
    x_dim = dims[0] if dims else None
    for row in rows:
        label = " ".join(str(row[d]) for d in dims[1:]) or "all"
        if row["rate_per_cm2_s"] is not None:
            series[label].append((row[x_dim] if x_dim else "all", float(row["rate_per_cm2_s"])))
    categorical = x_dim not in ("month", "day", "year", "exptime", "chip")
    for label, points in sorted(series.items()):
        xs, ys = zip(*points, strict=True)
        if x_dim in ("month", "day"):
            import datetime as dt

            xs = tuple(dt.date.fromisoformat(str(x)) for x in xs)
        axes.plot(xs, ys, "o-" if not categorical else "o", label=label, markersize=3)
    axes.set_xlabel(x_dim or "")
    axes.set_ylabel("CR rate (events cm$^{-2}$ s$^{-1}$)")
    axes.set_title("Cosmic-ray rate by " + " x ".join(dims))
    if len(series) > 1:
        axes.legend(fontsize=7)
    figure.autofmt_xdate()
    figure.tight_layout()
    _save(figure, path)


def plot_roc_curves(results: Sequence[PerformanceRow], *, path: Path) -> None:
    """Pooled ROC curves (log FPR axis) of every group in ``results``."""
    figure, axes = _figure()
    for result in results:
        label = " ".join(str(v) for v in result.group.values()) or "all"
        keep = (result.fpr > 0) & (result.fpr == result.fpr)
        axes.plot(result.fpr[keep], result.tpr[keep], label=label, linewidth=1)
    axes.set_xscale("log")
    axes.set_xlim(1e-5, 1)
    axes.set_ylim(0, 1.01)
    axes.axvline(0.0005, color="grey", linestyle=":", linewidth=0.8)
    axes.axvline(0.005, color="grey", linestyle=":", linewidth=0.8)
    axes.set_xlabel("false-positive rate")
    axes.set_ylabel("true-positive rate")
    axes.set_title("Pooled ROC")
    if results:
        axes.legend(fontsize=6)
    figure.tight_layout()
    _save(figure, path)
