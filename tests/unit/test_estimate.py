"""Performance estimated without labels: on batches whose labels follow calibrated
probabilities, the realised metric falls in the band as often as the band's level says, and a
shift that costs performance moves the estimate by more than its band."""

from dataclasses import replace

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from lepton.domains import get_spec
from lepton.tasks.estimate import LEVEL, Estimate, estimate

FINANCE = get_spec("finance")  # binary, ROC AUC
MANUFACTURING = get_spec("manufacturing")  # multiclass, macro-F1


def _binary(rng, rows, centre, spread):
    """Rows whose label is drawn from the model's own (so calibrated) probability; the shift
    moves the inputs only, as covariate shift does."""
    x = rng.normal(centre, spread, rows)
    p = 1 / (1 + np.exp(-(2.0 * x - 1.0)))
    return p, (rng.random(rows) < p).astype(int)


def test_the_closed_form_spreads_are_those_of_scikit_learns_metrics_on_drawn_labels():
    """The delta-method standard deviations of ROC AUC, macro-F1 and accuracy against the
    spread of scikit-learn's metric over 2,000 label draws from the same probabilities."""
    from sklearn.metrics import accuracy_score

    from lepton.tasks.estimate import _argmax_spread, _auc_spread, _draw_labels

    rng = np.random.default_rng(5)
    p = np.round(rng.beta(2, 4, 1_000), 2)  # ties, as a calibrated model's steps give
    drawn = [roc_auc_score(y, p) for y in (rng.random((2_000, len(p))) < p).astype(int)]
    assert _auc_spread(p, p) == pytest.approx(np.std(drawn), rel=0.08)
    assert np.isnan(_auc_spread(np.full(50, 0.3), np.zeros(50)))  # no positive expected: no AUC
    proba = rng.dirichlet([0.3] * 5, 1_000)  # five classes, some rarely predicted
    pred = proba.argmax(axis=1)
    draws = np.concatenate([_draw_labels(proba, np.random.default_rng(seed)) for seed in range(10)])
    assert np.abs(np.eye(5)[draws].mean(axis=0) - proba).max() < 0.1  # each row's labels follow its probabilities
    f1 = [f1_score(y, pred, average="macro", labels=np.arange(5), zero_division=0) for y in draws]
    assert _argmax_spread("f1_macro", proba, proba) == pytest.approx(np.std(f1), rel=0.08)
    accuracy = [accuracy_score(y, pred) for y in draws]
    assert _argmax_spread("accuracy", proba, proba) == pytest.approx(np.std(accuracy), rel=0.08)
    wrong = _argmax_spread("f1_macro", proba[:, ::-1], proba)  # other decisions: another spread
    assert abs(wrong - np.std(f1)) > 0.1 * np.std(f1)


def test_the_expected_counts_give_the_draws_mean_without_their_noise():
    from lepton.tasks.estimate import _expected_argmax, _expected_auc

    rng = np.random.default_rng(12)
    p = np.round(rng.beta(2, 5, 800), 2)  # ties
    many = (rng.random((20_000, len(p))) < p).astype(int)
    drawn = [roc_auc_score(y, p) for y in many[:4_000]]
    assert _expected_auc(p, p) == pytest.approx(np.mean(drawn), abs=0.002)
    assert _expected_auc(np.full(50, 0.3), np.full(50, 0.3)) == pytest.approx(0.5)  # all tied: chance
    proba = rng.dirichlet([0.5] * 4, 800)
    cumulative = np.cumsum(proba, axis=1)
    labels = (rng.random((2_000, 800))[:, :, None] > cumulative[None]).sum(axis=2).clip(0, 3)
    pred = proba.argmax(axis=1)
    f1 = [f1_score(y, pred, average="macro", labels=np.arange(4), zero_division=0) for y in labels]
    assert _expected_argmax("f1_macro", proba, proba) == pytest.approx(np.mean(f1), abs=0.003)
    assert _expected_argmax("accuracy", proba, proba) == pytest.approx(np.mean(labels == pred), abs=0.003)


