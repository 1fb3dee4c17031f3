"""Per-exposure drizzlepac steps in forked processes: what the children add reaches the parent intact."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits

from crlib.truth import drizzle_forked
from crlib.truth.drizzle_forked import default_processes, fork_available, run_per_exposure

pytestmark = pytest.mark.skipif(not fork_available(), reason="this platform cannot fork")


class _Image:
    """The part of a drizzlepac image object the steps touch: its in-memory products."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.virtualOutputs: dict[str, Any] = {"kept": fits.PrimaryHDU(np.full((2, 2), index, np.float32))}


def _single_drizzle_like(image: _Image) -> None:
    """Adds an HDUList (image + weight), replaces a shared scratch entry, reads the inherited state."""
    sci = np.arange(12, dtype=np.float32).reshape(3, 4) * (image.index + 1)
    header = fits.Header({"EXPOSURE": image.index, "CHILDPID": os.getpid(), "UNITS": "electrons"})
    image.virtualOutputs[f"img{image.index}_single.fits"] = fits.HDUList(
        [fits.PrimaryHDU(sci, header=header), fits.ImageHDU(np.ones((3, 4), np.int16), name="WHT")]
    )
    image.virtualOutputs["scratch"] = fits.PrimaryHDU(np.full((2, 2), image.index, np.uint8))


def _child_pids(images: list[_Image]) -> set[int]:
    """The processes that ran the step, as each product's header records them."""
    return {image.virtualOutputs[f"img{image.index}_single.fits"][0].header["CHILDPID"] for image in images}


def test_children_products_arrive_in_the_parent_as_a_serial_run_leaves_them(tmp_path):
    images = [_Image(i) for i in range(3)]
    untouched = [image.virtualOutputs["kept"] for image in images]
    run_per_exposure(images, _single_drizzle_like, processes=3, step_name="test step")

    pids = set()
    for image, kept in zip(images, untouched, strict=True):
        assert image.virtualOutputs["kept"] is kept  # what the step did not write is not replaced
        single = image.virtualOutputs[f"img{image.index}_single.fits"]
        assert isinstance(single, fits.HDUList) and len(single) == 2
        np.testing.assert_array_equal(single[0].data, np.arange(12).reshape(3, 4) * (image.index + 1))
        assert single[0].data.dtype == np.float32 and single[1].data.dtype == np.int16
        assert single[1].name == "WHT" and single[0].header["UNITS"] == "electrons"
        assert single[0].header["EXPOSURE"] == image.index
        pids.add(single[0].header["CHILDPID"])
        # a name every exposure writes ends with each image's own (as in a serial loop)
        assert isinstance(image.virtualOutputs["scratch"], fits.PrimaryHDU)
        assert image.virtualOutputs["scratch"].data[0, 0] == image.index
    assert os.getpid() not in pids and len(pids) >= 2  # the steps really ran in other processes
    assert not drizzle_forked._FORKED_WORK


def test_one_process_runs_the_step_here():
    images = [_Image(i) for i in range(2)]
    run_per_exposure(images, _single_drizzle_like, processes=1, step_name="test step")
    assert _child_pids(images) == {os.getpid()}


def test_the_shared_memory_files_are_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(drizzle_forked, "_shared_memory_dir", lambda: str(tmp_path))
    run_per_exposure([_Image(0), _Image(1)], _single_drizzle_like, processes=2, step_name="test step")
    assert not list(tmp_path.iterdir())


def _products_in_a_pool_worker(count: int) -> tuple[int, set[int]]:
    images = [_Image(i) for i in range(count)]
    run_per_exposure(images, _single_drizzle_like, processes=count, step_name="test step")
    return os.getpid(), {
        image.virtualOutputs[f"img{image.index}_single.fits"][0].header["CHILDPID"] for image in images
    }


def test_a_daemonic_process_runs_the_step_itself():
    import multiprocessing

    # a multiprocessing.Pool worker may not have children: the step runs in the worker, not a crash
    with multiprocessing.get_context("fork").Pool(1) as pool:
        worker, pids = pool.apply(_products_in_a_pool_worker, (2,))
    assert pids == {worker}


def test_arrays_go_to_disk_when_shared_memory_is_full(tmp_path, monkeypatch):
    import errno

    shm = tmp_path / "shm"
    shm.mkdir()
    real_save = np.save

    def full_shm(path, *args, **kwargs):  # a container's 64 MB /dev/shm after the first file
        if str(path).startswith(str(shm)) and any(shm.rglob("*.npy")):
            Path(path).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(path, *args, **kwargs)

    monkeypatch.setattr(drizzle_forked, "_shared_memory_dir", lambda: str(shm))
    monkeypatch.setattr(np, "save", full_shm)
    images = [_Image(i) for i in range(2)]
    run_per_exposure(images, _single_drizzle_like, processes=2, step_name="test step")
    for image in images:
        single = image.virtualOutputs[f"img{image.index}_single.fits"]
        np.testing.assert_array_equal(single[0].data, np.arange(12).reshape(3, 4) * (image.index + 1))
    assert not list(shm.iterdir())


def _failing(image: _Image) -> None:
    if image.index == 1:
        raise ValueError(f"exposure {image.index}: no pixels to drizzle")
    _single_drizzle_like(image)


def test_an_error_in_a_child_reaches_the_caller(tmp_path, monkeypatch):
    monkeypatch.setattr(drizzle_forked, "_shared_memory_dir", lambda: str(tmp_path))
    with pytest.raises(ValueError, match="exposure 1: no pixels to drizzle"):
        run_per_exposure([_Image(i) for i in range(3)], _failing, processes=2, step_name="test step")
    assert not list(tmp_path.iterdir()) and not drizzle_forked._FORKED_WORK


def _dying(image: _Image) -> None:
    os._exit(9)  # what the kernel's OOM killer leaves the parent to see


def test_a_killed_child_is_an_error_naming_the_step_and_the_setting():
    with pytest.raises(RuntimeError, match=r"blot step died.*CRLIB_TRUTH_DRIZZLE_PROCESSES=1"):
        run_per_exposure([_Image(0), _Image(1)], _dying, processes=2, step_name="blot")


def test_children_read_inherited_files_at_their_own_offsets(tmp_path):
    path = tmp_path / "exposure.bin"
    path.write_bytes(bytes(range(256)) * 4)
    with open(path, "rb", buffering=0) as handle:  # as astropy holds an exposure the parent opened
        handle.seek(10)

        def read_elsewhere(index: int) -> int:
            handle.seek(500 + index)
            return handle.read(1)[0]

        values = drizzle_forked.forked_map(read_elsewhere, 3, processes=3, step_name="test step")
        # a fork shares the file offset: without private descriptors the parent would now be at 501+
        assert os.lseek(handle.fileno(), 0, os.SEEK_CUR) == 10
    assert values == [(500 + i) % 256 for i in range(3)]


def test_the_sky_match_is_skypacs_own_again_after_the_block():
    from stsci.skypac import skymatch

    original = (skymatch._overlap_matrix, skymatch._member_sky)
    with drizzle_forked.forked_sky_overlaps(processes=2):
        assert skymatch._overlap_matrix is not original[0]
    assert (skymatch._overlap_matrix, skymatch._member_sky) == original
    # same sky values as skypac's serial loop: tests/truth/test_drizzle_inmemory.py (identical masks)


def test_default_processes_one_per_exposure_at_most_two_per_core(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert [default_processes(n) for n in (1, 2, 3, 4, 8)] == [1, 2, 3, 4, 4]
    assert [default_processes(8, cores=c) for c in (1, 3)] == [1, 6]  # a one-thread task forks nothing
