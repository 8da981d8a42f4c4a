"""Lepton's runtime: settings, tracking, scoring, CLI. Importing it does nothing else.

``lepton.run(data=..., target=...)`` trains, gates and registers a model from Python; see
``lepton.app.api.run`` for its arguments.
"""

from typing import Any

__version__ = "0.1.0"


def run(*args: Any, **kwargs: Any) -> Any:
    """``lepton.app.api.run``, imported on first use so ``import lepton`` stays instant."""
    from lepton.app.api import run as _run

    return _run(*args, **kwargs)
