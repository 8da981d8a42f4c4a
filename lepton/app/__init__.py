"""The application layer: the CLI, the Python API, the scoring service and the local servers."""
