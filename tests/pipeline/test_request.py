"""What an operator may ask a run to process: checked before anything is polled."""

from __future__ import annotations

import pytest


def test_visits_are_normalised_and_bad_requests_refused() -> None:
    from crlib.errors import RequestError
    from crlib.pipeline.request import normalise_request

    assert normalise_request(10775, [" J9L960 ", "j9l960", "j9l961"]) == ["j9l960", "j9l961"]
    assert normalise_request(None, None) == [] and normalise_request(10775, []) == []
    with pytest.raises(RequestError, match="without their proposal"):
        normalise_request(None, ["j9l960"])
    for proposal in (0, -5, 100000):
        with pytest.raises(RequestError, match=f"proposal {proposal} is not an HST proposal number"):
            normalise_request(proposal, None)
    with pytest.raises(RequestError, match="j9l9 are not visit ids"):
        normalise_request(10775, ["j9l9"])
