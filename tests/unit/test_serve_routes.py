"""The scoring routes answered before FastAPI's routing (the fast path) and through it (the
declared routes, which /docs describes) give the same answers."""

import asyncio
import functools

import httpx
from fastapi import FastAPI

from lepton.app.serve import ServeConfig, create_app
from lepton.core.settings import load_settings
from lepton.domains import get_spec

SPEC = get_spec("finance")


def _both(app: FastAPI, path: str, **request) -> list[httpx.Response]:
    """The same request through the app (fast path) and through FastAPI's own stack."""

    async def go() -> list[httpx.Response]:
        answers = []
        for target in (app, functools.partial(FastAPI.__call__, app)):
            transport = httpx.ASGITransport(app=target)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                answers.append(await client.post(path, **request))
        return answers

    return asyncio.run(go())


def test_refusals_are_the_same_json_on_both_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("LEPTON_HOME", str(tmp_path))
    app = create_app(SPEC, load_settings())  # no lifespan here: no champion is loaded
    for path in ("/predict", "/predict/batch"):
        fast, routed = _both(app, path, json={"rows": []})
        assert fast.status_code == routed.status_code == 503
        assert fast.json() == routed.json() and "no champion of lepton-finance" in fast.json()["detail"]

    keyed = create_app(SPEC, load_settings(), ServeConfig(api_key="k3y"))
    fast, routed = _both(keyed, "/predict", json={})
    assert fast.status_code == routed.status_code == 401 and fast.json() == routed.json()
    assert "k3y" not in fast.text


def test_the_declared_routes_document_the_request_bodies(tmp_path, monkeypatch):
    monkeypatch.setenv("LEPTON_HOME", str(tmp_path))
    schema = create_app(SPEC, load_settings()).openapi()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/FinanceRow"}
    assert "FinanceRow" in schema["components"]["schemas"]
    assert {"401", "413", "422", "503"} <= set(schema["paths"]["/predict"]["post"]["responses"])
