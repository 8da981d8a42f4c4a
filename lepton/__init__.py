"""Lepton's runtime: settings, tracking, scoring, CLI. Importing it does nothing else."""

__version__ = "0.1.0"
