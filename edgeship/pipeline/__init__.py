"""Compression passes (one contract, registered by name) and the runner that caches each stage."""
