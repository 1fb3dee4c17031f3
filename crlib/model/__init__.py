"""deepCR mask models: networks, weights, inference engine, prediction files, LACosmic baseline, benchmark."""
