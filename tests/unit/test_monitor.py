import numpy as np
import polars as pl
import pytest

from lepton.domains.spec import DomainSpec
from lepton.tasks.monitor import drift_report, reference_statistics

SPEC = DomainSpec.model_validate(
    {
        "name": "toy",
        "data": {"path": "x.csv"},
        "columns": [
            {"name": "num", "dtype": "float"},
            {"name": "cat", "dtype": "category"},
            {"name": "y", "dtype": "int", "role": "target"},
        ],
        "task": "regression",
        "split": {"kind": "random"},
        "primary_metric": "r2",
        "metrics": ["r2"],
    }
)


def _frame(n, shift=0.0, cats=("a", "b"), seed=0):
    rng = np.random.default_rng(seed)
    return pl.DataFrame({"num": rng.normal(shift, 1, n), "cat": rng.choice(list(cats), n), "y": np.zeros(n)})


def test_same_distribution_shows_no_drift():
    reference = reference_statistics(_frame(5000), SPEC)
    report = drift_report(SPEC, reference, _frame(5000, seed=1))
    assert report.max_psi < 0.02
    assert report.drifted == []


def test_shifted_numeric_and_new_categories_are_flagged():
    reference = reference_statistics(_frame(5000), SPEC)
    report = drift_report(SPEC, reference, _frame(5000, shift=1.0, cats=("a", "c"), seed=1))
    assert report.drifted == ["cat", "num"]
    assert report.psi["num"] > 0.25


def test_missing_values_count_as_drift():
    reference = reference_statistics(_frame(2000), SPEC)
    holey = _frame(2000, seed=1).with_columns(
        pl.when(pl.int_range(pl.len()) % 2 == 0).then(None).otherwise(pl.col("num")).alias("num")
    )
    assert drift_report(SPEC, reference, holey).psi["num"] > 0.5


def test_ks_from_the_stored_sketch_matches_scipy_on_the_raw_training_values():
    """Continuous, discrete (ties everywhere) and mixed columns: the statistic within 0.002 of
    ks_2samp on the raw data (exact for discrete), and the same verdict at p = 0.01."""
    from scipy import stats

    from lepton.domains.spec import DriftSpec
    from lepton.tasks.monitor import numeric_drift, numeric_reference

    rng = np.random.default_rng(3)
    draws = {
        "normal": lambda n, s: rng.normal(s, 1, n),
        "counts": lambda n, s: rng.poisson(3 + 5 * s, n).astype(float),
        "mixed": lambda n, s: np.where(rng.random(n) < 0.3 + s, 0.0, rng.exponential(1, n)),
    }
    for kind, draw in draws.items():
        training = draw(40_000, 0.0)
        reference = numeric_reference(training, 10, len(training))
        for shift in (0.0, 0.05, 0.2):
            batch = draw(15_000, shift)
            ours = numeric_drift("x", reference, batch, DriftSpec(method="test"))
            theirs = stats.ks_2samp(training, batch, method="asymp")
            tolerance = 1e-9 if kind == "counts" else 0.002
            assert abs(ours.statistic - theirs.statistic) <= tolerance, (kind, shift)
            assert ours.drifted == (theirs.pvalue < 0.01), (kind, shift, ours.p_value, theirs.pvalue)


def test_chi_squared_of_categories_against_the_training_proportions():
    from scipy import stats

    from lepton.domains.spec import DriftSpec
    from lepton.tasks.monitor import categorical_drift, categorical_reference

    rng = np.random.default_rng(4)
    training = pl.Series("c", rng.choice(["a", "b", "c"], 30_000, p=[0.5, 0.3, 0.2]))
    reference = categorical_reference(training)
    batch = pl.Series("c", rng.choice(["a", "b", "c"], 5_000, p=[0.45, 0.3, 0.25]))
    ours = categorical_drift("c", reference, batch, DriftSpec(method="test"))
    counts = [int((batch == level).sum()) for level in ("a", "b", "c")]
    expected = np.array([reference["levels"][level] for level in ("a", "b", "c")]) * len(batch)
    theirs = stats.chisquare(counts, expected)
    assert ours.statistic == pytest.approx(theirs.statistic, rel=1e-3) and ours.drifted
    same = categorical_drift("c", reference, training.sample(5_000, seed=1), DriftSpec(method="test"))
    assert not same.drifted


