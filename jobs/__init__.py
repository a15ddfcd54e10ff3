"""Ray job entrypoints: ``python -m jobs.<name>``."""
