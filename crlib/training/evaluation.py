"""Score a network on a split of a patch dataset, pooled per (field type, filter).

Each group's CR and non-CR valid pixels are binned with :func:`crlib.metrics.histograms.score_histograms`
(fixed bins), with and without deepCR's 3x3-cross dilation of the predicted mask
(:func:`crlib.metrics.histograms.dilated_probability`), so the pooled ROC and the TPR at FPR 0.05%
and 0.5% are exact sums over patches. Ignored pixels (DQ, invalid, saturated) count nowhere.

The histograms are also kept per visit, so the promotion gate can put a confidence interval on
the mean gain of one model over another by resampling test fields
(:func:`bootstrap_mean_gain`: every resample is pooled and scored exactly like the full split).
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from crlib.metrics.histograms import N_SCORE_BINS, dilated_probability, score_histograms
from crlib.metrics.roc import FPR_POINTS, RocCurve, roc_from_histograms, tpr_at_fpr, tpr_at_fpr_points
from crlib.model.package import ModelMetadata
from crlib.training.patches import PatchDataset
from crlib.training.trainer import prepare_input

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupScore:
    """Pooled scores of one (field type, filter) group.

    Attributes
    ----------
    field_type, filter
        The group.
    tpr, tpr_dilated
        ``{"0.0005": tpr, "0.005": tpr}`` as fractions, without / with dilation.
    n_cr, n_noncr
        Valid CR / non-CR pixels pooled.
    patches
        Patches in the group.
    hist_cr, hist_noncr, hist_cr_dilated, hist_noncr_dilated
        The pooled score histograms (length :data:`crlib.metrics.histograms.N_SCORE_BINS`).
    visits
        Visits contributing to the group, sorted.
    visit_histograms
        int64 ``(len(visits), 4, N_SCORE_BINS)``: per visit the four histograms above in that
        order (``None`` when not kept); they sum to the pooled ones.
    """

    field_type: str
    filter: str
    tpr: dict[str, float]
    tpr_dilated: dict[str, float]
    n_cr: int
    n_noncr: int
    patches: int
    hist_cr: np.ndarray = field(repr=False)
    hist_noncr: np.ndarray = field(repr=False)
    hist_cr_dilated: np.ndarray = field(repr=False)
    hist_noncr_dilated: np.ndarray = field(repr=False)
    visits: tuple[str, ...] = ()
    visit_histograms: np.ndarray | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        """``<field type>/<filter>``."""
        return f"{self.field_type}/{self.filter}"

    def curve(self, *, dilated: bool = False) -> RocCurve:
        """Pooled ROC curve of the group."""
        if dilated:
            return roc_from_histograms(self.hist_cr_dilated, self.hist_noncr_dilated)
        return roc_from_histograms(self.hist_cr, self.hist_noncr)


@dataclass(frozen=True)
class EvaluationReport:
    """Scores of one model on one split.

    Attributes
    ----------
    model_label
        E.g. ``deepcr-acs-wfc/3``.
    split
        ``test`` (the promotion gate's fixed held-out set) or ``validation``.
    dataset_id
        Patch dataset the numbers come from.
    groups
        One entry per (field type, filter), sorted.
    """

    model_label: str
    split: str
    dataset_id: str
    groups: tuple[GroupScore, ...]

    def group(self, key: str) -> GroupScore:
        """The group ``<field type>/<filter>`` (KeyError if absent)."""
        for group in self.groups:
            if group.key == key:
                return group
        raise KeyError(key)

    def table(self) -> list[dict[str, Any]]:
        """Rows ``field_type, filter, fpr, dilated, tpr_percent, n_cr`` (JSON-friendly)."""
        rows = []
        for group in self.groups:
            for dilated, values in ((False, group.tpr), (True, group.tpr_dilated)):
                for fpr, tpr in values.items():
                    rows.append(
                        {
                            "field_type": group.field_type,
                            "filter": group.filter,
                            "fpr": fpr,
                            "dilated": dilated,
                            "tpr_percent": round(100.0 * tpr, 4),
                            "n_cr": group.n_cr,
                        }
                    )
        return rows


def predict_patches(
    network: torch.nn.Module, metadata: ModelMetadata, images: np.ndarray, *, device: str = "cpu"
) -> np.ndarray:
    """CR probabilities of a batch of patches, float32 (B, P, P) from electrons (B, P, P)."""
    batch = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None].to(device)
    network.eval()
    with torch.inference_mode():
        return network(prepare_input(batch, metadata))[:, 0].float().cpu().numpy()


def evaluate_network(
    network: torch.nn.Module,
    metadata: ModelMetadata,
    dataset: PatchDataset,
    *,
    split: str = "test",
    model_label: str = "",
    batch_size: int = 8,
    device: str = "cpu",
) -> EvaluationReport:
    """Pooled TPR at FPR 0.05%/0.5% per (field type, filter) on one split.

    Parameters
    ----------
    network
        Mask network (eval mode is set here).
    metadata
        Its input scale/normalisation.
    dataset
        Patch dataset.
    split
        Which split to score.
    model_label
        Label stored in the report.
    batch_size
        Patches per forward pass.
    device
        Torch device.

    Returns
    -------
    EvaluationReport
        Empty ``groups`` when the split has no patches.
    """
    indices = dataset.split_indices(split)
    sums: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    patches_of: dict[tuple[str, str], int] = {}
    for start in range(0, len(indices), batch_size):
        chosen = indices[start : start + batch_size]
        probabilities = predict_patches(network, metadata, dataset.images[chosen], device=device)
        for probability, index in zip(probabilities, chosen, strict=True):
            row = dataset.index[int(index)]
            truth = np.asarray(dataset.masks[index])
            valid = np.asarray(dataset.ignore[index]) == 0
            key = (row["field_type"], row["filter"])
            per_visit = sums.setdefault(key, {})
            entry = per_visit.setdefault(str(row["visit"]), np.zeros((4, N_SCORE_BINS), np.int64))
            entry[0:2] += np.stack(score_histograms(probability, truth, valid))
            entry[2:4] += np.stack(score_histograms(dilated_probability(probability, valid), truth, valid))
            patches_of[key] = patches_of.get(key, 0) + 1
    groups = []
    for (field_type, filter_name), per_visit in sorted(sums.items()):
        visits = tuple(sorted(per_visit))
        stacked = np.stack([per_visit[v] for v in visits])
        h_cr, h_non, d_cr, d_non = stacked.sum(axis=0)
        patches = patches_of[(field_type, filter_name)]
        groups.append(
            GroupScore(
                field_type=field_type,
                filter=filter_name,
                tpr=tpr_at_fpr_points(roc_from_histograms(h_cr, h_non), FPR_POINTS),
                tpr_dilated=tpr_at_fpr_points(roc_from_histograms(d_cr, d_non), FPR_POINTS),
                n_cr=int(h_cr.sum()),
                n_noncr=int(h_non.sum()),
                patches=int(patches),
                hist_cr=h_cr,
                hist_noncr=h_non,
                hist_cr_dilated=d_cr,
                hist_noncr_dilated=d_non,
                visits=visits,
                visit_histograms=stacked,
            )
        )
    return EvaluationReport(
        model_label=model_label, split=split, dataset_id=dataset.dataset_id, groups=tuple(groups)
    )


#: One compared number of the gate: ``(group key, FPR key, dilated)``.
NumberKey = tuple[str, str, bool]


@dataclass(frozen=True, slots=True)
class GainInterval:
    """Percentile bootstrap interval of the mean gain (challenger - champion), in points.

    Attributes
    ----------
    mean_delta_points
        The mean gain on the whole split (no resampling).
    low_points, high_points
        The interval's bounds (NaN when it could not be computed).
    confidence
        Two-sided coverage, e.g. 0.95.
    resamples
        Resamples drawn.
    valid_resamples
        Resamples in which at least one compared number was defined.
    seed
        Seed of the resampling.
    units
        Resampled units (test fields).
    """

    mean_delta_points: float
    low_points: float
    high_points: float
    confidence: float
    resamples: int
    valid_resamples: int
    seed: int
    units: int


def tpr_at_fpr_rows(hist_cr: np.ndarray, hist_noncr: np.ndarray, fprs: list[str]) -> dict[str, np.ndarray]:
    """TPR at each FPR key of every row of pooled histograms: ``{key: float64 (R,)}``.

    Row by row exactly :func:`crlib.metrics.roc.tpr_at_fpr` of
    :func:`crlib.metrics.roc.roc_from_histograms` (the one TPR definition, as the pooled report
    uses it); NaN for rows without CR or non-CR pixels.

    Parameters
    ----------
    hist_cr, hist_noncr
        ``(R, N_SCORE_BINS)`` counts (any numeric dtype holding whole numbers).
    fprs
        FPR keys, e.g. ``["0.0005", "0.005"]``.
    """
    cr = np.rint(np.asarray(hist_cr, dtype=np.float64)).astype(np.int64)
    noncr = np.rint(np.asarray(hist_noncr, dtype=np.float64)).astype(np.int64)
    result = {key: np.full(len(cr), np.nan) for key in fprs}
    for row, (counts_cr, counts_noncr) in enumerate(zip(cr, noncr, strict=True)):
        curve = roc_from_histograms(counts_cr, counts_noncr)
        for key in fprs:
            result[key][row] = tpr_at_fpr(curve, float(key))
    return result


def bootstrap_mean_gain(
    champion: EvaluationReport,
    challenger: EvaluationReport,
    numbers: list[NumberKey] | tuple[NumberKey, ...],
    *,
    unit_of: dict[str, str] | None = None,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> GainInterval:
    """Bootstrap interval of the mean gain over ``numbers`` by resampling test fields.

    Each resample draws as many units (fields: every visit of a field together) as the split has,
    with replacement; pools the per-visit histograms of the drawn units per group (a unit drawn
    twice counts twice); scores both models exactly as :func:`evaluate_network` does; and takes the
    mean of ``100 * (challenger - champion)`` over the compared numbers defined in that resample.
    The interval is the percentile interval of those means.

    Parameters
    ----------
    champion, challenger
        Reports on the same split with per-visit histograms.
    numbers
        The compared numbers (the gate's: groups both reports have, TPR defined in both).
    unit_of
        ``{visit: field}``; a visit missing here is its own unit.
    resamples
        Bootstrap resamples.
    confidence
        Two-sided coverage in ``(0, 1)``.
    seed
        Seeds the resampling (the same inputs give the same interval).

    Returns
    -------
    GainInterval
        NaN bounds when nothing is compared or a report lacks per-visit histograms.
    """
    unit_of = unit_of or {}
    groups = sorted({key[0] for key in numbers})
    reports = (champion, challenger)
    units = sorted({unit_of.get(v, v) for r in reports for g in groups for v in _group_or_empty(r, g).visits})
    full = _mean_gain_rows(reports, numbers, units, unit_of, np.ones((1, len(units))))
    empty = GainInterval(
        float(full[0]) if full.size else math.nan,
        math.nan,
        math.nan,
        confidence,
        resamples,
        0,
        seed,
        len(units),
    )
    if (
        not numbers
        or not units
        or any(_group_or_empty(r, g).visit_histograms is None for r in reports for g in groups)
    ):
        return empty
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(len(units), np.full(len(units), 1.0 / len(units)), size=resamples)
    means = _mean_gain_rows(reports, numbers, units, unit_of, weights.astype(np.float64))
    valid = means[np.isfinite(means)]
    if not valid.size:
        return empty
    alpha = 1.0 - confidence
    low, high = np.quantile(valid, [alpha / 2.0, 1.0 - alpha / 2.0])
    return GainInterval(
        empty.mean_delta_points,
        float(low),
        float(high),
        confidence,
        resamples,
        int(valid.size),
        seed,
        len(units),
    )


def _group_or_empty(report: EvaluationReport, key: str) -> GroupScore:
    try:
        return report.group(key)
    except KeyError:
        empty = np.zeros(N_SCORE_BINS, np.int64)
        field_type, _, filter_name = key.partition("/")
        return GroupScore(field_type, filter_name, {}, {}, 0, 0, 0, empty, empty, empty, empty)


def _mean_gain_rows(
    reports: tuple[EvaluationReport, EvaluationReport],
    numbers: list[NumberKey] | tuple[NumberKey, ...],
    units: list[str],
    unit_of: dict[str, str],
    weights: np.ndarray,
) -> np.ndarray:
    """Mean gain in points per row of ``weights`` (``(R, units)``); NaN where nothing is defined."""
    index = {unit: i for i, unit in enumerate(units)}
    tprs: dict[tuple[int, str, str, bool], np.ndarray] = {}
    for which, report in enumerate(reports):
        for key in sorted({n[0] for n in numbers}):
            group = _group_or_empty(report, key)
            present = sorted({index[unit_of.get(v, v)] for v in group.visits})  # units in this group
            per_unit = np.zeros((len(present), 4, N_SCORE_BINS))
            if group.visit_histograms is not None:
                row_of = {unit: row for row, unit in enumerate(present)}
                for visit, histograms in zip(group.visits, group.visit_histograms, strict=True):
                    per_unit[row_of[index[unit_of.get(visit, visit)]]] += histograms
            drawn = weights[:, present]
            for dilated in (False, True):
                fprs = sorted({n[1] for n in numbers if n[0] == key and n[2] == dilated})
                if not fprs:
                    continue
                cr = drawn @ per_unit[:, 2 * dilated]
                noncr = drawn @ per_unit[:, 2 * dilated + 1]
                for fpr, values in tpr_at_fpr_rows(cr, noncr, fprs).items():
                    tprs[(which, key, fpr, dilated)] = values
    deltas = (
        np.stack([100.0 * (tprs[(1, g, f, d)] - tprs[(0, g, f, d)]) for g, f, d in numbers], axis=1)
        if numbers
        else np.full((len(weights), 1), np.nan)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: mean undefined
        return np.nanmean(deltas, axis=1)
