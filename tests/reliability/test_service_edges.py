"""Issue 18, case 8, and the request parser's fuzz: the scoring service in process (its real
ASGI app, lifespan and champion from a real registry) answers every body with 200 or a typed
refusal, never 5xx; non-finite and non-numeric numbers are refused naming the field; values
beyond the training range are scored and flagged; the batch limit is reachable with real rows;
413s are counted; /metrics follows the API key."""

import json
import math

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lepton.app.serve import MAX_BODY_BYTES, ServeConfig, create_app
from lepton.core.inputs import input_records
from lepton.core.settings import load_settings
from lepton.domains import get_spec
from lepton.tasks.preprocess import load_domain_data, prepare

pytestmark = [pytest.mark.flow]
SPEC = get_spec("finance")


@pytest.fixture(scope="module")
def rows(finance_home) -> list[dict]:
    data = prepare(SPEC, *load_domain_data(SPEC))
    return input_records(SPEC, data.train.frame.head(5_000))  # real rows: the training split has 5,000


@pytest.fixture(scope="module")
def client(finance_home, rows):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEPTON_HOME", str(finance_home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        with TestClient(create_app(SPEC, load_settings(), ServeConfig(poll_seconds=60))) as test_client:
            yield test_client


def _post(client, path: str, body: bytes, **headers):
    return client.post(path, content=body, headers={"content-type": "application/json", **headers})


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999", "true", '"12.5"'])
def test_a_number_that_is_not_a_finite_json_number_is_refused_naming_the_field(client, rows, value):
    body = json.dumps({**rows[0], "int_rate": 0.0}).replace('"int_rate": 0.0', f'"int_rate": {value}')
    response = _post(client, "/predict", body.encode())
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "int_rate"]


def test_a_value_beyond_the_training_range_is_scored_and_flagged(client, rows):
    answer = client.post("/predict", json={**rows[0], "annual_inc": 1e12})
    assert answer.status_code == 200 and answer.json()["outside_training_range"] == ["annual_inc"]
    assert math.isfinite(answer.json()["score"])
    ordinary = client.post("/predict", json=rows[0]).json()
    assert ordinary["outside_training_range"] is None
    metrics = client.get("/metrics").text
    assert 'lepton_inputs_outside_training_range_total{feature="annual_inc"} 1.0' in metrics


def test_the_documented_batch_limit_is_reachable_with_real_rows(client, rows):
    body = json.dumps({"rows": rows}).encode()  # 5,000 real rows at full precision
    assert len(rows) == 5_000 and len(body) > MAX_BODY_BYTES  # over the old 1 MiB limit
    answer = _post(client, "/predict/batch", body)
    assert answer.status_code == 200, answer.text[:300]
    assert len(answer.json()["predictions"]) == 5_000
    too_many = _post(client, "/predict/batch", json.dumps({"rows": rows + rows[:1]}).encode())
    assert too_many.status_code == 422  # one row over max_batch_rows: refused by count, not by bytes


def test_a_body_over_the_limit_is_counted_in_metrics(client, rows):
    huge = json.dumps({"rows": rows * 4}).encode()
    assert _post(client, "/predict/batch", huge).status_code == 413
    assert 'lepton_requests_total{endpoint="batch",status="413"} 1.0' in client.get("/metrics").text


def test_metrics_need_the_api_key_when_the_service_has_one_unless_public(finance_home, monkeypatch):
    monkeypatch.setenv("LEPTON_HOME", str(finance_home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for public, expected in ((False, 401), (True, 200)):
        config = ServeConfig(poll_seconds=60, api_key="s3cret", public_metrics=public)
        with TestClient(create_app(SPEC, load_settings(), config)) as keyed:
            assert keyed.get("/metrics").status_code == expected
            assert keyed.get("/metrics", headers={"x-api-key": "s3cret"}).status_code == 200


_json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


@pytest.mark.slow
@settings(max_examples=2_000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fields=st.dictionaries(
        st.sampled_from([c.name for c in SPEC.model_inputs] + ["typo", ""]), _json_value, max_size=8
    ),
    batch=st.booleans(),
    mangle=st.sampled_from(["none", "truncate", "garbage"]),
)
def test_the_request_parser_answers_every_body_without_a_5xx(client, rows, fields, batch, mangle):
    row = {**rows[0], **fields}
    text = json.dumps({"rows": [row]} if batch else row, allow_nan=True)
    if mangle == "truncate":
        text = text[: len(text) // 2]
    elif mangle == "garbage":
        text = text.replace(":", "::", 1)
    answer = _post(client, "/predict/batch" if batch else "/predict", text.encode())
    assert answer.status_code in (200, 422), answer.text[:300]
    json.loads(answer.text)  # every answer is JSON
