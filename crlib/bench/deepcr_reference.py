"""What ``crlib bench accuracy`` is compared with: the paper's Table 3 and how deepCR's evaluation counts.

Numbers from the deepCR-ACS/WFC paper (Table 3, global model; DESIGN.md section 6) and the differences
between deepCR 0.3.1's ``deepCR.evaluate`` and our scoring, read off its source.
"""

from __future__ import annotations

#: How deepCR 0.3.1's ``deepCR.evaluate`` (``roc``, ``roc_lacosmic``) counts, where it differs from us.
EVALUATION_NOTES: tuple[str, ...] = (
    "Ignored pixels: deepCR zeroes prediction and truth there and counts them as true negatives, so "
    "its FPR denominator includes them; we leave invalid pixels out of every count.",
    "Dilation: deepCR dilates the ignore-zeroed binary mask with disk(1) (3x3 cross) and does not "
    "re-apply the ignore mask, so dilated pixels spilling into ignored pixels count as false "
    "positives; we count valid pixels only.",
    "Thresholds: deepCR samples the ROC at 500 thresholds linspace(0.001, 0.999) and has no "
    "TPR-at-FPR function; we bin probabilities on float16 logit bins up to 1 - 4.9e-4 and interpolate "
    "the TPR linearly in FPR.",
    "Model input: deepCR's roc() runs clean(binary=False), 1024-px tiles without overlap; we tile "
    "with overlap.",
    "LACosmic: deepCR uses readnoise=5 e-, gain=1 and objlim=2 unless given; we use each chip's "
    "READNSE* mean and the paper's objlim (2.6 sparse/cluster fields, 4.5 resolved galaxies). Its "
    "line `pdt_mask *= (1 - image[3]).astype(bool)` multiplies by a row of the image, not the ignore "
    "mask, so LACosmic detections in ignored pixels count as false positives there.",
    "Pooling is the same: TP/FP/FN/TN summed over all images before TPR = TP/(TP+FN), "
    "FPR = FP/(FP+TN); 'CR' means probability strictly above the threshold.",
)

#: deepCR-ACS/WFC paper, Table 3 (global model): ``(field type, filter) -> {"plain"|"dilated": {fpr: tpr}}``.
PAPER_TABLE3: dict[tuple[str, str], dict[str, dict[str, float]]] = {
    (field_type, filter_name): {
        "plain": {"0.0005": values[0] / 100, "0.005": values[1] / 100},
        "dilated": {"0.0005": values[2] / 100, "0.005": values[3] / 100},
    }
    for (field_type, filter_name), values in {
        ("globular_cluster", "F435W"): (80.24, 95.53, 92.06, 96.93),
        ("extragalactic", "F435W"): (87.47, 99.39, 98.63, 99.87),
        ("resolved_galaxy", "F435W"): (76.46, 90.36, 89.95, 91.80),
        ("globular_cluster", "F606W"): (85.98, 97.45, 95.52, 98.56),
        ("extragalactic", "F606W"): (89.08, 99.37, 95.97, 99.75),
        ("resolved_galaxy", "F606W"): (64.79, 86.80, 82.53, 92.11),
        ("globular_cluster", "F814W"): (82.53, 94.63, 94.37, 96.86),
        ("extragalactic", "F814W"): (92.00, 99.58, 98.31, 99.80),
        ("resolved_galaxy", "F814W"): (67.01, 89.53, 85.32, 92.86),
    }.items()
}
