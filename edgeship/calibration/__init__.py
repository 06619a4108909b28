"""Data sources, preprocessing that travels with the model, calibration readers for every backend."""
