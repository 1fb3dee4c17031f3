"""Instrument profiles: detector facts as data, not code branches.

A profile names the detector geometry, the header keywords that hold gain and read noise, the
drizzlepac single-visit parameter set, the default deepCR model and threshold, and the
:class:`ScoringRules` (which pixels count when a prediction is scored). Stages look facts up here
instead of testing ``if instrument == ...``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ChipLayout:
    """One CCD chip as it appears in a calibrated (FLC/FLT) file.

    Attributes
    ----------
    sci_extver
        EXTVER of the chip's SCI/ERR/DQ extensions.
    ccdchip
        Value of the ``CCDCHIP`` keyword (ACS/WFC: ``SCI,1`` is chip 2, "WFC2").
    name
        Human name, e.g. ``WFC2``.
    amps
        Amplifier letters reading the left (low x) and right half of the chip.
    """

    sci_extver: int
    ccdchip: int
    name: str
    amps: tuple[str, str]


#: DQ bits that mark cosmic rays (4096 AstroDrizzle, 8192 calacs CR-SPLIT): labels, not defects.
CR_DQ_BITS = 4096 | 8192


@dataclass(frozen=True, slots=True)
class ScoringRules:
    """Which pixels of a chip count when a prediction is scored (the deepCR-ACS/WFC paper's rules).

    The same rules serve pipeline scoring (:func:`crlib.pipeline.stages.score_exposure`),
    ``crlib bench accuracy`` and, as :class:`crlib.training.patches.PatchParameters`'
    ``border`` and ignore mask, training and the promotion gate. Each metrics row records the
    border and whether DQ flags were excluded.

    Attributes
    ----------
    border_px
        Pixels discarded along every chip edge (paper: 128). A chip not larger than twice the
        border in both axes has no pixel left and is left out of the score.
    exclude_dq
        Leave out pixels whose FLC ``DQ`` has a bit set other than :attr:`label_dq_bits` (paper:
        "DQ-flagged pixels excluded from loss and metrics"). The truth product's ``VALID`` mask
        is always applied as well.
    label_dq_bits
        DQ bits that do not exclude a pixel: the CR flags, which are what is being measured.
    """

    border_px: int = 128
    exclude_dq: bool = True
    label_dq_bits: int = CR_DQ_BITS

    def __post_init__(self) -> None:
        if self.border_px < 0:
            raise ValueError(f"border_px must be >= 0, got {self.border_px}")

    def describe(self) -> str:
        """E.g. ``border 128 px, DQ-flagged pixels excluded``."""
        dq = "DQ-flagged pixels excluded" if self.exclude_dq else "DQ flags not applied"
        return f"border {self.border_px} px, {dq}"


#: No rule beyond the truth's own valid mask (scoring as before the rules existed).
NO_SCORING_RULES = ScoringRules(border_px=0, exclude_dq=False)


@dataclass(frozen=True, slots=True)
class InstrumentProfile:
    """Everything crlib needs to know about one instrument/detector.

    Attributes
    ----------
    name
        Profile key, e.g. ``acs_wfc``.
    instrume, detector
        Primary-header ``INSTRUME`` / ``DETECTOR`` values that files must carry.
    mast_instrument_name
        CAOM ``instrument_name`` used to query MAST.
    chip_shape
        Shape (ny, nx) in pixels of one chip's SCI array.
    chips
        Chip layouts in file order.
    pixel_size_um
        Physical pixel pitch in micrometres (for CR rates per cm²).
    plate_scale_arcsec
        Approximate pixel scale in arcsec/pixel.
    saturation_e
        Level above which a pixel is treated as saturated, electrons (deepCR-ACS/WFC paper: 70000).
    cr_rate_per_cm2_s
        Expected on-orbit cosmic-ray event rate, events cm⁻² s⁻¹.
    drizzle_parset_prefix
        Prefix of drizzlepac's single-visit parameter JSON files (``<prefix>_astrodrizzle_any_n2.json``).
    deepcr_model
        Default deepCR mask model name (global model).
    deepcr_filter_models
        Filters that have a dedicated deepCR model file ``<deepcr_model>-<FILTER>.pth``.
    threshold
        Default probability threshold for the binary mask.
    template_header
        Package data file used by the simulator, or ``None`` if the simulator cannot build this profile.
    scoring
        Which pixels count in scores (:class:`ScoringRules`; the paper's 128-px border and DQ
        exclusion).
    """

    name: str
    instrume: str
    detector: str
    mast_instrument_name: str
    chip_shape: tuple[int, int]
    chips: tuple[ChipLayout, ...]
    pixel_size_um: float
    plate_scale_arcsec: float
    saturation_e: float
    cr_rate_per_cm2_s: float
    drizzle_parset_prefix: str
    deepcr_model: str
    deepcr_filter_models: tuple[str, ...] = ()
    threshold: float = 0.5
    template_header: str | None = None
    gain_keywords: tuple[str, ...] = ("ATODGNA", "ATODGNB", "ATODGNC", "ATODGND")
    readnoise_keywords: tuple[str, ...] = ("READNSEA", "READNSEB", "READNSEC", "READNSED")
    extra: dict[str, str] = field(default_factory=dict)
    scoring: ScoringRules = field(default_factory=ScoringRules)

    @property
    def pixel_area_cm2(self) -> float:
        """Area of one pixel in cm²."""
        return (self.pixel_size_um * 1e-4) ** 2

    def template_path(self) -> Path:
        """Path of the packaged template header for the simulator.

        Raises
        ------
        LookupError
            If this profile ships no template.
        """
        if self.template_header is None:
            raise LookupError(f"instrument profile {self.name!r} ships no template header for simulation")
        return Path(str(files("crlib") / "data" / self.template_header))

    def chip(self, sci_extver: int) -> ChipLayout:
        """Chip layout for a SCI extension version."""
        for chip in self.chips:
            if chip.sci_extver == sci_extver:
                return chip
        raise KeyError(f"{self.name}: no chip with SCI extver {sci_extver}")


ACS_WFC = InstrumentProfile(
    name="acs_wfc",
    instrume="ACS",
    detector="WFC",
    mast_instrument_name="ACS/WFC",
    chip_shape=(2048, 4096),
    chips=(
        ChipLayout(sci_extver=1, ccdchip=2, name="WFC2", amps=("C", "D")),
        ChipLayout(sci_extver=2, ccdchip=1, name="WFC1", amps=("A", "B")),
    ),
    pixel_size_um=15.0,
    plate_scale_arcsec=0.05,
    saturation_e=70000.0,
    cr_rate_per_cm2_s=1.2,
    drizzle_parset_prefix="acs_wfc",
    deepcr_model="ACS-WFC",
    deepcr_filter_models=("F435W", "F606W", "F814W"),
    threshold=0.5,
    template_header="jbt122x8q_sample_flc_header.fits",
)

WFC3_UVIS = InstrumentProfile(
    name="wfc3_uvis",
    instrume="WFC3",
    detector="UVIS",
    mast_instrument_name="WFC3/UVIS",
    chip_shape=(2051, 4096),
    chips=(
        ChipLayout(sci_extver=1, ccdchip=2, name="UVIS2", amps=("C", "D")),
        ChipLayout(sci_extver=2, ccdchip=1, name="UVIS1", amps=("A", "B")),
    ),
    pixel_size_um=15.0,
    plate_scale_arcsec=0.0395,
    saturation_e=63000.0,
    cr_rate_per_cm2_s=1.2,
    drizzle_parset_prefix="wfc3_uvis",
    deepcr_model="WFC3-UVIS",
    deepcr_filter_models=(),
    threshold=0.5,
    template_header=None,
)

PROFILES: dict[str, InstrumentProfile] = {p.name: p for p in (ACS_WFC, WFC3_UVIS)}

FIELD_TYPES: tuple[str, ...] = ("globular_cluster", "extragalactic", "resolved_galaxy")


def get_profile(name: str) -> InstrumentProfile:
    """Look up a profile by name (``acs_wfc``, ``ACS/WFC``, ``wfc3_uvis`` ...).

    Raises
    ------
    KeyError
        Naming the known profiles.
    """
    key = name.lower().replace("/", "_")
    try:
        return PROFILES[key]
    except KeyError:
        raise KeyError(f"unknown instrument profile {name!r}; known: {sorted(PROFILES)}") from None


def profile_for_header(instrume: str, detector: str) -> InstrumentProfile | None:
    """Profile matching a primary header's INSTRUME/DETECTOR, or ``None``."""
    for profile in PROFILES.values():
        if profile.instrume == instrume.strip().upper() and profile.detector == detector.strip().upper():
            return profile
    return None
