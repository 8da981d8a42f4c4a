"""The scoring service: ``lepton serve DOMAIN`` (FastAPI + uvicorn).

    POST /predict         one row (an object whose fields are the domain's model inputs)
    POST /predict/batch   {"rows": [...]}, at most ``max_batch_rows``
    GET  /health          the process is up          GET /ready    a champion is loaded
    GET  /metrics         Prometheus                 GET /docs     OpenAPI, schemas from the DomainSpec

Each answer carries the prediction (class or value), its score, the decision threshold (binary),
the model name and version, and the features that moved the score most (XGBoost contributions,
or coefficient times value for linear models). The champion is re-read from the registry every
``poll_seconds``; a moved alias loads the new version beside the old one and swaps it in between
requests, so no request fails during a promotion. Every prediction goes to the prediction log
(``lepton.predlog``) that the monitor stage reads.
"""

import asyncio
import contextlib
import hmac
import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from domains.spec import DomainSpec, Dtype
from lepton import tracking
from lepton.predlog import PredictionLog
from lepton.scoring import Scorer, smoothed
from lepton.settings import Settings

log = logging.getLogger("lepton.serve")
MAX_BODY_BYTES = 1 << 20  # 1 MiB: about 5,000 finance rows
MAX_BATCH_ROWS = 5_000


# ---- schemas generated from the spec ---------------------------------------------------------
_PY_TYPES: dict[Dtype, Any] = {
    Dtype.FLOAT: float,
    Dtype.INT: float,  # the model sees numbers; 3.0 for an integer column is fine
    Dtype.BOOL: bool,
    Dtype.CATEGORY: str,
    Dtype.DATETIME: str,
}


def row_model(spec: DomainSpec) -> type[BaseModel]:
    """One request row: every model input, by its column name; missing values may be null or
    left out (the model handles them), but a field the model does not know is an error (a typo
    would otherwise score as missing). Columns that order rows (group, time) are required."""
    ordering = {c for c in (spec.group_column, spec.time_column) if c} if spec.smoothing_config() else set()
    fields: dict[str, Any] = {}
    for i, column in enumerate(spec.model_inputs):
        kind = _PY_TYPES[column.dtype]
        if column.name in ordering:
            fields[f"f{i}"] = (kind, Field(alias=column.name, description=f"{column.dtype.value}, required"))
        else:
            fields[f"f{i}"] = (kind | None, Field(default=None, alias=column.name, description=column.dtype.value))
    config = ConfigDict(extra="forbid", populate_by_name=False)
    return create_model(f"{_camel(spec.name)}Row", __config__=config, **fields)


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("-", "_").split("_")) or "Domain"


class Reason(BaseModel):
    feature: str
    contribution: float


class Prediction(BaseModel):
    prediction: str | float
    score: float
    reasons: list[Reason] | None = None


class ModelInfo(BaseModel):
    name: str
    version: str


class SingleAnswer(Prediction):
    request_id: str
    model: ModelInfo
    threshold: float | None = None


class BatchAnswer(BaseModel):
    request_id: str
    model: ModelInfo
    threshold: float | None = None
    predictions: list[Prediction]


# ---- the champion, swapped without downtime -----------------------------------------------------
@dataclass(frozen=True)
class Loaded:
    version: str
    scorer: Scorer

    @property
    def threshold(self) -> float | None:
        return float(self.scorer.meta["threshold"]) if self.scorer.meta["task"] == "binary" else None


class Champion:
    """The champion version of one registered model. ``current`` is replaced as a whole, so a
    request that took it keeps a consistent model to the end."""

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self.current: Loaded | None = None

    def refresh(self) -> bool:
        """Load the version the ``champion`` alias names if it is not the one served; True when
        it changed. Blocking (MLflow and file reads): call it from a thread."""
        version = tracking.alias_version(self.model_name, tracking.CHAMPION)
        if version is None or (self.current is not None and self.current.version == version):
            return False
        with tracking.scratch_dir() as tmp:
            scorer = Scorer.from_dir(tracking.download_bundle(self.model_name, version, Path(tmp)))
        self.current = Loaded(version=version, scorer=scorer)
        log.warning("serving %s version %s", self.model_name, version)
        return True


