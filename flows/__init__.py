"""Prefect flows: wiring only. The computations live in ``tasks``."""
