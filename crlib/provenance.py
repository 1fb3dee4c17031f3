"""Which code produced a result: crlib's version plus a digest of its source files.

Predictions, truth products and stage-reuse records carry :func:`code_version`. The package
version alone does not change when the code does (every commit of a development checkout is
``0.1.0``), so a stage would reuse an output the changed code would compute differently, and two
different codes would record predictions under the same key; the source digest changes with
every edit of a ``crlib`` module. Light on purpose: no numpy, torch or astropy import.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def digest_sources(root: Path) -> str:
    """First 12 hex digits of the MD5 over every ``*.py`` under ``root`` (relative path and bytes)."""
    digest = hashlib.md5(usedforsecurity=False)
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


@lru_cache(maxsize=1)
def source_digest() -> str:
    """:func:`digest_sources` of the installed ``crlib`` package (computed once per process)."""
    return digest_sources(Path(__file__).resolve().parent)


@lru_cache(maxsize=1)
def code_version() -> str:
    """``<package version>+<source digest>`` (a PEP 440 local label), e.g. ``0.1.0+3f2a9c01b7de``."""
    try:
        base = version("crlib")
    except PackageNotFoundError:
        base = "0"
    separator = "." if "+" in base else "+"
    return f"{base}{separator}{source_digest()}"
