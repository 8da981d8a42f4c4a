"""Settings come from the environment; a caller's overrides reach only the runs it starts."""

import contextvars
import os
import threading

import pytest

from lepton.core.settings import load_settings, overrides


def test_an_override_reaches_copied_threads_and_leaves_the_environment_alone(monkeypatch):
    monkeypatch.setenv("LEPTON_DISTRIBUTED_ROWS", "5000")
    seen = {}
    with overrides(distributed_rows=0, dask_address="tcp://127.0.0.1:1"):
        context = contextvars.copy_context()
        worker = threading.Thread(target=context.run, args=(lambda: seen.update(s=load_settings()),))
        worker.start()
        worker.join()
        assert load_settings().distributed_rows == 0
        assert os.environ["LEPTON_DISTRIBUTED_ROWS"] == "5000" and "LEPTON_DASK_ADDRESS" not in os.environ
    assert (seen["s"].distributed_rows, seen["s"].dask_address) == (0, "tcp://127.0.0.1:1")
    assert load_settings().distributed_rows == 5000 and load_settings().dask_address is None


def test_an_override_of_a_setting_that_does_not_exist_is_refused():
    with pytest.raises(TypeError, match="not settings: \\['rows'\\]"), overrides(rows=1):
        pass
