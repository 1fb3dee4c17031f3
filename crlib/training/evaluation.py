"""Score a network on a split of a patch dataset, pooled per (field type, filter).

Each group's CR and non-CR valid pixels are binned with :func:`crlib.metrics.histograms.score_histograms`
(fixed bins), with and without deepCR's 3x3-cross dilation of the predicted mask
(:func:`crlib.metrics.histograms.dilated_probability`), so the pooled ROC and the TPR at FPR 0.05%
and 0.5% are exact sums over patches. Ignored pixels (DQ, invalid, saturated) count nowhere.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from crlib.metrics.histograms import N_SCORE_BINS, dilated_probability, score_histograms
from crlib.metrics.roc import FPR_POINTS, RocCurve, roc_from_histograms, tpr_at_fpr_points
from crlib.registry.package import ModelMetadata
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
    sums: dict[tuple[str, str], list[Any]] = {}
    for start in range(0, len(indices), batch_size):
        chosen = indices[start : start + batch_size]
        probabilities = predict_patches(network, metadata, dataset.images[chosen], device=device)
        for probability, index in zip(probabilities, chosen, strict=True):
            row = dataset.index[int(index)]
            truth = np.asarray(dataset.masks[index])
            valid = np.asarray(dataset.ignore[index]) == 0
            entry = sums.setdefault(
                (row["field_type"], row["filter"]), [np.zeros(N_SCORE_BINS, np.int64) for _ in range(4)] + [0]
            )
            hist_cr, hist_noncr = score_histograms(probability, truth, valid)
            dil_cr, dil_noncr = score_histograms(dilated_probability(probability, valid), truth, valid)
            entry[0] += hist_cr
            entry[1] += hist_noncr
            entry[2] += dil_cr
            entry[3] += dil_noncr
            entry[4] += 1
    groups = []
    for (field_type, filter_name), (h_cr, h_non, d_cr, d_non, patches) in sorted(sums.items()):
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
            )
        )
    return EvaluationReport(
        model_label=model_label, split=split, dataset_id=dataset.dataset_id, groups=tuple(groups)
    )
