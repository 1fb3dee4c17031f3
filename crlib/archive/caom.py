"""CAOM rows to :class:`~crlib.records.Observation` records, and grouping into visits and sets.

Both backends speak MAST's CAOM vocabulary: observation rows (``obs_id``, ``obsid``,
``proposal_id``, ``t_obs_release`` ...) and product rows (``obsID``, ``productFilename``,
``productSubGroupDescription`` ...). This module turns a product plus its observation row into
one exposure record and groups exposures the way the pipeline needs them.

Field type: every record's ``field_type`` comes from :func:`crlib.classify.metadata.classify_caom_row`
(real MAST rows: ``target_classification``, ``target_name``, ``obs_title`` and the pointing; the
simulator's own ``crlib_field_type`` column only where it is present). Where the metadata cannot
place an exposure the field type stays ``None`` *and says so*: :func:`field_type_label` gives the
label with its method and reasons, and :func:`field_type_summary` counts labels per method so the
poll logs how many exposures still need the image classifier (run after screening).
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from crlib.classify.labels import FieldTypeLabel
from crlib.classify.metadata import classify_caom_row
from crlib.records import Observation

log = logging.getLogger(__name__)

#: Calibrated products in order of preference: CTE-corrected FLC, else FLT.
CALIBRATED_SUFFIXES: tuple[str, ...] = ("FLC", "FLT")

_PRODUCT_NAME = re.compile(r"^(?P<root>[a-z0-9]{9})_(?P<suffix>[a-z0-9]+)\.fits(\.gz)?$")


def visit_of(rootname: str) -> str:
    """Visit id ``ipppss`` of an exposure rootname ``ipppssoo`` (lower case)."""
    return rootname.strip().lower()[:6]


def rootname_of_product(filename: str) -> str | None:
    """Exposure rootname of a product file name such as ``jbt122x8q_flc.fits``; ``None`` if not one."""
    match = _PRODUCT_NAME.match(filename.strip().lower())
    return match.group("root") if match else None


def _float(value: Any, default: float = math.nan) -> float:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return default
    return result


def _int(value: Any, default: int = -1) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return default


def _text(value: Any) -> str:
    if value is None:
        return ""
    text = str(value)
    return "" if text in {"--", "None", "nan"} else text


def select_calibrated_products(products: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Pick one calibrated product per exposure: the FLC, or the FLT where no FLC exists.

    Parameters
    ----------
    products
        MAST product rows (``productFilename``, ``productSubGroupDescription``...).

    Returns
    -------
    dict
        ``{rootname: product row}``.
    """
    chosen: dict[str, Mapping[str, Any]] = {}
    rank: dict[str, int] = {}
    for product in products:
        suffix = _text(product.get("productSubGroupDescription")).upper()
        if suffix not in CALIBRATED_SUFFIXES:
            continue
        rootname = rootname_of_product(_text(product.get("productFilename")))
        if rootname is None:
            continue
        order = CALIBRATED_SUFFIXES.index(suffix)
        if rootname not in chosen or order < rank[rootname]:
            chosen[rootname] = product
            rank[rootname] = order
    return chosen


def field_type_label(observation: Mapping[str, Any]) -> FieldTypeLabel:
    """Field-type label of one CAOM observation row: its type, method and reasons.

    ``simulator`` where the row has the simulator's ``crlib_field_type`` column, else ``metadata``
    from the target classification / name / title / pointing rules, else ``unknown`` (the pipeline
    then asks the image classifier after screening). See :mod:`crlib.classify.metadata`.
    """
    return classify_caom_row(observation)


def field_type_summary(labels: Iterable[FieldTypeLabel]) -> dict[str, int]:
    """``{"<method>:<field type>": count}`` of some labels, e.g. ``{"metadata:globular_cluster": 4}``."""
    return dict(sorted(Counter(f"{label.method}:{label.field_type}" for label in labels).items()))


