"""The promotion decision, the paired test a challenger must pass, the promotion lock, and the run key."""

import os
import threading
import time

import numpy as np
import pytest

from lepton.domains import get_spec
from lepton.tasks.promotion import (
    Comparison,
    decide,
    latency_failures,
    paired_bootstrap,
    promotion_lock,
    run_key,
    version_description,
)

SPEC = get_spec("finance")  # primary metric: ROC AUC


def _scores(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    signal = y + rng.normal(0, 1.2, n)
    return y, signal, rng


def test_an_identical_challenger_is_not_significantly_better():
    y, champion, _ = _scores()
    result = paired_bootstrap(SPEC, y, champion.copy(), champion)
    assert result.delta == 0 and result.p_value == 1.0
    assert "not significantly better" in result.describe("roc_auc", 0.05)


def test_a_clearly_better_challenger_passes_and_a_noisy_one_does_not():
    y, champion, rng = _scores()
    better = y + rng.normal(0, 0.6, len(y))  # far less noise: a much higher AUC
    clear = paired_bootstrap(SPEC, y, better, champion)
    assert clear.delta > 0.05 and clear.p_value < 0.01 and clear.low > 0
    # The same model with a little jitter: differences of a few 1e-4 are noise, not progress.
    jittered = champion + rng.normal(0, 0.05, len(y))
    noisy = paired_bootstrap(SPEC, y, jittered, champion)
    assert abs(noisy.delta) < 0.01 and noisy.p_value > 0.05


def test_series_are_resampled_as_whole_groups():
    spec = get_spec("manufacturing")  # macro-F1 over classes, runs as groups
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(12), 50)
    y = np.repeat(rng.integers(0, 3, 12), 50)
    good = np.eye(3)[y] * 0.8 + 0.1
    worse = good.copy()
    worse[:100] = np.eye(3)[(y[:100] + 1) % 3] * 0.8 + 0.1  # two whole runs wrong
    result = paired_bootstrap(spec, y, good, worse, groups=groups)
    assert result.delta > 0 and result.resamples <= spec.promotion.resamples
    by_rows = paired_bootstrap(spec, y, good, worse)
    # Rows of a run are not independent: resampling whole runs gives the wider (honest) spread.
    assert result.low < by_rows.low


POSTGRES = os.environ.get("LEPTON_TEST_POSTGRES_URL")
LOCKS = [
    "file",
    pytest.param(
        "postgresql",
        marks=pytest.mark.skipif(
            not POSTGRES, reason="LEPTON_TEST_POSTGRES_URL is not set: the PostgreSQL lock is NOT tested"
        ),
    ),
]


@pytest.mark.parametrize("kind", LOCKS)
def test_the_promotion_lock_lets_one_holder_in_at_a_time(tmp_path, kind):
    """Two holders of the same model's lock take turns: a file lock (one LEPTON_HOME), or a
    PostgreSQL advisory lock (runs on several machines); another model's lock is free."""
    url = POSTGRES if kind == "postgresql" else None
    order = []
    entered, other_done = threading.Event(), threading.Event()

    def hold(name: str, model: str = "lepton-finance", until: threading.Event | None = None) -> None:
        with promotion_lock(tmp_path, model, url):
            order.append(f"{name} in")
            entered.set()
            if until is not None:  # "a" holds on until the other model's holder has been and gone
                assert until.wait(30)
                time.sleep(0.5)  # meanwhile "b" asks for the same model's lock
            order.append(f"{name} out")

    first = threading.Thread(target=hold, args=("a", "lepton-finance", other_done))
    first.start()
    assert entered.wait(30)  # a database connection can take a while on a busy machine
    other = threading.Thread(target=hold, args=("c", "lepton-medical"))
    other.start()
    other.join()
    other_done.set()
    second = threading.Thread(target=hold, args=("b",))
    second.start()
    first.join()
    second.join()
    assert order == ["a in", "c in", "c out", "a out", "b in", "b out"]


