"""Alembic revision scripts (applied in order by :func:`crlib.db.migrate.upgrade`)."""
