"""The version of edgeship (one place; pyproject.toml holds the same, a test checks)."""

__version__ = "0.1.0"
