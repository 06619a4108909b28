"""Loading users' models and our reference architectures."""
