"""Digest of a file's bytes (MD5 or SHA-256), read in chunks so large files never sit in memory.

Products carry an MD5 (the archive's checksums, the simulated archive's listing) and model weights a
SHA-256; every such digest in crlib is computed here. Digests identify content, they guard nothing:
MD5 is asked for with ``usedforsecurity=False``, so it also works where FIPS mode forbids MD5.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

__all__ = ["DigestAlgorithm", "file_hexdigest"]

#: Hash algorithms the file digests use.
DigestAlgorithm = Literal["md5", "sha256"]


def file_hexdigest(path: Path, algorithm: DigestAlgorithm) -> str:
    """Hex digest of the bytes of ``path``.

    Parameters
    ----------
    path
        The file.
    algorithm
        ``"md5"`` or ``"sha256"``.

    Returns
    -------
    str
        Lower-case hex digest (32 digits for MD5, 64 for SHA-256), no prefix.
    """
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, lambda: hashlib.new(algorithm, usedforsecurity=False))
    return digest.hexdigest()
