"""Backends (one module per format behind one interface), verification, devices, measurement, budgets."""