def test_the_realised_roc_auc_falls_in_the_band_as_often_as_its_level():
    rng = np.random.default_rng(0)
    inside, errors = 0, []
    batches = 40
    for seed in range(batches):
        p, y = _binary(rng, 2_000, 0.0, 1.0)
        e = estimate(FINANCE, p, 0.5, calibration="sigmoid", seed=seed)
        assert e is not None and e.metric == "roc_auc" and e.level == LEVEL and e.rows == 2_000
        realised = roc_auc_score(y, p)
        inside += e.lower <= realised <= e.upper
        errors.append(abs(e.value - realised))
    assert inside / batches >= 0.8  # a 90% band: 36 of 40 expected, 32 allowed for chance
    assert np.mean(errors) < 0.015


def test_a_harmful_shift_moves_the_estimate_and_a_harmless_one_does_not():
    rng = np.random.default_rng(1)
    before = estimate(FINANCE, _binary(rng, 3_000, 0.0, 1.0)[0], 0.5, calibration="sigmoid")
    moved = _binary(rng, 3_000, 0.3, 1.0)[0]  # the mean moves a little
    harmless = estimate(FINANCE, moved, 0.5, calibration="sigmoid")
    narrowed = _binary(rng, 3_000, 0.5, 0.3)  # rows bunched where the model is unsure: ranking gets harder
    harmful = estimate(FINANCE, narrowed[0], 0.5, calibration="sigmoid")
    assert before and harmless and harmful
    assert harmful.upper < before.lower  # out of the band, downwards
    assert harmless.lower < before.value < harmless.upper
    inside = 0  # and the labels of such batches land in the band as often as its level says
    for seed in range(20):
        scores, y = _binary(rng, 3_000, 0.5, 0.3)
        e = estimate(FINANCE, scores, 0.5, calibration="sigmoid", seed=seed)
        inside += e is not None and e.lower <= roc_auc_score(y, scores) <= e.upper
    assert inside >= 16  # 18 of 20 expected


def test_macro_f1_of_the_arg_max_class_is_estimated_like_any_metric():
    rng = np.random.default_rng(2)
    inside = 0
    for seed in range(20):
        logits = rng.normal(0, 1.5, (1_500, 4))
        proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        y = np.array([rng.choice(4, p=row) for row in proba])
        e = estimate(MANUFACTURING, proba, None, calibration="sigmoid", seed=seed)
        assert e is not None and e.metric == "f1_macro"
        realised = f1_score(y, proba.argmax(axis=1), average="macro", labels=np.arange(4), zero_division=0)
        inside += e.lower <= realised <= e.upper
    assert inside >= 16  # a 90% band: 18 of 20 expected


def _overconfident(rng, rows):
    """Four classes whose labels follow softmax(logits), scored by a model that is sure of
    itself: softmax(3 logits), the same arg-max, probabilities near 0 and 1."""
    logits = rng.normal(0, 1.0, (rows, 4))
    truth = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = (rng.random(rows)[:, None] > np.cumsum(truth, axis=1)).sum(axis=1).clip(0, 3)
    scores = np.exp(3 * logits) / np.exp(3 * logits).sum(axis=1, keepdims=True)
    return scores, y


def test_an_overconfident_multiclass_model_is_estimated_through_its_own_validation_map():
    from lepton.core.scoring import BundleMeta, apply_calibration
    from lepton.tasks.calibrate import fit_estimation_map
    from lepton.tasks.estimate import champion_calibration

    rng = np.random.default_rng(8)
    valid_scores, valid_y = _overconfident(rng, 6_000)
    fitted = fit_estimation_map(valid_y, valid_scores, seed=0)
    assert fitted is not None and fitted["method"] == "one_vs_rest" and len(fitted["classes"]) == 4
    meta = BundleMeta.from_json(
        BundleMeta(domain="m", task="multiclass", family="xgboost", estimation_map=fitted).to_json()
    )
    name, through = champion_calibration(meta)  # as the monitor reads it from the bundle
    assert name == "one_vs_rest" and through == fitted
    assert np.allclose(apply_calibration(through, valid_scores).sum(axis=1), 1.0)
    raw_inside = mapped_inside = 0
    for seed in range(20):
        scores, y = _overconfident(rng, 1_000)
        realised = f1_score(y, scores.argmax(axis=1), average="macro", labels=np.arange(4), zero_division=0)
        raw = estimate(MANUFACTURING, scores, None, "none", seed=seed)
        mapped = estimate(MANUFACTURING, scores, None, name, seed=seed, drawn_through=through)
        assert raw is not None and mapped is not None and raw.value > realised + 0.05  # sure of itself
        raw_inside += raw.lower <= realised <= raw.upper
        mapped_inside += mapped.lower <= realised <= mapped.upper
    assert raw_inside <= 2 and mapped_inside >= 16


