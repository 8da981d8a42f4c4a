"""The scoring service against `mlflow models serve` of the same registered model.

    python bench/serve.py [--seconds 15] [--connections 1 32]

Trains the finance model once (``lepton run finance --trials 0`` in a temporary LEPTON_HOME),
then starts each server on 127.0.0.1 in turn — ``lepton serve finance`` and
``mlflow models serve -m models:/lepton-finance@champion --env-manager local`` (one process
each, their defaults otherwise) — and drives it with the same closed-loop load generator: K
keep-alive connections, each sending the next request as soon as the last is answered, for a
fixed time, single-row requests (one holdout row per request, cycling) and batch requests (1,000
rows). Reports requests and rows per second, p50/p99 latency and the count of failed requests;
writes ``bench/results/serve.json``.

The generator is raw asyncio sockets with pre-encoded requests, so it costs microseconds per
request; it still shares this machine's cores with the server, equally for both servers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import run_once, write
from lepton.app.stack import free_port

BIN = Path(sys.executable).parent
BATCH_ROWS = 1_000
MLFLOW_SERVE = [str(BIN / "mlflow"), "models", "serve", "-m", "models:/lepton-finance@champion",
                "--env-manager", "local", "--host", "127.0.0.1"]  # fmt: skip


def _records(rows: list[dict]) -> bytes:
    return json.dumps({"dataframe_records": rows}).encode()


def _request(port: int, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _connection(port: int, requests: list[bytes], until: float, latencies: list[float], failures: list[int]):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = 0
    try:
        while time.perf_counter() < until:
            start = time.perf_counter()
            writer.write(requests[i % len(requests)])
            i += 1
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            if b" 200 " not in status_line:
                failures.append(int(status_line.split()[1]))
            latencies.append(time.perf_counter() - start)
    finally:
        writer.close()


def drive(port: int, requests: list[bytes], connections: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    failures: list[int] = []

    async def main() -> None:
        until = time.perf_counter() + seconds
        await asyncio.gather(*(_connection(port, requests, until, latencies, failures) for _ in range(connections)))

    start = time.perf_counter()
    asyncio.run(main())
    elapsed = time.perf_counter() - start
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "failed": len(failures),
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)],
    }


def _wait_ready(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready in 180 s")


def _rows(home: Path) -> list[dict]:
    os.environ["LEPTON_HOME"] = str(home)
    from lepton.core.inputs import input_records
    from lepton.domains import get_spec
    from lepton.tasks.preprocess import load_domain_data, prepare

    spec = get_spec("finance")
    data = prepare(spec, *load_domain_data(spec))
    return input_records(spec, data.holdout.frame.head(BATCH_ROWS))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 32])
    args = parser.parse_args()
    report: dict = {"benchmark": "serve", "domain": "finance", "seconds": args.seconds, "servers": {}}
    with tempfile.TemporaryDirectory(prefix="lepton-serve-") as tmp:
        home = Path(tmp) / "home"
        env = {
            **os.environ,
            "LEPTON_HOME": str(home),
            "DO_NOT_TRACK": "true",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # mlflow starts `uvicorn` by name
        }
        env.pop("MLFLOW_TRACKING_URI", None)
        run_once([str(BIN / "lepton"), "run", "finance", "--trials", "0", "--json"], env)
        rows = _rows(home)
        tracking_uri = f"sqlite:///{home / 'mlflow.db'}"
        servers = {
            "lepton serve": (
                lambda port: [str(BIN / "lepton"), "serve", "finance", "--port", str(port)],
                "/ready",
                lambda port: [_request(port, "/predict", json.dumps(r).encode()) for r in rows],
                lambda port: [_request(port, "/predict/batch", json.dumps({"rows": rows}).encode())],
            ),
            "mlflow models serve": (
                lambda port: [*MLFLOW_SERVE, "--port", str(port)],
                "/ping",
                lambda port: [_request(port, "/invocations", _records([r])) for r in rows],
                lambda port: [_request(port, "/invocations", _records(rows))],
            ),
        }
        for name, (command, ready, singles, batches) in servers.items():
            port = free_port()
            proc = subprocess.Popen(
                command(port), env={**env, "MLFLOW_TRACKING_URI": tracking_uri}, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                _wait_ready(f"http://127.0.0.1:{port}{ready}", proc)
                drive(port, singles(port)[:50], 1, 2.0)  # warm-up
                results = {}
                for k in args.connections:
                    results[f"single_c{k}"] = drive(port, singles(port), k, args.seconds)
                    print(f"{name:>20} single-row, {k:>2} connection(s): {_line(results[f'single_c{k}'])}", flush=True)
                batch = drive(port, batches(port), 2, args.seconds)
                batch["rows_per_s"] = batch["requests_per_s"] * BATCH_ROWS
                results["batch_c2"] = batch
                rate = f"{batch['rows_per_s']:,.0f} rows/s"
                print(f"{name:>20} batch of {BATCH_ROWS}, 2 connections: {_line(batch)}, {rate}")
                report["servers"][name] = results
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    lep, ml = report["servers"]["lepton serve"], report["servers"]["mlflow models serve"]
    report["ratios"] = {key: lep[key]["requests_per_s"] / ml[key]["requests_per_s"] for key in lep}
    print("throughput ratios (lepton / mlflow):", {k: round(v, 1) for k, v in report["ratios"].items()})
    print(f"written to {write('serve', report)}")


def _line(r: dict[str, float]) -> str:
    rate, p50, p99 = r["requests_per_s"], r["p50_ms"], r["p99_ms"]
    return f"{rate:8.1f} req/s, p50 {p50:6.1f} ms, p99 {p99:6.1f} ms, failed {r['failed']}"


if __name__ == "__main__":
    main()
