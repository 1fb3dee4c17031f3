"""Observation metadata for simulated visits: filters, proposals, targets and rootnames.

Everything here is data: ACS/WFC filter-wheel positions and approximate photometry, the
deepCR-ACS/WFC test set's real ``proposal_visit`` keys per field type (transcribed from
``deepcr_meta/deepcr_acswfc_test_fields.json``), typical targets, and the HST ``ipppssoo``
rootname convention.
"""

from __future__ import annotations

from dataclasses import dataclass

from crlib.errors import ConfigError

BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True, slots=True)
class FilterSpec:
    """Approximate ACS/WFC photometry of one filter.

    Attributes
    ----------
    name
        Filter name, e.g. ``F606W``.
    wheel
        Filter wheel (1 or 2) holding it; the other wheel is ``CLEAR1L``/``CLEAR2L``.
    ab_zeropoint
        AB magnitude giving 1 e-/s.
    photflam
        Inverse sensitivity, erg cm⁻² Å⁻¹ per electron.
    pivot_angstrom, bandwidth_angstrom
        Pivot wavelength and RMS bandwidth, Å.
    sky_e_per_s
        Typical zodiacal + earthshine sky, e- s⁻¹ pixel⁻¹.
    psf_fwhm_px
        FWHM of the Moffat core approximating the PSF, pixels.
    """

    name: str
    wheel: int
    ab_zeropoint: float
    photflam: float
    pivot_angstrom: float
    bandwidth_angstrom: float
    sky_e_per_s: float
    psf_fwhm_px: float

    def header_filters(self) -> tuple[str, str]:
        """``(FILTER1, FILTER2)`` as ACS writes them."""
        return (self.name, "CLEAR2L") if self.wheel == 1 else ("CLEAR1L", self.name)


FILTERS: dict[str, FilterSpec] = {
    spec.name: spec
    for spec in (
        FilterSpec("F435W", 2, 25.66, 3.13e-19, 4330.0, 293.0, 0.035, 2.0),
        FilterSpec("F475W", 1, 26.06, 1.82e-19, 4747.0, 420.0, 0.070, 2.0),
        FilterSpec("F555W", 1, 25.72, 1.96e-19, 5361.0, 360.0, 0.065, 2.0),
        FilterSpec("F606W", 1, 26.50, 7.86e-20, 5922.0, 672.0, 0.110, 2.0),
        FilterSpec("F625W", 1, 25.90, 1.18e-19, 6311.0, 415.0, 0.085, 2.1),
        FilterSpec("F775W", 1, 25.66, 9.95e-20, 7693.0, 434.0, 0.080, 2.2),
        FilterSpec("F814W", 2, 25.94, 7.08e-20, 8045.0, 653.0, 0.100, 2.2),
        FilterSpec("F850LP", 1, 24.84, 1.51e-19, 9033.0, 526.0, 0.050, 2.5),
    )
}

#: deepCR-ACS/WFC test-set ``(proposal, visit)`` keys per field type (real HST ids).
PROGRAM_VISITS: dict[str, tuple[tuple[int, str], ...]] = {
    "globular_cluster": (
        (10595, "02"),
        (10595, "07"),
        (9442, "01"),
        (9442, "03"),
        (9442, "05"),
        (10349, "30"),
        (10005, "10"),
        (10120, "03"),
        (10524, "07"),
        (11340, "11"),
        (10146, "04"),
        (10146, "03"),
        (10775, "ab"),
        (11586, "05"),
        (14164, "01"),
        (10775, "52"),
        (12602, "01"),
        (12602, "02"),
        (10775, "29"),
        (10775, "ad"),
    ),
    "extragalactic": (
        (10631, "03"),
        (10631, "01"),
        (10631, "04"),
        (12103, "a3"),
        (13498, "b1"),
        (14164, "09"),
        (13718, "06"),
        (9425, "02"),
        (9425, "04"),
        (9583, "99"),
        (9978, "5e"),
        (15100, "02"),
        (15647, "13"),
        (13389, "10"),
        (9694, "06"),
        (10536, "13"),
        (13375, "04"),
        (13375, "07"),
        (12438, "01"),
        (13671, "35"),
        (9405, "6d"),
        (9405, "4b"),
        (9450, "14"),
        (10092, "01"),
        (9450, "16"),
    ),
    "resolved_galaxy": (
        (10760, "02"),
        (10760, "04"),
        (13737, "02"),
        (13737, "03"),
        (9490, "a3"),
        (12513, "02"),
        (12513, "03"),
        (10182, "pb"),
        (10182, "pd"),
        (10584, "13"),
        (10342, "03"),
        (14343, "01"),
        (13057, "01"),
        (10260, "07"),
        (10260, "05"),
        (10407, "03"),
        (13364, "95"),
        (10190, "28"),
        (10190, "13"),
        (9490, "a2"),
        (13691, "11"),
        (12058, "12"),
        (12058, "16"),
        (12058, "01"),
        (12058, "06"),
        (14704, "01"),
        (13804, "06"),
    ),
}


@dataclass(frozen=True, slots=True)
class Target:
    """A named pointing (J2000 degrees)."""

    name: str
    ra_deg: float
    dec_deg: float


#: Typical targets per field type; the simulator scatters pointings a few arcmin around them.
TARGETS: dict[str, tuple[Target, ...]] = {
    "globular_cluster": (
        Target("NGC104", 6.0236, -72.0813),
        Target("NGC6397", 265.1754, -53.6743),
        Target("NGC6752", 287.7171, -59.9846),
        Target("M4", 245.8968, -26.5258),
    ),
    "extragalactic": (
        Target("HUDF-PAR2", 53.1590, -27.7800),
        Target("GOODS-N", 189.2283, 62.2380),
        Target("COSMOS-F12", 150.1192, 2.2058),
        Target("EGS-F3", 214.8250, 52.8250),
    ),
    "resolved_galaxy": (
        Target("M31-DISK", 10.9500, 41.5000),
        Target("NGC300", 13.7229, -37.6844),
        Target("M33-FIELD1", 23.4621, 30.6602),
        Target("NGC4258", 184.7396, 47.3040),
    ),
}

GAIA_FIELD_TARGET = "NGC6791"


def filter_spec(name: str) -> FilterSpec:
    """Look up a filter, raising :class:`ConfigError` naming the known ones."""
    spec = FILTERS.get(name.strip().upper())
    if spec is None:
        raise ConfigError(f"unknown ACS/WFC filter {name!r}; choose one of {', '.join(FILTERS)}")
    return spec


def base36(value: int, width: int) -> str:
    """Encode a non-negative integer in ``width`` lower-case base-36 digits.

    Raises
    ------
    ValueError
        If ``value`` does not fit.
    """
    if value < 0 or value >= 36**width:
        raise ValueError(f"{value} does not fit in {width} base-36 digits")
    digits = []
    for _ in range(width):
        value, rest = divmod(value, 36)
        digits.append(BASE36[rest])
    return "".join(reversed(digits))


def program_code(proposal_id: int) -> str:
    """Three-character program code for a proposal (base 36 of the proposal id)."""
    return base36(proposal_id, 3)


def visit_name(proposal_id: int, visit_code: str) -> str:
    """Visit id ``j`` + program code + 2-char visit, e.g. ``j86b02``."""
    return f"j{program_code(proposal_id)}{visit_code.lower()}"


def rootname(visit: str, exposure_index: int) -> str:
    """Exposure rootname ``<visit><2-char exposure>q`` (ipppssoo + ``q`` for ACS)."""
    return f"{visit}{base36(exposure_index + 1, 2)}q"