def _heteroscedastic(rng, rows, low):
    """A regression whose model predicts the mean exactly and whose errors grow with it, its
    predictions between ``low`` and 2."""
    x = rng.uniform(low, 2.0, rows)
    return x, x + rng.normal(0, 1, rows) * np.exp(0.8 * x)


@pytest.mark.parametrize("metric", ["rmse", "mae", "r2"])
def test_a_regression_is_estimated_from_its_validation_errors_given_the_prediction(metric):
    from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

    from lepton.tasks.calibrate import fit_residual_map

    spec = FINANCE.model_copy(update={"task": "regression", "primary_metric": metric})
    rng = np.random.default_rng(11)
    fitted = fit_residual_map(*_heteroscedastic(rng, 20_000, -2.0)[::-1])
    assert fitted is not None and fitted["method"] == "residuals"
    score = {"rmse": root_mean_squared_error, "mae": mean_absolute_error, "r2": r2_score}[metric]
    inside, moved = {-2.0: 0, 1.0: 0}, []
    for seed in range(40):
        for centre in inside:  # as on validation, then moved to where the model errs more
            prediction, y = _heteroscedastic(rng, 1_000, centre)
            e = estimate(spec, prediction, None, "residuals", seed=seed, drawn_through=fitted)
            assert e is not None and e.metric == metric
            inside[centre] += e.lower <= score(y, prediction) <= e.upper
            if centre == 1.0:
                moved.append(e.value)
    calm = estimate(spec, _heteroscedastic(rng, 1_000, -2.0)[0], None, "residuals", drawn_through=fitted)
    assert inside[-2.0] >= 32 and inside[1.0] >= 32  # a 90% band: 36 of 40 expected
    if metric == "r2":  # the spread of the labels grows too, so R² need not fall
        return
    assert calm is not None and min(moved) > calm.upper  # the errors grew: every moved batch estimated worse


def test_a_large_batch_gets_the_band_of_its_own_size_and_regression_none():
    rng = np.random.default_rng(3)
    small = estimate(FINANCE, _binary(rng, 5_000, 0.0, 1.0)[0], 0.5, calibration="sigmoid")
    large = estimate(FINANCE, _binary(rng, 200_000, 0.0, 1.0)[0], 0.5, calibration="sigmoid")
    assert small and large and large.rows == 200_000
    assert (large.upper - large.lower) == pytest.approx((small.upper - small.lower) * (5_000 / 200_000) ** 0.5, rel=0.3)
    assert estimate(get_spec("finance").model_copy(update={"task": "regression"}), np.ones(100), None, "none") is None
    assert estimate(FINANCE, np.full(10, 0.5), 0.5, calibration="sigmoid") is None  # too few rows to tell


def test_the_expected_decisions_match_the_realised_ones_on_calibrated_batches():
    """Sensitivity, false-alarm rate and cost per decision at the threshold, in expectation
    from the probabilities, against what labels drawn from them show."""
    from lepton.tasks.metrics import expected_cost

    rng = np.random.default_rng(3)
    gaps = {"sensitivity": [], "false_alarm_rate": [], "expected_cost": []}
    for seed in range(40):
        p, y = _binary(rng, 2_000, 0.0, 1.0)
        cut = 1 / 11  # where a false negative costs ten false positives: the cost-optimal threshold
        e = estimate(FINANCE, p, cut, calibration="sigmoid", seed=seed)
        flagged = p >= cut
        gaps["sensitivity"].append(e.sensitivity - flagged[y == 1].mean())
        gaps["false_alarm_rate"].append(e.false_alarm_rate - flagged[y == 0].mean())
        gaps["expected_cost"].append(e.expected_cost - expected_cost(y, flagged, FINANCE.cost))
        assert e.no_skill_cost >= e.expected_cost  # a useful model costs less than deciding without it
    for name, gap in gaps.items():  # unbiased, and close batch by batch
        assert abs(np.mean(gap)) < 0.01 and np.mean(np.abs(gap)) < 0.05, (name, np.mean(gap), np.mean(np.abs(gap)))


