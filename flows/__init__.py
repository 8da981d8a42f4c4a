"""Prefect flows: they wire the stages of ``lepton.tasks`` on the foundation (``lepton.core``).

``pipeline`` trains, gates and registers; ``monitor`` checks a batch for drift; ``score`` scores a
file with a registered model; ``rerun`` says whether a run is needed at all. The stage runner
they share (cache, cost, progress) is ``lepton.core.stages``.
"""
