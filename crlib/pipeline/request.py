"""Checking what an operator asked a run to process (``crlib run --proposal/--visit``, the reprocess DAG)."""

from __future__ import annotations

import re

#: A visit id as MAST and the file names spell it: ``ipppss`` (instrument, program, visit).
_VISIT_ID = re.compile(r"^[a-z0-9]{6}$")


def normalise_request(proposal_id: int | None, visits: list[str] | None) -> list[str]:
    """Check a reprocessing request; return its visit ids in lower case.

    Raises
    ------
    RequestError
        A proposal id that is not a positive number, visits without a proposal, or a visit id
        that is not six letters/digits.
    """
    from crlib.errors import RequestError

    if proposal_id is not None and not 0 < int(proposal_id) <= 99999:
        raise RequestError(f"proposal {proposal_id} is not an HST proposal number (1-99999)")
    wanted = sorted({str(v).strip().lower() for v in visits or [] if str(v).strip()})
    if wanted and proposal_id is None:
        raise RequestError(
            f"visits {', '.join(wanted)} given without their proposal: name the proposal too "
            "(crlib run --proposal N --visit ID; the reprocess DAG's proposal_id)"
        )
    bad = [v for v in wanted if not _VISIT_ID.match(v)]
    if bad:
        raise RequestError(
            f"visit id(s) {', '.join(bad)} are not visit ids: a visit is 6 letters/digits "
            "(ipppss, the first 6 characters of its exposures' rootnames, e.g. j9l960)"
        )
    return wanted
