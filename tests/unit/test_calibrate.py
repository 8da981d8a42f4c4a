"""Calibration: chosen out of fold on validation, applied from the bundle's JSON."""

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss

from lepton.core.scoring import apply_calibration
from lepton.tasks.calibrate import fit_calibration
from lepton.tasks.metrics import calibration_error


def _outcomes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.beta(1.2, 4.0, n)  # the true event probability of each row
    return truth, (rng.random(n) < truth).astype(int)


@pytest.mark.parametrize("distort", [lambda p: p**3, np.sqrt, lambda p: 0.5 + (p - 0.5) * 0.3])
def test_miscalibrated_scores_get_a_map_that_improves_held_out_rows(distort):
    truth, y = _outcomes(6000, 0)
    calibration = fit_calibration(y, distort(truth))
    assert calibration.method in ("sigmoid", "isotonic") and calibration.state is not None
    assert calibration.brier[calibration.method] < calibration.brier["raw"]
    # on new rows from the same population, the fitted map helps as the out-of-fold check said
    truth_new, y_new = _outcomes(20_000, 1)
    raw = distort(truth_new)
    fixed = apply_calibration(calibration.state, raw)
    assert brier_score_loss(y_new, fixed) < brier_score_loss(y_new, raw)
    assert calibration_error(y_new, fixed) < calibration_error(y_new, raw)
    order = np.argsort(raw)
    assert np.all(np.diff(fixed[order]) >= -1e-12)  # monotone: the ranking (ROC AUC) is kept


def test_calibrated_scores_are_left_alone_or_barely_moved():
    truth, y = _outcomes(6000, 2)
    calibration = fit_calibration(y, truth)
    if calibration.state is None:
        assert calibration.method == "none" and "not calibrated" in calibration.reason
    else:  # chosen only when it beat the raw scores out of fold, and then close to the identity
        assert calibration.brier[calibration.method] < calibration.brier["raw"]
        grid = np.linspace(0.05, 0.8, 16)
        assert np.max(np.abs(apply_calibration(calibration.state, grid) - grid)) < 0.05


def test_too_few_rows_are_not_calibrated():
    truth, y = _outcomes(150, 3)
    calibration = fit_calibration(y, truth**3)
    assert calibration.method == "none" and calibration.state is None and "too few" in calibration.reason


def test_the_map_is_plain_json():
    import json

    truth, y = _outcomes(3000, 4)
    state = fit_calibration(y, truth**2).state
    assert state is not None and json.loads(json.dumps(state)) == state
