"""deepCR mask models: networks, weights, model packages, the inference engine, the LACosmic baseline."""