def test_prediction_drift_and_the_verdict():
    from lepton.tasks.monitor import prediction_reference

    reference = reference_statistics(_frame(5000), SPEC)
    reference["prediction"] = prediction_reference(SPEC, np.random.default_rng(0).normal(0, 1, 5000), [])
    steady = drift_report(SPEC, reference, _frame(5000, seed=1), np.random.default_rng(1).normal(0, 1, 5000))
    assert steady.prediction is not None and not steady.prediction.drifted and not steady.detected
    moved = drift_report(SPEC, reference, _frame(5000, seed=1), np.random.default_rng(1).normal(1, 1, 5000))
    assert moved.prediction.drifted and moved.detected and moved.drifted == []
    metrics = moved.metrics()
    assert metrics["psi_prediction"] > 0.2 and "ks_p_num" in metrics and "chi2_p_cat" in metrics


def test_columns_on_dask_workers_equal_columns_on_local_threads(dask_cluster):
    reference = reference_statistics(_frame(4000), SPEC)
    batch = _frame(3000, shift=0.3, cats=("a", "b", "c"), seed=2)
    local = drift_report(SPEC, reference, batch)
    spread = drift_report(SPEC, reference, batch, client=dask_cluster)
    assert spread.features == local.features and spread.drifted == local.drifted


@pytest.mark.parametrize("kind", ["normal", "heavy", "ties", "spikes", "outside"])
def test_grid_rank_equals_searchsorted_and_psi_bins_equal_a_direct_count(kind):
    from lepton.domains.spec import DriftSpec
    from lepton.tasks.monitor import _bin_proportions, grid_rank, numeric_drift, numeric_reference

    rng = np.random.default_rng(7)
    draws = {
        "normal": lambda n: rng.normal(0, 1, n),
        "heavy": rng.standard_cauchy,
        "ties": lambda n: rng.integers(0, 7, n).astype(float),
        "spikes": lambda n: np.where(rng.random(n) < 0.4, 0.0, rng.lognormal(0, 2, n)),
        "outside": lambda n: rng.normal(0, 1, n) * (1 + 5 * (rng.random(n) < 0.1)),
    }
    training = draws[kind](50_000)
    reference = numeric_reference(training, 10, len(training))
    grid = np.asarray(reference["quantiles"])
    batch = np.r_[draws[kind](60_000), grid, np.nextafter(grid, np.inf), np.nextafter(grid, -np.inf), -np.inf, np.inf]
    assert np.array_equal(grid_rank(batch, grid), np.searchsorted(grid, batch, side="right"))
    drift = numeric_drift("x", reference, batch, DriftSpec())
    expected = _bin_proportions(batch, np.asarray(reference["edges"]), len(batch))
    assert np.allclose(drift.current[:-1], expected, atol=1e-12)


def _evidently_psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Evidently's PSI (``get_binned_data`` and ``_psi``, 0.7), on the raw values of both sides."""
    edges = np.histogram_bin_edges(np.r_[reference, current], bins="sturges")
    shares = [np.histogram(side, edges)[0] / len(side) for side in (reference, current)]
    for share in shares:
        smallest = share[share > 0].min()
        share[share == 0] = smallest / 1e6 if smallest <= 1e-4 else 1e-4
    expected, actual = shares
    return float(np.sum((expected - actual) * np.log(expected / actual)))


