"""``crlib stats performance``'s note: what a reader must know about the pooled numbers it prints."""

from __future__ import annotations

import numpy as np

from crlib.cli.statistics import _top_bin_ties
from crlib.db.stats import PerformanceRow
from crlib.metrics.histograms import N_SCORE_BINS
from crlib.metrics.roc import roc_points, tpr_at_fpr_from_histograms


def _row(field_type: str, top_noncr: int) -> PerformanceRow:
    """A pooled group of 1,000,000 non-CR and 10,000 CR pixels, ``top_noncr`` non-CR at p = 1.0."""
    hist_cr = np.zeros(N_SCORE_BINS, np.int64)
    hist_noncr = np.zeros(N_SCORE_BINS, np.int64)
    hist_cr[-1], hist_cr[-50] = 9_000, 1_000
    hist_noncr[-1], hist_noncr[10] = top_noncr, 1_000_000 - top_noncr
    fpr, tpr = roc_points(hist_cr, hist_noncr)
    points = {f: tpr_at_fpr_from_histograms(hist_cr, hist_noncr, f) for f in (0.0005, 0.005)}
    group = {"field_type": field_type}
    return PerformanceRow(group, 3, 0, 0, 0, 0, tpr_at_fpr=points, fpr=fpr, tpr=tpr)  # confusion counts 0


def test_the_note_names_each_group_whose_tpr_is_read_inside_the_top_bin_tie() -> None:
    crowded, sparse = _row("globular_cluster", top_noncr=1_200), _row("extragalactic", top_noncr=3)
    lines = _top_bin_ties([crowded, sparse])
    assert lines == [
        "field_type=globular_cluster: TPR at FPR 0.05% is read inside a tie: 0.12% of the non-CR pixels "
        "score p = 1.0 in float16, which no threshold orders (docs/metrics.md, section 1)"
    ]
    assert _top_bin_ties([sparse]) == []
