"""Alembic migrations of the results database (shipped inside the package so installs can upgrade)."""
