"""Database URL helpers (masking secrets for logs and messages)."""

from __future__ import annotations

from sqlalchemy.engine import make_url


def mask_url(url: str) -> str:
    """Return ``url`` with its password replaced by ``***`` (safe to print or log).

    Parameters
    ----------
    url
        SQLAlchemy/libpq URL, e.g. ``postgresql://crlib:secret@db:5432/crlib``.
    """
    try:
        parsed = make_url(url)
    except Exception:  # not a URL we can parse: show nothing that could be a secret
        return "<unparseable database URL>"
    return parsed.render_as_string(hide_password=True)


def sqlalchemy_url(url: str) -> str:
    """Normalise a libpq-style URL to the psycopg2 SQLAlchemy driver (``postgresql+psycopg2://``)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url
