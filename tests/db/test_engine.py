"""Connection errors name the URL (password masked) and say what to check."""

from __future__ import annotations

import socket

import pytest

from crlib.db.engine import make_engine
from crlib.errors import DatabaseError


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_server_error_masks_password_and_says_what_to_check() -> None:
    url = f"postgresql://crlib:s3cret-pw@127.0.0.1:{_closed_port()}/crlib"
    with pytest.raises(DatabaseError) as caught:
        make_engine(url)
    message = str(caught.value)
    assert "s3cret-pw" not in message
    assert "127.0.0.1" in message and "***" in message
    assert "CRLIB_DATABASE_URL" in message


def test_missing_database_is_reported(postgres_server_url: str) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(postgres_server_url).set(database="crlib_no_such_db").render_as_string(hide_password=False)
    with pytest.raises(DatabaseError, match="crlib_no_such_db"):
        make_engine(url)