def observation_from_rows(
    rootname: str,
    observation: Mapping[str, Any],
    product: Mapping[str, Any],
    *,
    product_uri: str,
    label: FieldTypeLabel | None = None,
) -> Observation:
    """Build the exposure record from its CAOM observation row and chosen product row.

    Parameters
    ----------
    rootname
        ``ipppssoo`` (lower case).
    observation
        CAOM observation row (the exposure's own, or its association's).
    product
        Product row of the calibrated file.
    product_uri
        Where the downloader fetches the file (``mast:HST/product/...`` or a local path).
    label
        The row's field-type label if already computed (default: :func:`field_type_label`).

    Notes
    -----
    ``field_type`` is the label of :func:`field_type_label`, ``None`` when it is ``unknown``.
    """
    size = _int(product.get("size"), default=-1)
    md5 = _text(product.get("md5"))
    label = label if label is not None else field_type_label(observation)
    return Observation(
        rootname=rootname,
        proposal_id=_int(observation.get("proposal_id")),
        visit=visit_of(rootname),
        instrument=_text(observation.get("instrument_name")),
        filter=_text(observation.get("filters")).upper(),
        exptime_s=_float(observation.get("t_exptime")),
        t_min_mjd=_float(observation.get("t_min")),
        t_max_mjd=_float(observation.get("t_max")),
        release_mjd=_float(observation.get("t_obs_release")),
        target_name=_text(observation.get("target_name")),
        ra_deg=_float(observation.get("s_ra")),
        dec_deg=_float(observation.get("s_dec")),
        product_filename=_text(product.get("productFilename")),
        product_uri=product_uri,
        size_bytes=size if size >= 0 else None,
        checksum=f"md5:{md5.lower()}" if md5 else None,
        field_type=label.column_value,
        field_type_method=label.method,
    )


def join_products(
    observations: Iterable[Mapping[str, Any]],
    products: Iterable[Mapping[str, Any]],
    *,
    uri_of: Any,
) -> list[Observation]:
    """Exposure records for every observation row that has a calibrated product.

    Products are matched to observation rows by ``obsID`` == ``obsid``; an exposure's own row
    (``obs_id`` == rootname) wins over its association's row.

    Parameters
    ----------
    observations
        CAOM observation rows.
    products
        Product rows of those observations.
    uri_of
        ``callable(product_row) -> str`` giving the fetch URI of a product.

    Returns
    -------
    list of Observation
        Sorted by rootname, one per exposure.
    """
    rows = list(observations)
    by_obsid = {_text(row.get("obsid")): row for row in rows}
    by_obs_id = {_text(row.get("obs_id")).lower(): row for row in rows}
    records: list[Observation] = []
    labels: list[FieldTypeLabel] = []
    for rootname, product in sorted(select_calibrated_products(products).items()):
        row = by_obs_id.get(rootname) or by_obsid.get(_text(product.get("obsID")))
        if row is None:
            continue
        label = field_type_label(row)
        labels.append(label)
        records.append(
            observation_from_rows(rootname, row, product, product_uri=uri_of(product), label=label)
        )
    if labels:
        summary = field_type_summary(labels)
        unknown = sum(1 for label in labels if not label.known)
        log.info("field types of %d exposures: %s", len(labels), summary)
        if unknown:
            log.info("%d exposure(s) have no field type from metadata: the image classifier decides", unknown)
    return records


def group_by_visit(observations: Iterable[Observation]) -> dict[str, tuple[Observation, ...]]:
    """``{visit: exposures}`` sorted by visit and rootname."""
    groups: dict[str, list[Observation]] = defaultdict(list)
    for obs in observations:
        groups[obs.visit].append(obs)
    return {visit: tuple(sorted(groups[visit], key=lambda o: o.rootname)) for visit in sorted(groups)}


def group_by_set(observations: Iterable[Observation]) -> dict[tuple[str, str, str], tuple[Observation, ...]]:
    """``{(visit, instrument/detector, filter): exposures}``: the sets drizzled together."""
    groups: dict[tuple[str, str, str], list[Observation]] = defaultdict(list)
    for obs in observations:
        groups[(obs.visit, obs.instrument, obs.filter)].append(obs)
    return {key: tuple(sorted(groups[key], key=lambda o: o.rootname)) for key in sorted(groups)}