# ---- scoring ----------------------------------------------------------------------------------
def score_rows(
    loaded: Loaded, rows: list[dict[str, Any]], explain: bool, context: Sequence[dict[str, Any]] = ()
) -> list[dict[str, Any]]:
    """Predictions for validated rows (column name -> value), with reasons when ``explain``.
    ``context``: earlier rows of the same series, scored with them but not answered."""
    scorer = loaded.scorer
    every = [*context, *rows]
    frame, X = scorer.matrix({name: _column([row.get(name) for row in every]) for name in scorer.raw_inputs})
    scores = smoothed(scorer.meta.get("smoothing"), scorer.model.predict(X), frame)[len(context) :]
    X = X[len(context) :]
    predictions, values, outputs = scorer.decide(scores)
    values = scores if values is None else values  # regression: the score is the value
    reasons = scorer.reasons(X, outputs) if explain else None
    return [
        {
            "prediction": predictions[i].item() if isinstance(predictions[i], np.generic) else predictions[i],
            "score": float(values[i]),
            "reasons": None if reasons is None else [{"feature": f, "contribution": c} for f, c in reasons[i]],
        }
        for i in range(len(rows))
    ]


class History:
    """The latest rows of each series (e.g. a process run) for a model whose features or
    decisions look back in time (a rolling recipe, decision smoothing): a single-row request is
    scored after the rows its series sent before, so it gets the answer the whole series would.
    Bounded: ``depth`` rows per series, the ``max_series`` most recently seen series."""

    def __init__(self, meta: dict[str, Any], max_series: int = 10_000) -> None:
        recipe, smoothing = meta.get("recipe") or {}, meta.get("smoothing") or {}
        window = int(recipe.get("window", 0)) if recipe.get("name") == "rolling" else 0
        self.depth = window + int(smoothing.get("window", 0))  # 0: rows stand alone
        self.group = smoothing.get("group") or recipe.get("group")
        self.max_series = max_series
        self.series: OrderedDict[Any, deque[dict[str, Any]]] = OrderedDict()

    def context(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        return list(self.series.get(row.get(self.group), ()))

    def add(self, row: dict[str, Any]) -> None:
        key = row.get(self.group)
        rows = self.series.pop(key, None) or deque(maxlen=self.depth)
        rows.append(row)
        self.series[key] = rows
        while len(self.series) > self.max_series:
            self.series.popitem(last=False)


def _column(values: list[Any]) -> np.ndarray:
    """A request column as the encoder takes it: numbers (booleans as 0/1) as float64 with NaN
    for missing, anything else as objects."""
    if all(v is None or isinstance(v, int | float) for v in values):
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    return np.array(values, dtype=object)


class Batcher:
    """Single-row requests scored together: while one group is being scored (in a thread, so
    the event loop keeps taking requests), the rows that arrive wait, and are scored as the
    next group. One connection gets no added wait; many share the per-call cost of the model."""

    def __init__(self, score: Callable[..., tuple[Loaded, str, list[dict[str, Any]]]], limit: int) -> None:
        self.score = score
        self.limit = limit
        self.queue: asyncio.Queue[tuple[tuple[dict[str, Any], str], asyncio.Future]] = asyncio.Queue()
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def submit(self, row: dict[str, Any], request_id: str) -> tuple[Loaded, dict[str, Any]]:
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        await self.queue.put(((row, request_id), future))
        return await future

    async def _loop(self) -> None:
        while True:
            group = [await self.queue.get()]
            while len(group) < self.limit and not self.queue.empty():
                group.append(self.queue.get_nowait())
            rows, ids = [row for (row, _), _ in group], [rid for (_, rid), _ in group]
            try:
                if len(rows) == 1:  # alone: a thread hop would cost more than it frees the loop
                    loaded, _, answers = self.score(rows, ids)
                else:
                    loaded, _, answers = await asyncio.to_thread(self.score, rows, ids)
            except Exception as exc:  # every waiting request gets the error, the loop goes on
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), answer in zip(group, answers, strict=True):
                if not future.done():
                    future.set_result((loaded, answer))