@pytest.mark.parametrize("shape", ["normal", "skewed", "clumped", "wider", "out of range"])
def test_sturges_psi_from_the_sketch_matches_evidently_on_raw_values(shape):
    """``psi_bins: sturges`` reads the training side from the stored sketch; Evidently bins the
    raw training values. Within 0.003 (or 2%) of each other, and the same verdict at 0.1, on shifts
    from none to large (the tails, where the outer bins are small, included)."""
    from lepton.domains.spec import DriftSpec
    from lepton.tasks.monitor import numeric_drift, numeric_reference

    rng = np.random.default_rng(7)
    n = 200_000
    draw = {
        "normal": lambda size, s: rng.normal(s, 1, size),
        "skewed": lambda size, s: rng.lognormal(s, 0.8, size),
        "clumped": lambda size, s: np.round(rng.normal(5 + s, 2, size), 1) + rng.normal(0, 0.01, size),
        "wider": lambda size, s: rng.normal(0, 1 + s, size),
        "out of range": lambda size, s: rng.normal(3 * s, 1, size),
    }[shape]
    training = draw(n, 0.0)
    reference = numeric_reference(training, 10, n)
    rule = DriftSpec(psi_bins="sturges", psi_threshold=0.1)
    verdicts = []
    for shift in (0.0, 0.05, 0.15, 0.3, 1.0):
        current = draw(n // 2, shift)
        ours = numeric_drift("x", reference, current, rule)
        theirs = _evidently_psi(training, current)
        assert ours.psi == pytest.approx(theirs, abs=0.003, rel=0.02), (shift, ours.psi, theirs)
        assert ours.drifted == (theirs >= 0.1) or abs(theirs - 0.1) < 0.003
        verdicts.append(ours.drifted)
    assert not verdicts[0] and verdicts[-1]


def test_reference_cdf_is_exact_at_the_sketch_and_monotone_between():
    from lepton.tasks.monitor import numeric_reference, reference_cdf

    values = np.random.default_rng(1).gamma(2.0, size=50_000)
    reference = numeric_reference(values, 10, len(values))
    grid = np.asarray(reference["quantiles"])
    np.testing.assert_allclose(reference_cdf(reference, grid), np.searchsorted(np.sort(values), grid) / len(values))
    points = np.linspace(values.min() - 1, values.max() + 1, 10_001)
    shares = reference_cdf(reference, points)
    assert shares[0] == 0 and shares[-1] == 1 and np.all(np.diff(shares) >= 0)
    exact = np.searchsorted(np.sort(values), points) / len(values)
    assert np.max(np.abs(shares - exact)) < 0.001


def test_sturges_psi_counts_infinities_as_missing_and_survives_a_column_of_them():
    from lepton.domains.spec import DriftSpec
    from lepton.tasks.monitor import numeric_drift, numeric_reference, sturges_edges

    rng = np.random.default_rng(0)
    reference = numeric_reference(rng.normal(size=50_000), 10, 50_000)
    rule = DriftSpec(psi_bins="sturges")
    batch = rng.normal(0.2, 1, 40_000)
    with_inf = np.r_[batch, [np.inf] * 100, [-np.inf] * 50]
    drift = numeric_drift("x", reference, with_inf, rule)
    edges = sturges_edges(reference, float(batch.min()), float(batch.max()), len(batch))
    shares = np.histogram(batch, edges)[0] / len(with_inf)
    counted = shares > 0  # an empty bin gets Evidently's floor
    np.testing.assert_allclose(np.asarray(drift.current[:-1])[counted], shares[counted], atol=1e-12)
    assert drift.labels[-1] == "missing" and drift.current[-1] == pytest.approx(150 / len(with_inf))
    assert np.isfinite(numeric_drift("x", reference, np.full(1000, np.inf), rule).psi)


@pytest.mark.parametrize("bins", ["quantile", "sturges"])
def test_counts_add_up_over_pieces_to_the_whole_columns_drift(bins):
    """A batch in many files is counted file by file (``NumericPlan`` on the whole batch's
    ``Span``, ``LevelCounts``); the sums decide exactly as the whole column does, missing values
    and infinities included."""
    from lepton.domains.spec import DriftSpec
    from lepton.tasks.monitor import LevelCounts, NumericPlan, Span, _present, categorical_drift, numeric_drift

    rule = DriftSpec(psi_bins=bins)
    reference = reference_statistics(_frame(5000), SPEC)["features"]
    batch = _frame(4000, shift=0.3, cats=("a", "b", "c"), seed=2)
    values = batch["num"].to_numpy().copy()
    values[[3, 50, 700]] = np.nan
    values[[9, 1200]] = np.inf
    values[2500] = -np.inf
    pieces = np.array_split(values, 5)
    plan = NumericPlan.of(reference["num"], rule, sum((Span.of(_present(p)) for p in pieces), Span()))
    total = plan.count(pieces[0])
    for piece in pieces[1:]:
        total = total + plan.count(piece)
    whole = numeric_drift("num", reference["num"], values, rule)
    assert plan.decide("num", reference["num"], total, rule) == whole
    assert whole.p_value < 1e-6 and np.isfinite(whole.psi)

    cats = batch["cat"].to_list()
    cats[5] = None
    levels = [LevelCounts.of(reference["cat"], pl.Series(c, dtype=pl.String)) for c in (cats[:1000], cats[1000:])]
    merged = (levels[0] + levels[1]).decide("cat", reference["cat"], rule)
    assert merged == categorical_drift("cat", reference["cat"], pl.Series(cats, dtype=pl.String), rule)
    assert merged.drifted and merged.current[-2] > 0.2  # "c", unseen in training, is "other"
    assert merged.reference[-2] == pytest.approx(0, abs=1e-9)
