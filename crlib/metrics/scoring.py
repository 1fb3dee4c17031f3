"""Score a prediction against a truth: confusion counts, histograms, TPR at fixed FPR; pooling.

Truth files: the truth stage's ``<root>_crtruth.fits`` (``CRMASK`` and ``VALID`` per chip) or the
simulator's ``<root>_simtruth.fits`` (``CRMASK`` per chip; every pixel valid). Chips are matched
on ``EXTVER`` (the FLC's SCI EXTVER), whatever the layout: a full-frame exposure has two, a
subarray one or two, each of its own shape. Prediction and truth must hold the same chips with the
same shapes; anything else means they come from different exposures or file layouts and is refused
naming the chip and both shapes.

Which pixels count: the truth's ``VALID`` mask, narrowed by the profile's
:class:`~crlib.profiles.ScoringRules` when given (the paper's 128-px border and DQ exclusion, see
:mod:`crlib.metrics.pixels`); the record says which rules were applied (``border_px``,
``dq_excluded``). Without rules every valid pixel counts (ad-hoc scoring of small test files).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crlib.errors import InputDataError
from crlib.formats.flc import chip_dq, rootname_from_path
from crlib.metrics.histograms import N_SCORE_BINS, dilated_probability, score_histograms
from crlib.metrics.pixels import fits_border, scored_pixels
from crlib.metrics.roc import RocCurve, roc_from_histograms, tpr_at_fpr_points
from crlib.profiles import ScoringRules
from crlib.records import ExposureMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChipScores:
    """Counts of one chip (or a sum of chips).

    Attributes
    ----------
    tp, fp, fn, tn
        Confusion counts of the binary mask over valid pixels.
    hist_cr, hist_noncr, hist_cr_dilated, hist_noncr_dilated
        Score histograms (see :mod:`crlib.metrics.histograms`).
    """

    tp: int
    fp: int
    fn: int
    tn: int
    hist_cr: np.ndarray
    hist_noncr: np.ndarray
    hist_cr_dilated: np.ndarray
    hist_noncr_dilated: np.ndarray

    def __add__(self, other: ChipScores) -> ChipScores:
        return ChipScores(
            self.tp + other.tp,
            self.fp + other.fp,
            self.fn + other.fn,
            self.tn + other.tn,
            self.hist_cr + other.hist_cr,
            self.hist_noncr + other.hist_noncr,
            self.hist_cr_dilated + other.hist_cr_dilated,
            self.hist_noncr_dilated + other.hist_noncr_dilated,
        )


def _px(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape) + " px"


def score_chip(probability: np.ndarray, mask: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> ChipScores:
    """Confusion counts and histograms of one chip.

    Parameters
    ----------
    probability
        ``(ny, nx)`` CR probability.
    mask
        ``(ny, nx)`` predicted binary mask at the operating threshold (nonzero = CR).
    truth
        ``(ny, nx)`` true CR mask (nonzero = CR).
    valid
        ``(ny, nx)`` valid pixels (nonzero = use).
    """
    shapes = {probability.shape, mask.shape, truth.shape, valid.shape}
    if len(shapes) != 1:
        raise ValueError(f"chip arrays disagree in shape: {sorted(shapes)}")
    valid_b = np.asarray(valid, dtype=bool)
    truth_b = np.asarray(truth, dtype=bool)
    pred_b = np.asarray(mask, dtype=bool)
    tp = int(np.count_nonzero(pred_b & truth_b & valid_b))
    fp = int(np.count_nonzero(pred_b & ~truth_b & valid_b))
    n_cr = int(np.count_nonzero(truth_b & valid_b))
    n_valid = int(np.count_nonzero(valid_b))
    hist_cr, hist_noncr = score_histograms(probability, truth_b, valid_b)
    dil_cr, dil_noncr = score_histograms(dilated_probability(probability, valid_b), truth_b, valid_b)
    return ChipScores(tp, fp, n_cr - tp, n_valid - n_cr - fp, hist_cr, hist_noncr, dil_cr, dil_noncr)


def read_truth(path: Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """``{extver: (crmask, valid)}`` from a ``_crtruth.fits`` or ``_simtruth.fits`` file.

    Raises
    ------
    InputDataError
        Unreadable file or no CRMASK extension.
    """
    from astropy.io import fits

    chips: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    try:
        with fits.open(path, memmap=False) as hdul:
            for hdu in hdul[1:]:
                if hdu.name != "CRMASK":
                    continue
                extver = int(hdu.header.get("EXTVER", 1))
                if hdu.data is None or hdu.data.ndim != 2:
                    raise InputDataError(
                        path, f"CRMASK,{extver} holds no 2-D mask", fix="re-run the truth stage"
                    )
                crmask = np.asarray(hdu.data) != 0
                try:
                    valid = np.asarray(hdul["VALID", extver].data) != 0
                except KeyError:
                    valid = np.ones(crmask.shape, dtype=bool)
                if valid.shape != crmask.shape:
                    raise InputDataError(
                        path,
                        f"VALID,{extver} shape {_px(valid.shape)} differs from CRMASK,{extver} shape "
                        f"{_px(crmask.shape)}",
                        fix="re-run the truth stage",
                    )
                chips[extver] = (crmask, valid)
    except InputDataError:
        raise
    except FileNotFoundError:
        raise InputDataError(path, "truth file not found") from None
    except (OSError, ValueError, TypeError) as exc:
        raise InputDataError(path, f"cannot read truth file ({exc})", fix="re-run the truth stage") from None
    if not chips:
        raise InputDataError(
            path,
            "no CRMASK extension: not a _crtruth.fits or _simtruth.fits file",
            fix="pass the truth product",
        )
    return chips


def read_dq(flc: Path, extvers: Iterable[int]) -> dict[int, np.ndarray | None]:
    """``{extver: DQ array or None}`` of the FLC's chips (``None``: the file has no ``DQ,extver``).

    Only the ``DQ`` extensions asked for are read (no SCI, no ERR).

    Parameters
    ----------
    flc
        The exposure's FLC/FLT file.
    extvers
        EXTVERs of the chips whose (ny, nx) integer flags are wanted.

    Raises
    ------
    InputDataError
        Unreadable or missing file.
    """
    from astropy.io import fits

    found: dict[int, np.ndarray | None] = {}
    try:
        with fits.open(flc, memmap=False) as hdul:
            for extver in extvers:
                found[extver] = chip_dq(hdul, extver)
    except FileNotFoundError:
        raise InputDataError(flc, "FLC not found (its DQ flags are needed to score)") from None
    except (OSError, ValueError, TypeError) as exc:
        raise InputDataError(flc, f"cannot read the DQ arrays ({exc})") from None
    return found


def metrics_from_scores(
    scores: ChipScores,
    *,
    rootname: str,
    model_name: str,
    model_version: str,
    field_type: str | None = None,
    border_px: int = 0,
    dq_excluded: bool = False,
) -> ExposureMetrics:
    """Turn summed chip counts into an :class:`~crlib.records.ExposureMetrics` record.

    ``border_px`` and ``dq_excluded`` state the scoring rules the counts were made under.
    """
    return ExposureMetrics(
        rootname=rootname,
        model_name=model_name,
        model_version=model_version,
        tp=scores.tp,
        fp=scores.fp,
        fn=scores.fn,
        tn=scores.tn,
        tpr_at_fpr=tpr_at_fpr_points(roc_from_histograms(scores.hist_cr, scores.hist_noncr)),
        tpr_at_fpr_dilated=tpr_at_fpr_points(
            roc_from_histograms(scores.hist_cr_dilated, scores.hist_noncr_dilated)
        ),
        hist_cr=tuple(int(v) for v in scores.hist_cr),
        hist_noncr=tuple(int(v) for v in scores.hist_noncr),
        field_type=field_type,
        hist_cr_dilated=tuple(int(v) for v in scores.hist_cr_dilated),
        hist_noncr_dilated=tuple(int(v) for v in scores.hist_noncr_dilated),
        border_px=int(border_px),
        dq_excluded=bool(dq_excluded),
    )


def score_prediction_chips(
    prediction: Path, truth: Path, *, rules: ScoringRules | None = None, flc: Path | None = None
) -> tuple[dict[str, object], dict[int, ChipScores]]:
    """Score every chip of a ``_crpred.fits`` file against the truth of the same exposure.

    Parameters
    ----------
    prediction
        ``<root>_crpred.fits`` (one CRPROB/CRMASK pair per chip of the FLC).
    truth
        ``<root>_crtruth.fits`` or ``<root>_simtruth.fits``.
    rules
        Border and DQ rules (``None``: every valid pixel of the truth counts).
    flc
        The exposure's FLC, whose ``DQ`` arrays ``rules.exclude_dq`` needs.

    Returns
    -------
    primary, scores
        The prediction's primary keywords and ``{sci_extver: ChipScores}`` in EXTVER order;
        chips too small for ``rules.border_px`` are left out.

    Raises
    ------
    InputDataError
        Unreadable files; a chip in one file but not the other; chips of different shapes; no
        chip larger than the border.
    ValueError
        ``rules.exclude_dq`` without ``flc``.
    """
    if rules is not None and rules.exclude_dq and flc is None:
        raise ValueError("the scoring rules exclude DQ-flagged pixels: pass the exposure's FLC")
    from crlib.formats.prediction import read_prediction

    primary, chips = read_prediction(prediction)
    truth_chips = read_truth(truth)
    predicted = sorted(chip.extver for chip in chips)
    dq_arrays = read_dq(flc, predicted) if rules is not None and rules.exclude_dq and flc else {}
    scores: dict[int, ChipScores] = {}
    too_small: list[str] = []
    for chip in sorted(chips, key=lambda c: c.extver):
        if chip.extver not in truth_chips:
            raise InputDataError(
                truth,
                f"has no CRMASK,{chip.extver} for prediction chip {chip.extver} (prediction chips "
                f"{predicted}, truth chips {sorted(truth_chips)})",
                fix="score a prediction against the truth of the same exposure",
            )
        crmask, valid = truth_chips[chip.extver]
        if crmask.shape != chip.probability.shape:
            raise InputDataError(
                truth,
                f"CRMASK,{chip.extver} shape {_px(crmask.shape)} differs from the prediction's chip "
                f"{chip.extver} shape {_px(chip.probability.shape)}: they come from different exposures "
                "or file layouts (e.g. a subarray and a full-frame file)",
                fix="score a prediction against the truth of the same exposure",
            )
        if rules is not None:
            if not fits_border(crmask.shape, rules.border_px):
                too_small.append(f"chip {chip.extver} {_px(crmask.shape)}")
                continue
            try:
                valid = scored_pixels(valid, rules=rules, dq=dq_arrays.get(chip.extver))
            except ValueError as exc:
                raise InputDataError(flc or truth, f"chip {chip.extver}: {exc}") from None
        scores[chip.extver] = score_chip(chip.probability, chip.mask, crmask, valid)
    missing = sorted(set(truth_chips) - set(predicted))
    if missing:
        raise InputDataError(
            prediction,
            f"has no CRPROB,{missing[0]} for truth chip {missing[0]} (prediction chips {predicted}, "
            f"truth chips {sorted(truth_chips)})",
            fix="predict the exposure again (`crlib infer`) or pass the truth of the same exposure",
        )
    if too_small:
        assert rules is not None
        log.info(
            "%s: not scored within the %d-px border: %s", prediction, rules.border_px, ", ".join(too_small)
        )
        if not scores:
            raise InputDataError(
                prediction,
                f"no chip is larger than twice the {rules.border_px}-px scoring border "
                f"({', '.join(too_small)})",
                fix="nothing to score under the profile's scoring rules",
            )
    return primary, scores


def score_prediction_file(
    prediction: Path,
    truth: Path,
    *,
    field_type: str | None = None,
    rules: ScoringRules | None = None,
    flc: Path | None = None,
) -> tuple[ExposureMetrics, dict[str, RocCurve]]:
    """Score a ``_crpred.fits`` file against a truth file, summed over its chips.

    Parameters
    ----------
    prediction, truth
        The prediction and truth products of one exposure.
    field_type
        Stored on the record.
    rules, flc
        Scoring rules and the FLC (see :func:`score_prediction_chips`); the record states the
        border and DQ rule applied.

    Returns
    -------
    metrics, curves
        The record and the exposure's ROC curves (``"plain"``, ``"dilated"``) for plotting.

    Raises
    ------
    InputDataError
        See :func:`score_prediction_chips`.
    """
    primary, per_chip = score_prediction_chips(prediction, truth, rules=rules, flc=flc)
    total: ChipScores | None = None
    for scores in per_chip.values():
        total = scores if total is None else total + scores
    assert total is not None  # read_prediction refuses a file without chips
    rootname = str(primary.get("ROOTNAME", rootname_from_path(Path(prediction))))
    metrics = metrics_from_scores(
        total,
        rootname=rootname,
        model_name=str(primary.get("CRMODEL", "")),
        model_version=str(primary.get("CRMODVER", "")),
        field_type=field_type,
        border_px=rules.border_px if rules is not None else 0,
        dq_excluded=bool(rules is not None and rules.exclude_dq),
    )
    curves = {
        "plain": roc_from_histograms(total.hist_cr, total.hist_noncr),
        "dilated": roc_from_histograms(total.hist_cr_dilated, total.hist_noncr_dilated),
    }
    return metrics, curves


def pooled_histograms(
    metrics: Iterable[ExposureMetrics], *, field_type: str | None = None, dilated: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Sum the histograms of many exposures (optionally only one field type)."""
    cr = np.zeros(N_SCORE_BINS, dtype=np.int64)
    noncr = np.zeros(N_SCORE_BINS, dtype=np.int64)
    for record in metrics:
        if field_type is not None and record.field_type != field_type:
            continue
        hist_cr = record.hist_cr_dilated if dilated else record.hist_cr
        hist_noncr = record.hist_noncr_dilated if dilated else record.hist_noncr
        if len(hist_cr) != N_SCORE_BINS or len(hist_noncr) != N_SCORE_BINS:
            raise ValueError(
                f"{record.rootname}: histograms have {len(hist_cr)} bins, expected {N_SCORE_BINS}"
            )
        cr += np.asarray(hist_cr, dtype=np.int64)
        noncr += np.asarray(hist_noncr, dtype=np.int64)
    return cr, noncr


def pooled_tpr_at_fpr(
    metrics: Iterable[ExposureMetrics], *, field_type: str | None = None
) -> Mapping[str, dict[str, float]]:
    """Pooled TPR at the papers' FPR points, ``{"plain": {...}, "dilated": {...}}``."""
    records = list(metrics)
    result = {}
    for label, dilated in (("plain", False), ("dilated", True)):
        cr, noncr = pooled_histograms(records, field_type=field_type, dilated=dilated)
        result[label] = tpr_at_fpr_points(roc_from_histograms(cr, noncr))
    return result
