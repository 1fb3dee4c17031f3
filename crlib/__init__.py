"""crlib: HST cosmic-ray ground truth, deepCR inference, metrics and model lifecycle.

The package computes; Airflow DAGs in ``dags/`` only wire its functions into tasks.
Nothing here imports Airflow, and importing ``crlib`` is cheap (heavy libraries are imported
inside the functions that need them).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
