"""Periodic retraining on accumulated ground truth.

``sources`` (which exposures) -> ``splits`` (fixed visit split) -> ``patches`` (memory-mapped
patch datasets) -> ``trainer`` (the loop) -> ``evaluation`` (pooled TPR per field type and filter)
-> ``pipeline`` (MLflow run and challenger registration).
"""
