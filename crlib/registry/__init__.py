"""MLflow as the system of record: tracking server, registered versions, retraining runs, promotion gate.

Public entry points:

* :func:`crlib.registry.versions.load_registered_model` - ``models:/deepcr-acs-wfc@champion`` ->
  ``(torch module, RegisteredVersion)`` for the inference engine (``version.label`` is what
  predictions record; ``version.metadata`` gives scale, normalisation and threshold);
* :func:`crlib.registry.serving.resolve_inference_model` - the weights inference uses (champion,
  challenger, a version, or deepCR's shipped weights per ``CRLIB_INFERENCE_MODEL``), cached per process;
* :func:`crlib.registry.versions.bootstrap_registry` - deepCR's shipped weights as the first champion;
* :func:`crlib.registry.retraining.run_training` - train on the ledger's truth and register a version;
* :func:`crlib.registry.promotion.promote` - the metrics gate;
* :func:`crlib.registry.server.start_tracking_server` - ``mlflow server`` on 127.0.0.1.
"""
