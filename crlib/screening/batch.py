"""Screening a batch of files: damaged vs ordinary rejections, one file per exposure, drizzle sets.

:func:`screen_files` screens each file (:func:`crlib.screening.screen.screen_file`) and rejects all
but one file of each rootname (the same exposure downloaded twice, as FLC and FLT, or as ``.fits``
and ``.fits.gz``); :func:`group_verdicts` groups the verdicts into (visit, detector, filter) sets.

Rejections come in two kinds: *damage* (rules starting with :data:`DAMAGE_RULE_PREFIXES`, see
:func:`is_damage`: the operator must fix the file, usually by downloading it again) and ordinary
science/calibration rules (too short, wrong mode), which are final.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from crlib.records import ScreeningReason, ScreeningVerdict
from crlib.screening.rules import ScreeningProfile
from crlib.screening.screen import reject_reason, screen_file

log = logging.getLogger(__name__)

#: Reject rules whose id starts with one of these mean a damaged file (unreadable, truncated,
#: missing extensions, bad pixels): the operator must fix it, usually by downloading it again.
#: :data:`DUPLICATE_RULE` is the exception (see :func:`is_damage`).
DAMAGE_RULE_PREFIXES: tuple[str, ...] = ("file.", "data.")

#: Rule of a file rejected because another file of the batch is the same exposure (rootname).
DUPLICATE_RULE = "file.duplicate_rootname"


def is_damage(reason: ScreeningReason | str) -> bool:
    """Whether a reason (or rule id) means a damaged file the operator must fix.

    Damage is a *reject* whose rule starts with :data:`DAMAGE_RULE_PREFIXES` (``file.``:
    unreadable, not FITS, truncated, missing extension; ``data.``: empty, all-NaN, mostly
    non-finite or constant pixels), except :data:`DUPLICATE_RULE` (the exposure is screened
    from its other file). Science and calibration rules (``svm.``, ``calib.``, ``profile.``,
    ``train.`` ...) are ordinary, final rejections.

    Parameters
    ----------
    reason
        A :class:`~crlib.records.ScreeningReason` or a rule id such as ``data.all_nan``.
    """
    if isinstance(reason, ScreeningReason):
        if reason.severity != "reject":
            return False
        rule = reason.rule
    else:
        rule = reason
    return rule.startswith(DAMAGE_RULE_PREFIXES) and rule != DUPLICATE_RULE


def is_damaged(verdict: ScreeningVerdict) -> bool:
    """Whether a verdict rejects a damaged file (any of its reasons :func:`is_damage`)."""
    return any(is_damage(reason) for reason in verdict.reasons)


def is_duplicate(verdict: ScreeningVerdict) -> bool:
    """Whether a verdict rejects a file because another file of its batch is the same exposure."""
    return any(reason.rule == DUPLICATE_RULE for reason in verdict.reasons)


_COMPRESSED_SUFFIXES = (".gz", ".bz2", ".zip", ".fz")


def _preference(verdict: ScreeningVerdict) -> tuple[int, int, int, str, str]:
    """Sort key: undamaged first, then FLC before FLT before others, uncompressed first, name."""
    name = Path(verdict.file).name
    lower = name.lower()
    kind = 0 if "_flc" in lower else 1 if "_flt" in lower else 2
    return (int(is_damaged(verdict)), kind, int(lower.endswith(_COMPRESSED_SUFFIXES)), name, verdict.file)


def reject_duplicates(verdicts: Sequence[ScreeningVerdict]) -> list[ScreeningVerdict]:
    """Keep one file per rootname; reject the others with :data:`DUPLICATE_RULE`.

    The kept file is chosen deterministically, whatever the input order: a file that is not
    damaged, then an FLC over an FLT, an uncompressed file over a compressed one, then the
    smaller file name (then path). The kept verdict is unchanged; each other file's verdict
    becomes ``reject`` (not usable for training) with a first reason naming the kept file.

    Parameters
    ----------
    verdicts
        Verdicts of one batch.

    Returns
    -------
    list of ScreeningVerdict
        One per input verdict, in input order.
    """
    by_rootname: dict[str, list[int]] = defaultdict(list)
    for position, verdict in enumerate(verdicts):
        by_rootname[verdict.rootname].append(position)
    result = list(verdicts)
    for rootname, positions in by_rootname.items():
        if len(positions) < 2:
            continue
        ranked = sorted(positions, key=lambda i: _preference(verdicts[i]))
        kept = Path(verdicts[ranked[0]].file)
        for position in ranked[1:]:
            verdict = verdicts[position]
            here = Path(verdict.file)
            kept_name = kept.name if kept.parent == here.parent else str(kept)
            reason = reject_reason(
                DUPLICATE_RULE,
                "ROOTNAME",
                rootname,
                f"{here}: same exposure (rootname {rootname}) as {kept_name}, which is screened "
                "instead: remove one of the two copies",
            )
            log.info("%s rejected: duplicate of %s", here.name, kept_name)
            result[position] = replace(
                verdict, verdict="reject", usable_for_training=False, reasons=(reason, *verdict.reasons)
            )
    return result


def screen_files(
    paths: Iterable[Path | str], *, profile: ScreeningProfile | str = "acs_wfc", data_check: bool = True
) -> list[ScreeningVerdict]:
    """Screen many files: one verdict each, in input order; one file kept per rootname.

    Parameters
    ----------
    paths
        FLC/FLT files.
    profile
        Screening profile or its name.
    data_check
        Check SCI pixels too (see :func:`screen_file`).

    Returns
    -------
    list of ScreeningVerdict
        As :func:`screen_file`, then :func:`reject_duplicates`: of several files with one
        rootname, all but one are rejected with :data:`DUPLICATE_RULE`.
    """
    verdicts = [screen_file(path, profile=profile, data_check=data_check) for path in paths]
    return reject_duplicates(verdicts)


@dataclass(frozen=True, slots=True)
class ScreeningSet:
    """Exposures of one (visit, detector, filter) set after screening.

    Attributes
    ----------
    visit, detector, filter
        The set's key (``detector`` is ``INSTRUME/DETECTOR``, e.g. ``ACS/WFC``).
    accepted, rejected
        Rootnames by verdict.
    gets_truth
        Whether drizzle ground truth can be made (enough accepted exposures).
    note
        Why not, when ``gets_truth`` is False.
    """

    visit: str
    detector: str
    filter: str
    accepted: tuple[str, ...]
    rejected: tuple[str, ...]
    gets_truth: bool
    note: str | None = None


def group_verdicts(verdicts: Iterable[ScreeningVerdict], *, min_exposures: int = 2) -> list[ScreeningSet]:
    """Group verdicts into (visit, detector, filter) sets and say which get drizzle truth.

    Every accepted exposure still gets model inference; only sets with at least
    ``min_exposures`` accepted exposures get drizzle ground truth (driz_cr needs overlap).
    Verdicts rejected as duplicates (:data:`DUPLICATE_RULE`) are left out: their exposure is
    counted once, through the file that was kept.
    """
    groups: dict[tuple[str, str, str], list[ScreeningVerdict]] = defaultdict(list)
    for verdict in verdicts:
        if is_duplicate(verdict):
            continue  # the same exposure is in the set through its kept file
        summary = verdict.header_summary
        detector = f"{summary.get('instrument') or '?'}/{summary.get('detector') or '?'}"
        groups[(verdict.rootname[:6], detector, str(summary.get("filter") or "?"))].append(verdict)
    sets: list[ScreeningSet] = []
    for (visit, detector, filter_name), members in sorted(groups.items()):
        accepted = tuple(sorted(v.rootname for v in members if v.verdict == "accept"))
        rejected = tuple(sorted(v.rootname for v in members if v.verdict == "reject"))
        gets_truth = len(accepted) >= min_exposures
        note = (
            None
            if gets_truth
            else (
                f"{len(accepted)} accepted exposure(s) < {min_exposures}: "
                "model inference only, no drizzle truth"
            )
        )
        sets.append(ScreeningSet(visit, detector, filter_name, accepted, rejected, gets_truth, note))
    return sets