# ---- request size -----------------------------------------------------------------------------
class BodyLimit:
    """Refuse a request body over ``limit`` bytes with 413, whether or not it declares its
    length, before the JSON is parsed (pure ASGI: the body is counted as it arrives)."""

    def __init__(self, app: Callable[..., Awaitable[None]], limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        seen = 0
        over = False

        async def counted() -> dict:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:  # the app sees a client that went away, and stops reading
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict) -> None:
            if not over:
                await send(message)

        try:
            await self.app(scope, counted, guarded_send)
        except Exception:
            if not over:
                raise
        if over:
            await self._refuse(send)

    async def _refuse(self, send: Callable) -> None:
        body = f'{{"detail":"request body over {self.limit} bytes"}}'.encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class ServiceMetrics:
    """Prometheus metrics of one app (its own registry, so several apps can live in a process)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("lepton_requests", "Scoring requests", ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram(
            "lepton_request_seconds",
            "Time to answer a scoring request",
            ["endpoint"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.rows = Counter("lepton_rows_scored", "Rows scored", registry=self.registry)
        self.version = Gauge("lepton_model_version", "The champion version served", registry=self.registry)

    @contextlib.contextmanager
    def measured(self, endpoint: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        except HTTPException as exc:
            self.requests.labels(endpoint, str(exc.status_code)).inc()
            raise
        except Exception:
            self.requests.labels(endpoint, "500").inc()
            raise
        self.requests.labels(endpoint, "200").inc()
        self.latency.labels(endpoint).observe(time.perf_counter() - start)

    def exposition(self) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


# ---- the app ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServeConfig:
    poll_seconds: float = 5.0
    api_key: str | None = None
    max_body_bytes: int = MAX_BODY_BYTES
    max_batch_rows: int = MAX_BATCH_ROWS
    explain: bool = True


class Service:
    """What the routes share: the champion, the prediction log, the metrics and the batcher."""

    def __init__(self, spec: DomainSpec, settings: Settings, config: ServeConfig) -> None:
        self.spec = spec
        self.config = config
        tracking.configure(settings)
        self.champion = Champion(spec.model_name)
        self.predlog = PredictionLog(settings.home / "predictions" / spec.name)
        self.metrics = ServiceMetrics()
        self.batcher = Batcher(self.answer, limit=config.max_batch_rows)
        self.history = History({})  # sized from the first champion's bundle

    def loaded(self) -> Loaded:
        loaded = self.champion.current
        if loaded is None:
            raise HTTPException(status_code=503, detail=f"no champion of {self.spec.model_name} is registered yet")
        return loaded

    def info(self, loaded: Loaded) -> dict[str, str]:
        return {"name": self.spec.model_name, "version": loaded.version}

    def answer(self, rows: list[dict[str, Any]], ids: list[str] | None = None) -> tuple[Loaded, str, list[dict]]:
        """Score rows of one batch request (one id), or of several single-row requests (``ids``;
        for a model that looks back in time, each after its series' earlier rows)."""
        loaded = self.loaded()
        request_id = uuid.uuid4().hex
        if ids is not None and self.history.depth:
            predictions = []
            for row in rows:
                predictions += score_rows(loaded, [row], self.config.explain, self.history.context(row))
                self.history.add(row)
        else:
            predictions = score_rows(loaded, rows, self.config.explain)
        self.predlog.append(ids or request_id, loaded.version, rows, predictions)
        self.metrics.rows.inc(len(rows))
        return loaded, request_id, predictions

    async def authorised(self, request: Request) -> None:  # async: no thread hop per request
        key = self.config.api_key
        if key is not None and not hmac.compare_digest(request.headers.get("x-api-key", "").encode(), key.encode()):
            raise HTTPException(status_code=401, detail="missing or wrong X-API-Key header")

    async def refresh(self) -> None:
        if await asyncio.to_thread(self.champion.refresh):
            current = self.champion.current
            self.metrics.version.set(float(current.version))
            sized = History(current.scorer.meta)
            if (sized.depth, sized.group) != (self.history.depth, self.history.group):
                self.history = sized

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(self.config.poll_seconds)
            try:
                await self.refresh()
            except Exception:  # the registry may be briefly unreachable: keep serving
                log.exception("could not check the champion alias of %s", self.spec.model_name)

    @contextlib.asynccontextmanager
    async def lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        try:
            await self.refresh()
        except Exception:  # /ready says 503 until the watcher finds a champion
            log.exception("no champion of %s loaded yet", self.spec.model_name)
        self.predlog.start()
        self.batcher.start()
        watcher = asyncio.create_task(self.watch())
        try:
            yield
        finally:
            watcher.cancel()
            await self.batcher.stop()
            self.predlog.close()


def _json(payload: dict[str, Any]) -> Response:
    return Response(orjson.dumps(payload), media_type="application/json")


def create_app(spec: DomainSpec, settings: Settings, config: ServeConfig | None = None) -> FastAPI:
    service = Service(spec, settings, config or ServeConfig())
    app = FastAPI(
        title=f"Lepton scoring: {spec.name}", description=spec.description, version="1", lifespan=service.lifespan
    )
    Row = row_model(spec)
    Batch = create_model(
        f"{Row.__name__}Batch",
        rows=(list[Row], Field(min_length=1, max_length=service.config.max_batch_rows)),  # type: ignore[valid-type]
        __config__=ConfigDict(extra="forbid"),
    )
    guarded = [Depends(service.authorised)]

    # Answers are built here and written with orjson; the response models document them (/docs).
    @app.post("/predict", response_model=SingleAnswer, dependencies=guarded)
    async def predict(row: Row) -> Response:  # type: ignore[valid-type]
        with service.metrics.measured("predict"):
            service.loaded()
            request_id = uuid.uuid4().hex
            loaded, prediction = await service.batcher.submit(row.model_dump(by_alias=True), request_id)
        return _json({"request_id": request_id, "model": service.info(loaded), "threshold": loaded.threshold,
                      **prediction})  # fmt: skip

    # The batch body is parsed and validated by pydantic straight from the JSON bytes (about
    # three times faster than FastAPI's json.loads then validation); /docs shows the same schema.
    batch_body = {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{Batch.__name__}"}}},
    }

    @app.post(
        "/predict/batch", response_model=BatchAnswer, dependencies=guarded, openapi_extra={"requestBody": batch_body}
    )
    async def predict_batch(request: Request) -> Response:
        with service.metrics.measured("batch"):
            try:
                batch = Batch.model_validate_json(await request.body())
            except ValidationError as exc:
                raise RequestValidationError(
                    [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
                ) from None
            rows = [row.model_dump(by_alias=True) for row in batch.rows]
            loaded, request_id, answers = await asyncio.to_thread(service.answer, rows)
        return _json({"request_id": request_id, "model": service.info(loaded), "threshold": loaded.threshold,
                      "predictions": answers})  # fmt: skip

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    def ready() -> JSONResponse:
        loaded = service.champion.current
        if loaded is None:
            return JSONResponse({"ready": False, "model": spec.model_name}, status_code=503)
        return JSONResponse({"ready": True, "model": service.info(loaded)})

    @app.get("/metrics")
    def prometheus() -> Response:
        return service.metrics.exposition()

    standard_openapi = app.openapi

    def openapi() -> dict[str, Any]:  # the batch body's schema, next to the row's
        if app.openapi_schema is None:
            schema = standard_openapi()
            batch = Batch.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in batch.pop("$defs", {}).items():
                components.setdefault(name, definition)
            components[Batch.__name__] = batch
        return app.openapi_schema or schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(BodyLimit, limit=service.config.max_body_bytes)
    app.state.service = service
    return app
