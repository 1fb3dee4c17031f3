"""Realistic simulated HST ACS/WFC visits with known cosmic-ray truth.

The live MAST archive cannot be reached from our build machines, so every later stage is
developed and tested on a *local archive* written here, which they consume exactly like
downloaded MAST data.

Local archive layout (the contract :mod:`crlib.archive.local` and the fake MAST server read)::

    <out>/
      observations.json            {"schema": "crlib-local-archive/1",
                                    "observations": [ {CAOM columns ...}, ... ],
                                    "products":     [ {MAST product columns ...}, ... ]}
      <visit>/<rootname>_flc.fits  calibrated exposure (electrons), built on the real template header
      <visit>/truth/<rootname>_simtruth.fits
                                   per chip (EXTVER = SCI extver): CRMASK (uint8, 1 = CR),
                                   CRCHARGE (float32, e-), MODEL (float32, noiseless scene + sky, e-)
      <visit>/truth/visit.json     field type, filter, injected pointing error, dither offsets per
                                   exposure (arcsec and pixels), CR rate used, seeds

Observation rows use MAST CAOM column names: ``obs_id`` (= rootname), ``obsid`` (numeric string),
``proposal_id`` (string, as MAST returns it), ``instrument_name`` (``ACS/WFC``), ``filters``,
``t_min``, ``t_max``, ``t_exptime``, ``t_obs_release`` (MJD), ``target_name``, ``s_ra``, ``s_dec``,
``obs_collection`` (``HST``), ``dataproduct_type`` (``image``), ``intentType`` (``science``),
``calib_level`` (3), ``dataURL``; plus ``crlib_visit`` and ``crlib_field_type``.
Product rows: ``obsID``, ``obs_id``, ``productFilename``, ``dataURI``
(``mast:HST/product/<file>``), ``productSubGroupDescription`` (``FLC``), ``productType``
(``SCIENCE``), ``calib_level``, ``size`` (bytes), ``md5``, ``crlib_path`` (relative path in the archive).

Public API: :func:`simulate_archive`, :func:`simulate_visit`.
"""

from crlib.simulate.archive import (
    SimulatedArchive,
    SimulatedExposure,
    SimulatedVisit,
    simulate_archive,
    simulate_visit,
)

__all__ = ["SimulatedArchive", "SimulatedExposure", "SimulatedVisit", "simulate_archive", "simulate_visit"]