@pytest.mark.parametrize("change", ["data", "code", "trials", "settings"])
def test_the_run_key_changes_with_any_input(change):
    base = {"fingerprint": "f", "code": "c", "trials": 8, "settings": {"search_rows": 1}}
    changed = dict(base)
    changed.update(
        {
            "data": {"fingerprint": "g"},
            "code": {"code": "d"},
            "trials": {"trials": 9},
            "settings": {"settings": {"search_rows": 2}},
        }[change]
    )
    assert run_key(SPEC, **base) == run_key(SPEC, **base)
    assert run_key(SPEC, **base) != run_key(SPEC, **changed)


def test_weighted_metrics_equal_sklearn_on_the_drawn_rows():
    from sklearn.metrics import f1_score, roc_auc_score

    from lepton.tasks.promotion import _Scorer

    y, scores, rng = _scores(500)
    scores = np.round(scores, 1)  # ties
    weights = np.bincount(rng.integers(0, 500, 500), minlength=500)
    rows = np.repeat(np.arange(500), weights)
    assert _Scorer(SPEC, y, scores, 0.5)(weights) == pytest.approx(roc_auc_score(y[rows], scores[rows]), abs=1e-12)
    spec = get_spec("manufacturing")
    labels = rng.integers(0, 4, 500)
    proba = rng.dirichlet(np.ones(4), 500) + np.eye(4)[labels] * 0.3
    expected = f1_score(labels[rows], proba[rows].argmax(axis=1), average="macro", labels=range(4), zero_division=0)
    assert _Scorer(spec, labels, proba, 0.5)(weights) == pytest.approx(expected, abs=1e-12)


BETTER = Comparison(delta=0.02, low=0.01, p_value=0.001, resamples=1000)
NOISY = Comparison(delta=0.001, low=-0.01, p_value=0.4, resamples=1000)


@pytest.mark.parametrize(
    ("failures", "comparison", "champion", "note", "promoted", "first"),
    [
        ([], None, None, None, True, "passed every gate"),  # the first version: gates only
        ([], BETTER, "1", None, True, "passed every gate"),
        ([], NOISY, "1", None, False, "not significantly better"),
        (["gate roc_auc >= 0.7: got 0.6500"], BETTER, "1", None, False, "gate roc_auc"),
        (["gate roc_auc >= 0.7: got 0.6500"], None, "2", None, True, "v2 is already the champion"),
        ([], None, "1", "champion v1 cannot score this holdout", True, "passed every gate"),
    ],
)
def test_the_decision_is_a_function_of_what_was_measured(failures, comparison, champion, note, promoted, first):
    decision = decide(SPEC, "2", failures, comparison, champion, note)
    assert decision.promoted is promoted
    assert decision.reasons[0].startswith(first) or first in decision.reasons[0]
    assert decision.summary == "; ".join(decision.reasons)
    assert all(reason and not reason.startswith(";") for reason in decision.reasons)  # sentences, not a joined string
    if note:
        assert decision.reasons[-1] == note
    if comparison is not None and champion != "2":
        assert any("paired bootstrap" in reason for reason in decision.reasons)
    head = version_description(SPEC, "2", decision).splitlines()[0]
    assert head == ("Champion: v2 serves finance." if promoted else "Not promoted: v2 stays a challenger.")


def _latency(p50, spread):
    return {"latency_p50_ms": p50, "latency_wall_p50_ms": p50 * 3, "latency_spread": spread}


def test_the_latency_gate_decides_only_what_load_cannot_explain():
    """Load only adds CPU time: within the budget passes however noisy the blocks, over it fails
    when the blocks agreed, and is withheld, saying why, when they did not."""
    budget = SPEC.latency_budget_ms
    assert latency_failures(SPEC, _latency(budget * 0.1, 0.0)) == []
    assert latency_failures(SPEC, _latency(budget * 0.9, 2.0)) == []  # noisy, yet under the budget
    (over,) = latency_failures(SPEC, _latency(budget * 1.5, 0.1))
    assert over.startswith(f"latency budget {budget:g} ms: single-row p50 {budget * 1.5:.2f} ms")
    assert "not decided" not in over
    (withheld,) = latency_failures(SPEC, _latency(budget * 1.5, 2.0))
    assert "not decided" in withheld and "200%" in withheld
