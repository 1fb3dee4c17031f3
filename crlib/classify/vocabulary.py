"""Vocabulary behind the metadata rules: HST target categories, catalogue names, nearby galaxies.

Data only (no logic): :mod:`crlib.classify.metadata` applies it. Sources:

* Target categories and descriptive keywords of the HST Phase II Proposal Instructions (chapter 3,
  "Target Category and Target Description"): ``STAR``, ``EXT-STAR`` (star in an external galaxy),
  ``STELLAR CLUSTER``, ``EXT-CLUSTER`` (star cluster in an external galaxy), ``GALAXY``,
  ``CLUSTER OF GALAXIES``, ``ISM``, ``EXT-MEDIUM``, ``UNIDENTIFIED``, ``CALIBRATION``, ``SOLAR
  SYSTEM`` and their keywords (``GLOBULAR CLUSTER``, ``OPEN CLUSTER``, ``PARALLEL FIELD``, ...).
  MAST's CAOM ``target_classification`` carries these (semicolon-separated, sometimes in plural
  forms such as ``STAR CLUSTERS;GLOBULAR CLUSTERS`` or ``ACTIVE GALAXIES;GALAXIES;STARS``).
* Galactic globular clusters: the NGC/IC/Messier numbers and common names of the Harris (1996,
  2010 edition) catalogue.
* Nearby galaxies resolved into stars by ACS/WFC (the Local Group and galaxies within ~10 Mpc,
  e.g. the ANGST, PHAT, LEGUS and GHOSTS targets), and the optical extent (approximate RC3 D25
  ellipses) of the few whose disks are larger than an ACS/WFC field, so that a pointing inside one
  counts as evidence even when the target name is generic (parallel fields, ``ANY``).
* Extragalactic fields: deep-field survey names and galaxy-cluster catalogue prefixes.

Weights are the strength of one piece of evidence, in [0, 1]; see :mod:`crlib.classify.metadata`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Label of evidence that a target is none of the paper's field types (a Galactic star, nebula...).
OTHER = "other"

#: Plural / variant forms of classification words, mapped to one spelling.
WORD_FORMS: dict[str, str] = {
    "GALAXIES": "GALAXY",
    "CLUSTERS": "CLUSTER",
    "STARS": "STAR",
    "QSOS": "QSO",
    "QUASARS": "QUASAR",
    "FIELDS": "FIELD",
    "NEBULAE": "NEBULA",
    "NUCLEI": "NUCLEUS",
    "REMNANTS": "REMNANT",
    "SUPERNOVAE": "SUPERNOVA",
    "LENSES": "LENS",
    "PLANETS": "PLANET",
    "COMETS": "COMET",
    "ASTEROIDS": "ASTEROID",
    "SATELLITES": "SATELLITE",
    "DWARFS": "DWARF",
    "ASSOCIATIONS": "ASSOCIATION",
    "REDSHIFT": "REDSHIFT",
    "HIGH-Z": "HIGH-REDSHIFT",
}


@dataclass(frozen=True, slots=True)
class WordRule:
    """Evidence from a classification string: all ``words`` present and none of ``unless``.

    Attributes
    ----------
    words
        Normalised words that must all appear (in any order: MAST and ESA sometimes reorder them).
    label
        A field type, or :data:`OTHER`.
    weight
        Strength of the evidence, [0, 1].
    text
        What the rule recognised, for the label's reasons.
    unless
        Words that switch the rule off (e.g. ``STAR`` is not a Galactic star next to ``GALAXY``).
    """

    words: frozenset[str]
    label: str
    weight: float
    text: str
    unless: frozenset[str] = frozenset()


def _rule(words: str, label: str, weight: float, text: str, unless: str = "") -> WordRule:
    return WordRule(frozenset(words.split()), label, weight, text, frozenset(unless.split()))


_NOT_GALACTIC = "GALAXY EXT-STAR EXT-CLUSTER EXT-MEDIUM QSO QUASAR CLUSTER"
_NOT_GLOBULAR = "OPEN EXT-CLUSTER GLOBULAR GALAXY"

#: Rules over the words of ``target_classification`` (HST Phase II categories and keywords).
CLASSIFICATION_RULES: tuple[WordRule, ...] = (
    _rule("GLOBULAR", "globular_cluster", 0.9, "globular cluster", unless="EXT-CLUSTER GALAXY"),
    _rule("STELLAR CLUSTER", "globular_cluster", 0.5, "Galactic star cluster", _NOT_GLOBULAR),
    _rule("STAR CLUSTER", "globular_cluster", 0.5, "Galactic star cluster", _NOT_GLOBULAR),
    _rule("OPEN CLUSTER", OTHER, 0.8, "open cluster"),
    _rule("ASSOCIATION", OTHER, 0.5, "stellar association", unless="EXT-CLUSTER GALAXY"),
    _rule("EXT-CLUSTER", "resolved_galaxy", 0.65, "star cluster in an external galaxy"),
    _rule("EXT-STAR", "resolved_galaxy", 0.65, "star in an external galaxy"),
    _rule("EXT-MEDIUM", "resolved_galaxy", 0.6, "interstellar medium of an external galaxy"),
    _rule("DWARF SPHEROIDAL", "resolved_galaxy", 0.5, "dwarf spheroidal galaxy"),
    _rule("DSPH", "resolved_galaxy", 0.5, "dwarf spheroidal galaxy"),
    _rule("LOCAL GROUP", "resolved_galaxy", 0.6, "Local Group galaxy"),
    _rule("CLUSTER OF GALAXY", "extragalactic", 0.9, "cluster of galaxies"),
    _rule("HIGH-REDSHIFT", "extragalactic", 0.7, "high-redshift target"),
    _rule("HIGH REDSHIFT", "extragalactic", 0.7, "high-redshift target"),
    _rule("DEEP FIELD", "extragalactic", 0.8, "deep field"),
    _rule("PARALLEL", "extragalactic", 0.5, "pure-parallel field"),
    _rule("GRAVITATIONAL", "extragalactic", 0.6, "gravitational lens"),
    _rule("LENSED", "extragalactic", 0.6, "gravitationally lensed source"),
    _rule("QSO", "extragalactic", 0.6, "quasar"),
    _rule("QUASAR", "extragalactic", 0.6, "quasar"),
    _rule("GAMMA-RAY BURST", "extragalactic", 0.6, "gamma-ray burst host"),
    _rule("ACTIVE GALAXY", "extragalactic", 0.4, "active galaxy"),
    _rule("SEYFERT", "extragalactic", 0.4, "Seyfert galaxy"),
    _rule("AGN", "extragalactic", 0.4, "active galactic nucleus"),
    _rule("STAR", OTHER, 0.3, "Galactic star", unless=_NOT_GALACTIC),
    _rule("ISM", OTHER, 0.3, "Galactic interstellar medium", unless=_NOT_GALACTIC),
    _rule("NEBULA", OTHER, 0.3, "Galactic nebula", unless=_NOT_GALACTIC),
)

#: Classification words of targets that are not sky fields at all: always ``unknown``.
NOT_A_FIELD_WORDS: dict[str, str] = {
    "CALIBRATION": "a calibration target",
    "SOLAR": "a solar-system target",
    "PLANET": "a solar-system target",
    "COMET": "a solar-system target",
    "ASTEROID": "a solar-system target",
    "SATELLITE": "a solar-system target",
    "KUIPER": "a solar-system target",
}

#: Classification word that makes a target a galaxy whose distance only the name can tell.
GALAXY_WORD = "GALAXY"


# ----------------------------------------------------------------------------- catalogue numbers
def _numbers(text: str) -> frozenset[int]:
    return frozenset(int(word) for word in text.split())


#: NGC numbers of Galactic globular clusters (Harris catalogue).
GC_NGC: frozenset[int] = _numbers(
    """104 288 362 1261 1851 1904 2298 2419 2808 3201 4147 4372 4590 4833 5024 5053 5139
    5272 5286 5466 5634 5694 5824 5897 5904 5927 5946 5986 6093 6101 6121 6139 6144 6171 6205 6218
    6229 6235 6254 6256 6266 6273 6284 6287 6293 6304 6316 6325 6333 6341 6342 6352 6355 6356 6362
    6366 6380 6388 6397 6401 6402 6426 6440 6441 6453 6496 6517 6522 6528 6535 6539 6540 6541 6544
    6553 6558 6569 6584 6624 6626 6637 6638 6642 6652 6656 6681 6712 6715 6717 6723 6749 6752 6760
    6779 6809 6838 6864 6934 6981 7006 7078 7089 7099 7492"""
)
#: IC numbers of Galactic globular clusters.
GC_IC: frozenset[int] = frozenset({1257, 1276, 4499})
#: Messier numbers of Galactic globular clusters.
GC_MESSIER: frozenset[int] = frozenset(
    {2, 3, 4, 5, 9, 10, 12, 13, 14, 15, 19, 22, 28, 30, 53, 54, 55, 56, 62, 68, 69, 70, 71, 72, 75}
    | {79, 80, 92, 107}
)

#: NGC numbers of galaxies within ~10 Mpc that ACS/WFC resolves into stars.
NEARBY_NGC: frozenset[int] = _numbers(
    """55 147 185 205 221 224 247 253 300 404 598 625 628 891 925 1313 1569 1705 2366 2403
    2903 2976 3031 3034 3077 3109 3115 3351 3368 3379 3621 3627 3738 4068 4163 4214 4236 4244 4258
    4395 4449 4490 4559 4594 4605 4631 4656 4736 4826 5023 5102 5128 5194 5195 5204 5236 5238 5253
    5457 5474 5585 6503 6822 6946 7090 7793"""
)
#: IC numbers of nearby resolved galaxies.
NEARBY_IC: frozenset[int] = frozenset({10, 342, 1613, 2574, 4662, 5152})
#: Messier numbers of nearby resolved galaxies.
NEARBY_MESSIER: frozenset[int] = frozenset(
    {31, 32, 33, 51, 63, 64, 66, 74, 81, 82, 83, 94, 95, 96, 101, 104, 105, 106, 110}
)

#: ``NGC 104``, ``NGC0104``, ``NGC-104-WFC``, ``M31-DISK``, ``IC1613`` ...
CATALOGUE_NAME = re.compile(r"^(?P<cat>NGC|IC|MESSIER|M)-?0*(?P<num>\d+)(?![0-9])")


@dataclass(frozen=True, slots=True)
class EvidenceRule:
    """Evidence for field type ``label`` from a text (target name, proposal title) matching ``pattern``.

    Attributes
    ----------
    pattern
        Searched in the upper-case text (target names: normalised, hyphenated).
    label
        Field type the match speaks for.
    weight
        Weight of the evidence when the pattern matches.
    text
        What the match means, for the reason given to the user.
    """

    pattern: re.Pattern[str]
    label: str
    weight: float
    text: str


def _name(pattern: str, label: str, weight: float, text: str) -> EvidenceRule:
    return EvidenceRule(re.compile(pattern), label, weight, text)


#: Name rules (HST target names: upper case, no blanks, hyphens between words).
NAME_RULES: tuple[EvidenceRule, ...] = (
    _name(
        r"^(47-?TUC|OMEGA-?CEN|PAL(OMAR)?-?\d+|TERZAN-?\d+|TER-?\d+(?![0-9])|DJORG(OVSKI)?-?[12]|E-?3$|"
        r"ARP-?2$|PYXIS|ERIDANUS|LILLER-?1|RUP(RECHT)?-?106|WHITING-?1|LYNGA-?7|BH-?(176|261)|HP-?1$|"
        r"2MASS-?GC0[12]|GLIMPSE-?C0[12]|UKS-?1$|AM-?[14]$|FSR-?1735|ESO-?452-?SC11|ESO-?280-?SC06)",
        "globular_cluster",
        0.85,
        "a Galactic globular cluster",
    ),
    _name(
        r"^(LMC|SMC|LARGE-?MAGELLANIC|SMALL-?MAGELLANIC|ANDROMEDA|AND-?[IVX]+(?![A-Z])|WLM|"
        r"LEO-?(A|I|II|P|T)(?![A-Z])|SEXTANS-?[AB]?(?![A-Z])|SEX-?[AB](?![A-Z])|DRACO|URSA-?MINOR|"
        r"UMI(?![A-Z])|SAG-?DIG|SGR-?(DSPH|DIG)|PEG-?DIG|GR-?8(?![0-9])|LGS-?3|HOLMBERG-?(I|II|IX)|"
        r"HO-?(I|II|IX)(?![A-Z])|DDO-?\d+|KKH?-?\d+|(SCULPTOR|CARINA|FORNAX|PHOENIX|TUCANA|CETUS|"
        r"ANTLIA|AQUARIUS|PEGASUS|BOOTES|HERCULES)-?(DSPH|DWARF|DIRR))",
        "resolved_galaxy",
        0.75,
        "a nearby galaxy resolved into stars",
    ),
    _name(
        r"^(HUDF|UDF|XDF|HDF|GOODS|CDF-?S|E-?CDF-?S|ECDFS|COSMOS|EGS|AEGIS|GROTH|UDS|UKIDSS|CANDELS|"
        r"GEMS|SSA-?22|LOCKMAN|ELAIS|XMM-?LSS|SXD[SF]|BORG|HIPPIES|WISP|HFF|FRONTIER|DEEP-?FIELD|"
        r"HI-?LAT|HIGH-?LAT|MDS(?![A-Z]))",
        "extragalactic",
        0.85,
        "a deep extragalactic field",
    ),
    _name(
        r"^(ABELL|ACO-?\d|A-?\d{2,4}(?![0-9]|[-+]\d)|AS-?\d{3,4}(?![0-9])|MACS|CL-?J?\d{4}|MS-?\d{4}|"
        r"ZW-?CL|SPT-?CL|ACT-?CL|PLCK|RCS2?-?\d|XMMXCS|XMMU|BULLET|EL-?GORDO|IDCS|JKCS|XLSS|WARPS)",
        "extragalactic",
        0.85,
        "a cluster of galaxies",
    ),
    _name(r"^RXC?-?J\d{4}", "extragalactic", 0.6, "an X-ray cluster (RX J)"),
    _name(r"(^(PAR|PARALLEL|PURE-?PAR)(-|\d|$)|^ANY$|-PAR\d*$)", "extragalactic", 0.5, "a parallel field"),
    _name(r"^(QSO|Q-?\d{4}[-+]|PKS-?\d{4}|3C-?\d+|GRB)", "extragalactic", 0.5, "a quasar or GRB field"),
)

#: Target names of calibration exposures (never a sky field).
CALIBRATION_NAME = re.compile(
    r"^(BIAS|DARK|(INT|VIS|UV|CCD|SKY)?-?FLAT|KSPOTS|EARTH(-?CALIB)?|WAVE|NONE|TUNGSTEN|DEUTERIUM|"
    r"POST-?SAA-?DARK)(-|$)"
)
#: Target names that say the field is at low Galactic latitude.
LOW_LATITUDE_NAME = re.compile(r"^(LO|LOW)-?LAT")


def _title(pattern: str, label: str, text: str, weight: float = 0.35) -> EvidenceRule:
    return EvidenceRule(re.compile(pattern), label, weight, text)


#: Title rules: weak evidence from the proposal title (CAOM ``obs_title``).
TITLE_RULES: tuple[EvidenceRule, ...] = (
    _title(r"\bGLOBULAR CLUSTERS?\b", "globular_cluster", "title names globular clusters"),
    _title(
        r"\b(DEEP (FIELD|SURVEY)|MEDIUM[- ]DEEP|ULTRA[- ]DEEP|HIGH[- ]REDSHIFT|CLUSTERS? OF GALAXIES|"
        r"GALAXY CLUSTERS?|LENSING|PARALLEL|FRONTIER FIELDS?|CANDELS|COSMOS|GOODS|QUASARS?|QSOS?)\b",
        "extragalactic",
        "title names an extragalactic survey",
    ),
    _title(
        r"\b(NEARBY GALAX\w*|LOCAL GROUP|RESOLVED STELLAR|M31\w*|ANDROMEDA|M33|MAGELLANIC|LMC|SMC)\b",
        "resolved_galaxy",
        "title names nearby resolved galaxies",
    ),
)
#: Proposal titles that say the field is at low Galactic latitude.
LOW_LATITUDE_TITLE = re.compile(r"\bLOW (GAL(\.|ACTIC)? ?)?LAT")


@dataclass(frozen=True, slots=True)
class GalaxyExtent:
    """Approximate optical extent (RC3 D25 ellipse) of a nearby galaxy larger than an ACS field.

    Attributes
    ----------
    name
        Common name.
    ra_deg, dec_deg
        Centre, J2000 degrees.
    semi_major_arcmin
        Half the D25 major axis, arcmin.
    axis_ratio
        Minor / major axis.
    pa_deg
        Position angle of the major axis, degrees east of north.
    """

    name: str
    ra_deg: float
    dec_deg: float
    semi_major_arcmin: float
    axis_ratio: float
    pa_deg: float


NEARBY_GALAXY_EXTENTS: tuple[GalaxyExtent, ...] = (
    GalaxyExtent("LMC", 80.894, -69.756, 323.0, 0.85, 170.0),
    GalaxyExtent("SMC", 13.187, -72.829, 160.0, 0.58, 45.0),
    GalaxyExtent("M31", 10.6847, 41.2690, 95.0, 0.32, 35.0),
    GalaxyExtent("M33", 23.4621, 30.6599, 35.4, 0.59, 23.0),
    GalaxyExtent("NGC 55", 3.7233, -39.1967, 16.2, 0.17, 108.0),
    GalaxyExtent("NGC 253", 11.8880, -25.2883, 13.8, 0.25, 52.0),
    GalaxyExtent("NGC 300", 13.7229, -37.6844, 11.0, 0.71, 111.0),
    GalaxyExtent("IC 1613", 16.1992, 2.1178, 8.1, 0.89, 50.0),
    GalaxyExtent("NGC 2403", 114.2142, 65.6026, 11.0, 0.56, 127.0),
    GalaxyExtent("M81", 148.8882, 69.0653, 13.5, 0.52, 157.0),
    GalaxyExtent("NGC 4258", 184.7396, 47.3040, 9.3, 0.39, 150.0),
    GalaxyExtent("NGC 5128", 201.3651, -43.0191, 12.9, 0.78, 35.0),
    GalaxyExtent("M51", 202.4696, 47.1952, 5.6, 0.62, 163.0),
    GalaxyExtent("M83", 204.2538, -29.8658, 6.5, 0.89, 45.0),
    GalaxyExtent("M101", 210.8024, 54.3488, 14.4, 0.93, 28.0),
    GalaxyExtent("NGC 6822", 296.2358, -14.8031, 7.8, 0.87, 5.0),
)

#: Below this Galactic latitude (degrees) a field is crowded with Milky Way stars: never labelled
#: ``extragalactic`` from metadata alone.
LOW_LATITUDE_DEG = 15.0
