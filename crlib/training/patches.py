"""Patch datasets: 256x256 cut-outs of (image, CR mask, ignore mask), written once as ``.npy``.

Which pixels count is the instrument profile's :class:`~crlib.profiles.ScoringRules`, the same
rules pipeline scoring applies (:func:`PatchParameters.for_profile`): per chip the profile's border
(128 px for ACS/WFC and WFC3/UVIS, the deepCR-ACS/WFC paper's) is discarded and the rest tiled
without overlap, and DQ-flagged pixels are ignored when the profile excludes them. Chips are the
SCI extensions the FLC holds that have a ``CRMASK`` in the truth file, each of its own shape
(full-frame chips, one- or two-chip subarrays). A chip smaller than a patch plus the border on both
sides (``patch + 2 * border`` = 512 px by default: a 512x513 ``UVIS2-C512C-SUB`` chip gives one
patch, a 10x10 test file none) is **skipped, not padded**: padding would make patches that are
mostly ignored pixels and would put the chip edge, where drizzle truth is least reliable, inside
the training data. Each skipped chip is logged and recorded with its reason in the manifest
(``skipped_chips``); when no chip of any exposure yields a patch the build fails naming the chips
and their sizes. The *ignore*
mask (1 = excluded from loss and metrics) is set where

* the DQ array flags the pixel (any bit except the profile's label bits, the CR flags 4096/8192),
  when the profile's rules exclude DQ-flagged pixels (they do for every shipped profile),
* the truth file's ``VALID`` is 0 (when the truth file has one),
* within the 7x7-dilated footprint of a saturated pixel (> the profile's ``saturation_e``, 70000 e-
  for ACS/WFC),
* the image is not finite.

A dataset directory holds ``images.npy`` (float32, N x P x P, electrons), ``masks.npy`` and
``ignore.npy`` (uint8, N x P x P) and ``manifest.json`` (parameters, exposures, the per-patch
index with split, field type, filter and sky level, the skipped chips). The directory name is a
hash of its inputs and parameters, so the same inputs are cut once and reused (arrays are
memory-mapped on reading).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crlib.errors import InputDataError
from crlib.profiles import ACS_WFC, CR_DQ_BITS, InstrumentProfile, ScoringRules
from crlib.training.sources import TrainingExposure
from crlib.training.splits import SPLITS, SplitFractions, assign_splits, load_split_file, save_split_file

log = logging.getLogger(__name__)

__all__ = [
    "CR_DQ_BITS",
    "DATASET_SCHEMA",
    "MANIFEST",
    "PatchDataset",
    "PatchParameters",
    "build_patch_dataset",
    "dataset_key",
    "dataset_rules",
    "ignore_mask",
    "open_patch_dataset",
    "patch_origins",
    "too_small_reason",
]

MANIFEST = "manifest.json"
DATASET_SCHEMA = "crlib-patch-dataset/1"


@dataclass(frozen=True, slots=True)
class PatchParameters:
    """How exposures are cut into patches (all lengths in pixels).

    Build them from the instrument profile (:meth:`for_profile`): the border and the DQ rule are
    the profile's :class:`~crlib.profiles.ScoringRules`, so training, the promotion gate and
    pipeline scoring count the same pixels. The defaults are the ACS/WFC profile's.

    Attributes
    ----------
    patch
        Patch edge (deepCR-ACS/WFC: 256).
    border
        Chip border discarded on every side (the profile's ``scoring.border_px``).
    saturation_e
        Saturation level, electrons (the profile's); saturated pixels are dilated with
        ``saturation_dilation``.
    saturation_dilation
        Edge of the square dilation kernel (7).
    exclude_dq
        Ignore pixels whose DQ has a bit set other than ``label_dq_bits`` (the profile's
        ``scoring.exclude_dq``).
    label_dq_bits
        DQ bits that are labels, not defects (the CR flags, the profile's
        ``scoring.label_dq_bits``).
    """

    patch: int = 256
    border: int = ACS_WFC.scoring.border_px
    saturation_e: float = ACS_WFC.saturation_e
    saturation_dilation: int = 7
    exclude_dq: bool = ACS_WFC.scoring.exclude_dq
    label_dq_bits: int = ACS_WFC.scoring.label_dq_bits

    @classmethod
    def for_profile(
        cls, profile: InstrumentProfile, *, patch: int = 256, border: int | None = None
    ) -> PatchParameters:
        """Patch parameters under ``profile``'s scoring rules and saturation level.

        Parameters
        ----------
        profile
            Instrument profile (:func:`crlib.profiles.get_profile`).
        patch
            Patch edge, pixels.
        border
            Override the profile's border (an experiment: the gate refuses a dataset whose rules
            differ from the profile's).
        """
        rules = profile.scoring
        return cls(
            patch=patch,
            border=rules.border_px if border is None else border,
            saturation_e=profile.saturation_e,
            exclude_dq=rules.exclude_dq,
            label_dq_bits=rules.label_dq_bits,
        )

    @property
    def scoring(self) -> ScoringRules:
        """The scoring rules these patches were cut under (compare with a profile's ``scoring``)."""
        return ScoringRules(
            border_px=self.border, exclude_dq=self.exclude_dq, label_dq_bits=self.label_dq_bits
        )


def dataset_rules(manifest: dict[str, Any]) -> ScoringRules:
    """The scoring rules a dataset was cut under, from its manifest's ``parameters``.

    Datasets written before the DQ rule was a parameter always excluded DQ-flagged pixels other
    than the CR bits.
    """
    parameters = manifest.get("parameters") or {}
    return ScoringRules(
        border_px=int(parameters.get("border", ACS_WFC.scoring.border_px)),
        exclude_dq=bool(parameters.get("exclude_dq", True)),
        label_dq_bits=int(parameters.get("label_dq_bits", CR_DQ_BITS)),
    )


@dataclass(frozen=True)
class PatchDataset:
    """A written patch dataset, arrays memory-mapped.

    Attributes
    ----------
    directory
        Dataset directory.
    images
        float32 (N, P, P): electrons.
    masks
        uint8 (N, P, P): 1 = CR.
    ignore
        uint8 (N, P, P): 1 = excluded from loss and metrics.
    index
        One dict per patch: ``rootname``, ``visit``, ``chip``, ``y0``, ``x0``, ``split``,
        ``field_type``, ``filter``, ``sky`` (median of valid non-CR pixels, e-).
    manifest
        The parsed ``manifest.json``.
    """

    directory: Path
    images: np.ndarray
    masks: np.ndarray
    ignore: np.ndarray
    index: list[dict[str, Any]]
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def skipped_chips(self) -> list[dict[str, Any]]:
        """Chips that gave no patch: ``rootname``, ``chip`` (SCI EXTVER), ``shape`` and ``reason``."""
        return list(self.manifest.get("skipped_chips", []))

    @property
    def dataset_id(self) -> str:
        """The directory name (hash of inputs and parameters)."""
        return self.directory.name

    def split_indices(self, split: str) -> np.ndarray:
        """Patch indices of one split, int64 (K,)."""
        return np.array([i for i, row in enumerate(self.index) if row["split"] == split], dtype=np.int64)

    def sky(self) -> np.ndarray:
        """Sky level per patch, float32 (N,), electrons."""
        return np.array([row["sky"] for row in self.index], dtype=np.float32)


def ignore_mask(
    sci: np.ndarray, dq: np.ndarray, valid: np.ndarray | None, *, params: PatchParameters
) -> np.ndarray:
    """Pixels excluded from loss and metrics, bool (ny, nx) (see the module docstring)."""
    from scipy.ndimage import binary_dilation

    if params.exclude_dq:
        bad = (dq.astype(np.int64) & ~params.label_dq_bits) != 0
    else:
        bad = np.zeros(sci.shape, dtype=bool)
    bad |= ~np.isfinite(sci)
    if valid is not None:
        bad |= valid == 0
    saturated = np.nan_to_num(sci, nan=0.0) > params.saturation_e
    if saturated.any():
        kernel = np.ones((params.saturation_dilation, params.saturation_dilation), dtype=bool)
        bad |= binary_dilation(saturated, structure=kernel)
    return bad


def patch_origins(shape: tuple[int, int], params: PatchParameters) -> list[tuple[int, int]]:
    """Lower-left corners ``(y0, x0)`` of the non-overlapping patches inside the border."""
    ny, nx = shape
    usable_y, usable_x = ny - 2 * params.border, nx - 2 * params.border
    return [
        (params.border + j * params.patch, params.border + i * params.patch)
        for j in range(max(usable_y // params.patch, 0))
        for i in range(max(usable_x // params.patch, 0))
    ]


def _read_chips(
    exposure: TrainingExposure, extvers: set[int]
) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]]:
    """``(extver, sci, dq, crmask, valid-or-None)`` for the chips ``extvers`` (which have truth)."""
    from astropy.io import fits

    chips = []
    try:
        with (
            fits.open(exposure.flc_path, memmap=False) as flc,
            fits.open(exposure.truth_path, memmap=False) as truth,
        ):
            truth_names = {(h.name, h.ver) for h in truth[1:]}
            for hdu in flc[1:]:
                if hdu.name != "SCI":
                    continue
                extver = hdu.ver
                if extver not in extvers or ("CRMASK", extver) not in truth_names:
                    continue
                sci = np.asarray(hdu.data, dtype=np.float32)
                dq_data = flc["DQ", extver].data if ("DQ", extver) in flc else None
                dq = np.zeros(sci.shape, np.int16) if dq_data is None else np.asarray(dq_data)
                if dq.shape != sci.shape:
                    raise InputDataError(
                        exposure.flc_path,
                        f"DQ,{extver} has shape {dq.shape}, SCI,{extver} {sci.shape}",
                        fix="re-download the exposure",
                    )
                crmask = np.asarray(truth["CRMASK", extver].data)
                valid = np.asarray(truth["VALID", extver].data) if ("VALID", extver) in truth_names else None
                if crmask.shape != sci.shape or (valid is not None and valid.shape != sci.shape):
                    raise InputDataError(
                        exposure.truth_path,
                        f"CRMASK/VALID of chip {extver} has shape {crmask.shape}, "
                        f"the FLC's SCI has {sci.shape}",
                        fix="regenerate the truth file for this exposure",
                    )
                chips.append((extver, sci, dq, crmask, valid))
    except OSError as exc:
        raise InputDataError(exposure.flc_path, f"cannot read FLC/truth pair ({exc})") from None
    if not chips:
        raise InputDataError(exposure.truth_path, "no CRMASK extension matches a SCI extension of the FLC")
    return chips


def _chip_shapes(exposure: TrainingExposure) -> list[tuple[int, tuple[int, int]]]:
    """``(extver, (ny, nx))`` of the SCI arrays that have a CRMASK, from the headers only.

    A SCI extension without an image (``NAXIS`` != 2) has shape ``(0, 0)``.
    """
    from astropy.io import fits

    try:
        with fits.open(exposure.truth_path) as truth:
            extvers = {h.ver for h in truth[1:] if h.name == "CRMASK"}
        with fits.open(exposure.flc_path) as flc:
            return [
                (
                    int(h.ver),
                    (int(h.header["NAXIS2"]), int(h.header["NAXIS1"]))
                    if h.header.get("NAXIS") == 2
                    else (0, 0),
                )
                for h in flc[1:]
                if h.name == "SCI" and h.ver in extvers
            ]
    except (OSError, KeyError) as exc:
        raise InputDataError(exposure.flc_path, f"cannot read FLC/truth headers ({exc})") from None


def too_small_reason(shape: tuple[int, int], params: PatchParameters) -> str | None:
    """Why a chip of ``shape`` gives no patch (smaller than patch + 2 x border), else ``None``."""
    if patch_origins(shape, params):
        return None
    need = params.patch + 2 * params.border
    return (
        f"{shape[0]}x{shape[1]} px chip is smaller than a {params.patch} px patch plus a "
        f"{params.border} px border on each side ({need}x{need} px): skipped"
    )


def dataset_key(
    exposures: Sequence[TrainingExposure], params: PatchParameters, splits: dict[str, dict[str, str]]
) -> str:
    """Hash naming a dataset: inputs (paths, sizes, mtimes), parameters and split assignments."""
    digest = hashlib.sha256(json.dumps(asdict(params), sort_keys=True).encode())
    for exposure in sorted(exposures, key=lambda e: e.rootname):
        stats = [os.stat(p) for p in (exposure.flc_path, exposure.truth_path)]
        digest.update(
            json.dumps(
                [asdict(exposure), [(s.st_size, s.st_mtime_ns) for s in stats], splits[exposure.visit]]
            ).encode()
        )
    return digest.hexdigest()[:16]


def build_patch_dataset(
    exposures: Sequence[TrainingExposure],
    root: Path,
    *,
    params: PatchParameters | None = None,
    fractions: SplitFractions | None = None,
    seed: int = 0,
) -> PatchDataset:
    """Cut exposures into patches once (or reuse the dataset already cut from the same inputs).

    Parameters
    ----------
    exposures
        Training exposures (already filtered to truth status ok and exposure time).
    root
        Datasets directory (``<data_root>/training/datasets``); the persistent visit split file
        ``splits.json`` lives here.
    params
        Patch size, border, DQ rule, saturation handling (default: the ACS/WFC profile's;
        :meth:`PatchParameters.for_profile` for others).
    fractions
        Split fractions for visits seen for the first time.
    seed
        Seeds the placement order of new visits.

    Returns
    -------
    PatchDataset
        Memory-mapped arrays and the per-patch index.

    Raises
    ------
    InputDataError
        No exposures, unreadable files, or no patch fits inside the border.
    """
    params = params or PatchParameters()
    if not exposures:
        raise InputDataError(root, "no training exposures (need truth status ok and exposure time >= 100 s)")
    split_file = root / "splits.json"
    splits = assign_splits(exposures, existing=load_split_file(split_file), fractions=fractions, seed=seed)
    save_split_file(split_file, splits)
    directory = root / dataset_key(exposures, params, splits)
    if (directory / MANIFEST).is_file():
        log.info("reusing patch dataset %s", directory)
        return open_patch_dataset(directory)

    staging = directory.with_name(directory.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    p = params.patch
    wanted: dict[str, set[int]] = {}
    skipped: list[dict[str, Any]] = []
    total = 0
    for exposure in exposures:
        wanted[exposure.rootname] = set()
        for extver, shape in _chip_shapes(exposure):
            reason = too_small_reason(shape, params)
            if reason is None:
                wanted[exposure.rootname].add(extver)
                total += len(patch_origins(shape, params))
                continue
            log.info("%s SCI,%d: %s", exposure.rootname, extver, reason)
            skipped.append(
                {"rootname": exposure.rootname, "chip": extver, "shape": list(shape), "reason": reason}
            )
    if total == 0:
        sizes = ", ".join(
            f"{row['rootname']} SCI,{row['chip']} {row['shape'][0]}x{row['shape'][1]}" for row in skipped
        )
        raise InputDataError(
            exposures[0].flc_path,
            f"no {p}x{p} patch fits inside a {params.border}px border of any chip "
            f"(chips need {p + 2 * params.border}x{p + 2 * params.border} px; got {sizes[:300] or 'none'})",
            fix="use larger images or a smaller border",
        )
    from numpy.lib.format import open_memmap

    images = open_memmap(staging / "images.npy", mode="w+", dtype=np.float32, shape=(total, p, p))
    masks = open_memmap(staging / "masks.npy", mode="w+", dtype=np.uint8, shape=(total, p, p))
    ignores = open_memmap(staging / "ignore.npy", mode="w+", dtype=np.uint8, shape=(total, p, p))
    index: list[dict[str, Any]] = []
    for exposure in exposures:
        split = splits[exposure.visit]["split"]
        if not wanted[exposure.rootname]:
            continue
        for extver, sci, dq, crmask, valid in _read_chips(exposure, wanted[exposure.rootname]):
            ignored = ignore_mask(sci, dq, valid, params=params)
            for y0, x0 in patch_origins(sci.shape, params):
                window = np.s_[y0 : y0 + p, x0 : x0 + p]
                n = len(index)
                images[n] = np.nan_to_num(sci[window], nan=0.0, posinf=0.0, neginf=0.0)
                masks[n] = crmask[window] > 0
                ignores[n] = ignored[window]
                background = images[n][(ignores[n] == 0) & (masks[n] == 0)]
                index.append(
                    {
                        "rootname": exposure.rootname,
                        "visit": exposure.visit,
                        "chip": int(extver),
                        "y0": int(y0),
                        "x0": int(x0),
                        "split": split,
                        "field_type": exposure.field_type,
                        "filter": exposure.filter,
                        "sky": float(np.median(background)) if background.size else 0.0,
                        "cr_pixels": int(masks[n].sum()),
                        "ignored_pixels": int(ignores[n].sum()),
                    }
                )
    for array in (images, masks, ignores):
        array.flush()
    del images, masks, ignores
    counts = {s: sum(1 for row in index if row["split"] == s) for s in SPLITS}
    manifest = {
        "schema": DATASET_SCHEMA,
        "parameters": asdict(params),
        "exposures": [asdict(e) | {"split": splits[e.visit]["split"]} for e in exposures],
        "visits": {e.visit: splits[e.visit] for e in exposures},
        "patches_per_split": counts,
        "skipped_chips": skipped,
        "index": index,
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
    staging.replace(directory)
    log.info("wrote patch dataset %s: %s patches per split", directory, counts)
    return open_patch_dataset(directory)


def open_patch_dataset(directory: Path) -> PatchDataset:
    """Open a written dataset with memory-mapped arrays.

    Raises
    ------
    InputDataError
        If the manifest or an array is missing or inconsistent.
    """
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        if manifest.get("schema") != DATASET_SCHEMA:
            raise ValueError(f"schema {manifest.get('schema')!r}")
        arrays = [np.load(directory / f"{name}.npy", mmap_mode="r") for name in ("images", "masks", "ignore")]
    except (OSError, ValueError, KeyError) as exc:
        raise InputDataError(
            directory, f"not a readable patch dataset ({exc})", fix="delete it to rebuild"
        ) from None
    index = manifest["index"]
    if any(len(a) != len(index) for a in arrays):
        raise InputDataError(
            directory, "array lengths disagree with the manifest", fix="delete it to rebuild"
        )
    return PatchDataset(directory, arrays[0], arrays[1], arrays[2], index, manifest)
