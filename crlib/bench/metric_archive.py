"""A synthetic results archive for ``crlib bench db``: exposures, CR statistics and metrics at full scale.

:func:`generate_archive` fills a scratch database server-side (``generate_series``): exposures (4
per visit, 200 per proposal, 2002-2024, seven filters, three field types), two chips of CR
statistics each, and one metrics row each whose histograms are copied from :data:`N_TEMPLATES`
synthetic templates with the magnitudes of a full ACS/WFC exposure (1.6e7 valid pixels, 1% CR);
:func:`synthetic_metrics` makes metrics records as the scoring stage does (histograms as tuples of
ints).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

BENCH_FILTERS = ("F435W", "F475W", "F555W", "F606W", "F775W", "F814W", "F850LP")


N_TEMPLATES = 64


#: Valid pixels of a full ACS/WFC exposure (two 2048 x 4096 chips).
FULL_EXPOSURE_PIXELS = 16_000_000


def synthetic_histograms(
    rng: np.random.Generator, bins: int, *, pixels: int = FULL_EXPOSURE_PIXELS, cr_fraction: float = 0.01
) -> np.ndarray:
    """``(4, bins)`` counts shaped like one exposure's: CR, non-CR, dilated CR, dilated non-CR.

    Non-CR pixels pile up in the lowest-probability bin with an exponential tail; CR pixels rise
    toward high probabilities with a spike in the top bin. Dilation (a 3x3 maximum filter of the
    probabilities) moves pixels to higher bins: a third of the lowest bin spreads into the tail.
    Counts are Poisson draws, so (like real histograms) almost every bin is non-zero.
    """
    b = np.arange(bins, dtype=np.float64)

    def draw(total: float, shape: np.ndarray) -> np.ndarray:
        return rng.poisson(total * shape / shape.sum())

    tail = np.exp(-b / (0.08 * bins))
    noncr_shape = tail.copy()
    noncr_shape[0] += 4.0 * tail.sum()
    noncr_dilated_shape = np.exp(-b / (0.12 * bins))
    noncr_dilated_shape[0] += 1.5 * noncr_dilated_shape.sum()
    cr_shape = 0.2 + 20.0 * (b / bins) ** 4
    cr_shape[-1] += 0.3 * cr_shape.sum()
    cr_dilated_shape = 0.1 + 20.0 * (b / bins) ** 6
    cr_dilated_shape[-1] += 0.5 * cr_dilated_shape.sum()
    n_noncr = pixels * (1.0 - cr_fraction)
    n_cr = pixels * cr_fraction
    hists = [
        draw(n_cr, cr_shape),
        draw(n_noncr, noncr_shape),
        draw(n_cr, cr_dilated_shape),
        draw(n_noncr, noncr_dilated_shape),
    ]
    return np.stack(hists).astype(np.int64)


def _template_payload(bins: int, *, seed: int) -> bytes:
    from crlib.db import copyio
    from crlib.db.histcodec import encode_histograms

    rng = np.random.default_rng(seed)
    rows = []
    for template in range(N_TEMPLATES):
        hists = synthetic_histograms(rng, bins)
        half = bins // 2
        tp, fn = int(hists[0, half:].sum()), int(hists[0, :half].sum())
        fp, tn = int(hists[1, half:].sum()), int(hists[1, :half].sum())
        fields = [copyio.int4_field(template), copyio.int2_field(bins)]
        fields += [copyio.int8_field(v) for v in (tp, fp, fn, tn)]
        fields += [copyio.field(blob) for blob in encode_histograms(hists)]
        rows.append(copyio.row_count(len(fields)) + b"".join(fields))
    return copyio.payload(rows)


def generate_archive(session: Session, *, exposures: int, bins: int, model_version_id: int) -> None:
    """Fill an empty, migrated database with ``exposures`` synthetic exposures, server-side.

    Four exposures per visit, 200 exposures per proposal, 2002-2024, seven filters, three field
    types; two chips of CR statistics per exposure (about 1.2 CR cm^-2 s^-1) and one metrics row
    per exposure (model version ``model_version_id``) with ``bins``-bin histograms copied from
    :data:`N_TEMPLATES` templates of :func:`synthetic_histograms`. Every (month, filter) cell is
    logged as changed, so a refresh builds the summaries.
    """
    from crlib.db import copyio

    n_visits = max(1, (exposures + 3) // 4)
    n_proposals = max(1, exposures // 200)
    params = {"n": exposures, "nv": n_visits, "np": n_proposals, "bins": bins, "mv": model_version_id}
    filters = "ARRAY[" + ", ".join(f"'{f}'" for f in BENCH_FILTERS) + "]"
    statements = [
        "INSERT INTO proposals (proposal_id, instrument) "
        "SELECT 10000 + p, 'ACS/WFC' FROM generate_series(0, :np - 1) AS p",
        "INSERT INTO visits (visit, proposal_id, instrument) "
        "SELECT 'j' || lpad(to_hex(v), 5, '0'), 10000 + v % :np, 'ACS/WFC' "
        "FROM generate_series(0, :nv - 1) AS v",
        f"""
        INSERT INTO exposures (rootname, visit, proposal_id, instrument, detector, filter, exptime_s,
                               t_min_mjd, t_max_mjd, obs_date, release_mjd, target_name, ra_deg, dec_deg,
                               field_type, field_type_method, product_filename, product_uri)
        SELECT vis || lpad(to_hex(g % 4), 2, '0') || 'q', vis, 10000 + v % :np, 'ACS/WFC', 'WFC',
               ({filters})[1 + (v * 7919) % {len(BENCH_FILTERS)}], exptime, mjd, mjd + exptime / 86400.0,
               DATE '1858-11-17' + floor(mjd)::int, mjd + 365, 'BENCH',
               (v % 360)::float8, ((v % 180) - 90)::float8,
               (ARRAY['globular_cluster', 'extragalactic', 'resolved_galaxy'])[1 + (10000 + v % :np) % 3],
               'simulator',
               vis || lpad(to_hex(g % 4), 2, '0') || 'q_flc.fits', 'mast:HST/product/bench_flc.fits'
        FROM (SELECT g, g / 4 AS v, 'j' || lpad(to_hex(g / 4), 5, '0') AS vis,
                     (ARRAY[30, 339, 500, 1200, 2000])[1 + (g / 4) % 5]::float8 AS exptime,
                     52334 + (g / 4) * 8000.0 / :nv + (g % 4) * 0.03 AS mjd
              FROM generate_series(0, :n - 1) AS g) AS s
        """,
        """
        INSERT INTO cr_statistics (rootname, chip, cr_pixels, cr_events, exptime_s, rate_per_cm2_s)
        SELECT rootname, chip, events * 8, events, exptime_s, events / (18.87 * exptime_s)
        FROM (SELECT e.rootname, c.chip, e.exptime_s,
                     round(22.6 * e.exptime_s * (0.8 + 0.4 * random()))::bigint AS events
              FROM exposures e CROSS JOIN (VALUES (1), (2)) AS c(chip)) AS s
        """,
    ]
    with session.begin():
        for statement in statements:
            session.execute(text(statement), params)
        session.execute(
            text(
                "CREATE TEMPORARY TABLE bench_templates (id integer, n_bins smallint, tp bigint, fp bigint, "
                "fn bigint, tn bigint, h1 bytea, h2 bytea, h3 bytea, h4 bytea) ON COMMIT DROP"
            )
        )
        copyio.copy_in(
            session,
            "COPY bench_templates FROM STDIN (FORMAT binary)",
            _template_payload(bins, seed=exposures),
        )
        # scores on ``ok`` drizzle truth, which the statistics pool by default
        session.execute(
            text(
                "INSERT INTO exposure_metrics (rootname, model_version_id, tp, fp, fn, tn, tpr_at_fpr, "
                "tpr_at_fpr_dilated, n_bins, hist_cr, hist_noncr, hist_cr_dilated, hist_noncr_dilated, "
                "truth_status, truth_method) "
                "SELECT e.rootname, :mv, t.tp, t.fp, t.fn, t.tn, "
                """'{"0.0005": 0.85, "0.005": 0.97}'::jsonb, '{"0.0005": 0.93, "0.005": 0.99}'::jsonb, """
                "t.n_bins, t.h1, t.h2, t.h3, t.h4, 'ok', 'drizzle' "
                "FROM exposures e JOIN bench_templates t "
                f"ON t.id = (hashtext(e.rootname) & {N_TEMPLATES - 1})"
            ),
            params,
        )
        session.execute(
            text(
                "INSERT INTO summary_changes (month, filter) "
                "SELECT DISTINCT date_trunc('month', obs_date)::date, filter FROM exposures"
            )
        )


def synthetic_metrics(rootnames: list[str], *, bins: int, model_version: str, seed: int = 5) -> list[Any]:
    """Metrics records for ``rootnames`` with :func:`synthetic_histograms` as tuples of ints."""
    from crlib.records import ExposureMetrics

    rng = np.random.default_rng(seed)
    out = []
    half = bins // 2
    for rootname in rootnames:
        hists = synthetic_histograms(rng, bins)
        cr, noncr, cr_dilated, noncr_dilated = (tuple(h.tolist()) for h in hists)
        out.append(
            ExposureMetrics(
                rootname=rootname,
                model_name="deepcr-acs-wfc",
                model_version=model_version,
                tp=int(hists[0, half:].sum()),
                fp=int(hists[1, half:].sum()),
                fn=int(hists[0, :half].sum()),
                tn=int(hists[1, :half].sum()),
                tpr_at_fpr={"0.0005": 0.8, "0.005": 0.95},
                tpr_at_fpr_dilated={"0.0005": 0.9, "0.005": 0.98},
                hist_cr=cr,
                hist_noncr=noncr,
                hist_cr_dilated=cr_dilated,
                hist_noncr_dilated=noncr_dilated,
                truth_status="ok",
                truth_method="drizzle",
            )
        )
    return out
