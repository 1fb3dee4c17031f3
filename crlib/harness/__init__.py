"""The local harness: demo, fake MAST server, local Airflow runner, Docker cluster and its services.

Tools for trying and testing the service on one machine. The product never imports this package.
"""
