"""crlib.file_digest: chunked file digests equal hashlib's digest of the whole bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from crlib.file_digest import file_hexdigest


@pytest.mark.parametrize("algorithm", ["md5", "sha256"])
def test_file_hexdigest_matches_hashlib(tmp_path: Path, algorithm: str) -> None:
    data = bytes(range(256)) * 20000  # 5 MB: several read chunks
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert file_hexdigest(path, algorithm) == hashlib.new(algorithm, data).hexdigest()  # type: ignore[arg-type]


def test_file_hexdigest_of_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    assert file_hexdigest(path, "md5") == "d41d8cd98f00b204e9800998ecf8427e"
