"""Progress events: one per trial from the real search, drawn live on a terminal and as periodic
plain lines elsewhere; a listener never changes what is computed."""

import io
import itertools
import logging

from rich.console import Console

from lepton.app.terminal import Terminal
from lepton.core import progress
from lepton.core.progress import Event, Steps
from lepton.domains import get_spec
from lepton.tasks.optimise import search
from lepton.tasks.preprocess import load_domain_data, prepare
from lepton.tasks.train import search_sample

SPEC = get_spec("medical")


def test_the_search_emits_one_event_per_trial_with_the_best_score_so_far(monkeypatch):
    monkeypatch.setattr("lepton.tasks.families.searched", lambda: ["linear", "xgboost"])  # no MLP: seconds, not tens
    data = search_sample(prepare(SPEC, *load_domain_data(SPEC)), 1500, SPEC.split.seed)
    heard: list[Event] = []
    with progress.listening(heard.append, domain="medical"):
        models = search(SPEC, data, n_trials=4, seed=SPEC.split.seed)
    steps = [e for e in heard if e.kind == "step"]
    assert [e.step for e in steps] == [1, 2, 3, 4] and {e.total for e in steps} == {4}
    assert all(e.domain == "medical" and e.stage == "optimise" for e in steps)
    scores = [abs(m.valid_score) for m in models if not m.pruned]
    assert steps[-1].best == max(scores)  # the best so far, as the metric's own value
    assert steps[-1].eta is None or steps[-1].eta == 0
    assert all(later.best >= earlier.best for earlier, later in itertools.pairwise(steps))
    assert "trial 4 of 4" in steps[-1].message and f"best valid {SPEC.primary_metric}" in steps[-1].message
    # the same search without a listener: the same models (display does not decide)
    again = search(SPEC, data, n_trials=4, seed=SPEC.split.seed)
    assert [m.valid_score for m in again] == [m.valid_score for m in models]


def test_an_event_outside_a_run_reaches_the_listener_and_no_logger():
    heard: list[Event] = []
    with progress.listening(heard.append):
        event = progress.emit("note", "engine", "a cluster")
    assert heard == [event] and event.level == logging.INFO and event.line() == "engine: a cluster"
    progress.emit("note", "engine", "nobody listens")  # no listener, no run: nothing happens


def _plain(every: float) -> tuple[Terminal, io.StringIO]:
    out = io.StringIO()
    return Terminal(Console(file=out, width=200, force_terminal=False), every=every), out


def test_a_non_terminal_prints_periodic_plain_lines_the_first_and_last_step_always():
    view, out = _plain(every=3600)
    with view, progress.listening(view, domain="finance"):
        progress.emit("start", "optimise", "started")
        steps = Steps("optimise", 50, "trial", "valid roc_auc")
        for k in range(50):
            steps.advance(0.5 + k / 1000)
        progress.emit("done", "optimise", "done in 12.00s", seconds=12.0)
    lines = out.getvalue().splitlines()
    assert "\x1b[" not in out.getvalue()  # plain text: no colour codes, no cursor movement
    trials = [line for line in lines if "trial" in line]
    assert len(trials) == 2, lines  # first and last within the period; the 48 between are left out
    assert "trial 1 of 50" in trials[0] and "trial 50 of 50" in trials[1] and "best valid roc_auc 0.5490" in trials[1]
    assert lines[0].strip() == "finance optimise   started" and lines[-1].strip() == "finance optimise   done in 12.00s"


def test_a_non_terminal_with_a_short_period_prints_each_due_step():
    view, out = _plain(every=0)
    with view, progress.listening(view, domain="finance"):
        steps = Steps("optimise", 3, "trial")
        for _ in range(3):
            steps.advance()
    assert [line.split("trial ")[1][:6] for line in out.getvalue().splitlines()] == ["1 of 3", "2 of 3", "3 of 3"]


def test_a_terminal_draws_a_live_line_and_prints_each_finished_stage_once():
    out = io.StringIO()
    view = Terminal(Console(file=out, width=160, force_terminal=True), live=True)
    with view, progress.listening(view, domain="medical"):
        progress.emit("start", "optimise", "started")
        steps = Steps("optimise", 2, "trial", "valid roc_auc")
        steps.advance(0.7)
        steps.advance(0.8)
        progress.emit("note", "engine", "Dask LocalCluster in this process")
        progress.emit("note", "engine", "Dask LocalCluster in this process")  # said once
        progress.emit("done", "optimise", "done in 2.00s", seconds=2.0)
    text = out.getvalue()
    assert text.count("done in 2.00s") == 1 and text.count("Dask LocalCluster in this process") == 1
    assert "optimise 2/2" in text  # the live line: stage, trial k of N