def test_a_batch_read_on_the_workers_is_estimated_from_a_sample_with_the_whole_batchs_band():
    from lepton.tasks.batch_scan import SAMPLE_ROWS, BatchPart, _merged_sample

    rng = np.random.default_rng(8)
    files = [_binary(rng, rows, 0.0, 1.0)[0] for rows in (30_000, 10_000, 60_000)]
    parts = [BatchPart(f"f{i}", len(p), sample=p[:SAMPLE_ROWS]) for i, p in enumerate(files)]
    sample = _merged_sample(parts, seed=1)
    assert len(sample) == SAMPLE_ROWS  # each file's share by its rows: 6,000 + 2,000 + 12,000
    small = [BatchPart("a", 50, sample=files[0][:50]), BatchPart("b", 30, sample=files[1][:30])]
    assert np.array_equal(_merged_sample(small, seed=1), np.r_[files[0][:50], files[1][:30]])

    whole = estimate(FINANCE, sample, 0.5, "none", seed=0, rows=100_000)
    alone = estimate(FINANCE, sample, 0.5, "none", seed=0)
    assert whole.rows == 100_000 and alone.rows == SAMPLE_ROWS and whole.value == alone.value
    width = (whole.upper - whole.lower) / (alone.upper - alone.lower)
    assert width == pytest.approx((SAMPLE_ROWS / 100_000) ** 0.5)  # the band of 100,000 rows, not of the sample


def test_the_estimate_allows_for_its_miss_on_the_holdout_and_the_decision_does_not():
    """A version whose estimate missed its holdout's labels beyond the band there: a batch's
    estimate is scaled by the share the labels bore out (of its distance from chance, for ROC
    AUC) and its band reaches over both; the retrain decision, which compares estimates made
    the same way, reads the unadjusted one."""
    from lepton.tasks.estimate import allowing_for_miss
    from lepton.tasks.retrain import RetrainHistory, Traffic, decide

    rng = np.random.default_rng(4)
    e = estimate(FINANCE, _binary(rng, 2_000, 0.0, 1.0)[0], 0.5, calibration="sigmoid")
    check = {**e.as_json(), "value": 0.80, "lower": 0.79, "upper": 0.81, "realised": 0.74}  # too high there
    adjusted = allowing_for_miss(e, check)
    share = (0.74 - 0.5) / (0.80 - 0.5)
    assert adjusted.missed_at_training == pytest.approx(0.06)
    assert adjusted.value == pytest.approx(0.5 + (e.value - 0.5) * share)
    # the scaled band, widened by the share's own chance: the check's labels, +-0.01 at 90% there
    drift = 0.01 / (0.80 - 0.5) * (e.value - 0.5)
    scaled_lower = 0.5 + (e.lower - 0.5) * share
    assert adjusted.lower == pytest.approx(adjusted.value - np.hypot(adjusted.value - scaled_lower, drift))
    assert adjusted.lower < scaled_lower and adjusted.upper == e.upper
    assert adjusted.as_estimated() == e and "allowing for its miss of +0.0600" in adjusted.describe()
    low = {**check, "value": 0.74, "lower": 0.73, "upper": 0.75, "realised": 0.80}
    assert allowing_for_miss(e, low).upper > e.upper  # too low there: upwards
    inside = {**e.as_json(), "realised": (e.value + e.upper) / 2}  # within the band there
    assert allowing_for_miss(e, inside) == e
    assert allowing_for_miss(e, {**check, "metric": "f1_macro"}) == e  # another metric's check
    assert allowing_for_miss(e, {**check, "rows": 999}) == e  # too few rows to tell a bias from chance
    # the decision prices the fall from the holdout's estimate, made the same way: unadjusted
    at_training = Estimate(**{k: v for k, v in check.items() if k != "realised"})
    at_training = replace(at_training, expected_cost=0.1, no_skill_cost=0.5)  # the champion is worth 0.4 a decision
    fell = allowing_for_miss(replace(e, value=0.70, lower=0.69, upper=0.71), check)
    assert fell.value == pytest.approx(0.5 + 0.2 * share)  # 0.66 adjusted
    decided = decide(
        FINANCE, key="k", detected=True, drifted=["x"], estimated=fell, holdout={"roc_auc": 0.74},
        performance={}, history=RetrainHistory((), 0, 0), traffic=Traffic(1000.0, "t"), at_training=at_training,
    )  # fmt: skip
    assert decided.recommended and "roc_auc 0.7000 (90% band 0.6900 to 0.7100)" in decided.reason
    assert "takes 33% of its skill" in decided.reason, decided.reason  # (0.70 - 0.5) / (0.80 - 0.5): a third lost


