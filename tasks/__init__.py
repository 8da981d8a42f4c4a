"""Stage computations: pure functions on typed inputs, with thin Prefect task wrappers."""
