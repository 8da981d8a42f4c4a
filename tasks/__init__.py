"""The stages: each a Prefect task (``*_task``) over pure functions of typed inputs.

Beside them, the modules the stages share (``labels``, ``metrics``, ``plots``, ``stored``: the
stage cache's formats, ``promotion``, ``calibrate``, ``pareto``) and the two data makers the CLI
calls without a flow (``synth``, ``drift_demo``).
"""