def test_the_calibrations_uncertainty_widens_the_band_where_validation_knows_little():
    """Each bin of the scores' probability is off by an amount validation leaves uncertain
    (``fit_calibration_spread``: r (1 - r) / n a bin); the ROC AUC band carries what that moves
    the estimate by (``_calibration_spread``): the spread of the expected-count AUC over such
    errors drawn 2,000 times, within 10%. A batch gathered in one bin's neighbourhood, where
    validation had few rows, is widened more than one spread wide, and more rows do not narrow
    it: every row of a bin shares the bin's error."""
    from lepton.tasks.calibrate import fit_calibration_spread
    from lepton.tasks.estimate import _calibration_spread, _expected_auc

    rng = np.random.default_rng(7)
    valid = rng.beta(1, 6, 1_500)  # validation: most scores low, few near 0.5
    labels = (rng.random(1_500) < valid).astype(int)
    fitted = fit_calibration_spread(labels, valid, valid)
    edges, variance = np.asarray(fitted["edges"]), np.asarray(fitted["variance"])
    assert len(variance) == len(edges) + 1 == 10
    top = valid >= edges[-1]  # the last bin's variance: its rate's binomial one, or the floor
    rate, mean = labels[top].mean(), valid[top].mean()
    assert variance[-1] == pytest.approx(max(rate * (1 - rate), mean * (1 - mean)) / top.sum())
    batch = rng.beta(1, 6, 600)
    bins = np.searchsorted(edges, batch, side="right")
    moved = [
        _expected_auc(batch, np.clip(batch + rng.normal(0, np.sqrt(variance))[bins], 1e-6, 1 - 1e-6))
        for _ in range(2_000)
    ]
    assert _calibration_spread(batch, batch, fitted) == pytest.approx(np.std(moved), rel=0.1)
    broad = estimate(FINANCE, batch, 0.2, calibration="none", spread=fitted)
    near = np.clip(rng.normal(0.3, 0.05, 600), 0.01, 0.99)  # gathered about the threshold
    narrow = estimate(FINANCE, near, 0.3, calibration="none", spread=fitted)
    assert broad.calibration_sd > 0 and narrow.calibration_sd > 1.4 * broad.calibration_sd
    plain = estimate(FINANCE, near, 0.3, calibration="none")
    assert plain.calibration_sd == 0 and narrow.upper - narrow.lower > plain.upper - plain.lower
    more = estimate(FINANCE, np.tile(near, 4), 0.3, calibration="none", spread=fitted)
    assert more.calibration_sd == pytest.approx(narrow.calibration_sd, rel=0.01)  # not narrowed by rows
    # the retrain decision compares it with the holdout's estimate through the same map, whose
    # calibration error both share: it reads the band of the labels' chance alone
    compared = narrow.as_estimated()
    assert compared.value == narrow.value and compared.calibration_sd == 0
    assert (compared.lower, compared.upper) == pytest.approx((plain.lower, plain.upper))
