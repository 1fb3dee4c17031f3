"""Periodic retraining on accumulated ground truth.

``sources`` (which exposures) -> ``splits`` (fixed visit split) -> ``patches`` (memory-mapped
patch datasets) -> ``trainer`` (the loop) -> ``evaluation`` (pooled TPR per field type and filter)
(the MLflow run and challenger registration that wrap them are
:mod:`crlib.registry.retraining`). Nothing here talks to MLflow.
"""
