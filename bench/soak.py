"""A soak of `lepton serve`: a bounded mixed load for minutes, an alias move every minute.

    python bench/soak.py [--minutes 10]

Registers two versions of the finance model in a temporary LEPTON_HOME (``lepton run finance``
with two trial budgets), starts ``lepton serve finance`` on 127.0.0.1, and drives it from four
threads at once, each paced (about 20 requests a second in all, so the load is bounded and the
figures do not depend on how fast this machine is):

- single rows (holdout rows, cycling), and batches of 10 to 1,000 rows;
- malformed bodies: not JSON, a wrong type, NaN, an unknown field, an empty batch, a body over
  the size limit;
- every minute the champion alias moves to the other version.

At the end the server is stopped (SIGTERM: the prediction log is flushed) and the figures are
checked: no 5xx answer; the prediction log's rows equal the rows of the 200 answers; the served
version followed the alias; the server's RSS after the warm-up against its RSS at the
end (the warm-up: two minutes, each version loaded once). Writes ``bench/results/soak.json``;
exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import run_once, write
from lepton.app.stack import free_port

BIN = Path(sys.executable).parent
# Warm-up: two minutes, so that each of the two versions has been loaded once (the first alias
# move is at one minute). The first move adds a one-time ~90 MB (measured alone: 283 -> 377 MB on
# the first swap, then flat over 11 more swaps), which is not growth over time.
WARMUP_S = 120.0
SETTLE_S = 30.0  # no alias move in the last 30 s: the served version is compared with the alias at the end
RATE_PER_THREAD = 5.0  # requests a second per thread, four threads


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _rows(home: Path) -> list[dict]:
    os.environ["LEPTON_HOME"] = str(home)
    from lepton.core.inputs import input_records
    from lepton.domains import get_spec
    from lepton.tasks.preprocess import load_domain_data, prepare

    spec = get_spec("finance")
    data = prepare(spec, *load_domain_data(spec))
    return input_records(spec, data.holdout.frame.head(1_000))


class Load:
    """What the threads saw: answers by status, rows answered 200, and every failure's text."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.status: Counter[str] = Counter()
        self.rows_ok = 0
        self.server_errors: list[str] = []
        self.versions: Counter[str] = Counter()

    def record(self, kind: str, response: httpx.Response, rows: int) -> None:
        with self.lock:
            self.status[f"{kind} {response.status_code}"] += 1
            if response.status_code == 200:
                self.rows_ok += rows
                self.versions[response.json()["model"]["version"]] += 1
            elif response.status_code >= 500:
                self.server_errors.append(f"{kind}: {response.status_code} {response.text[:200]}")


def _paced(until: float, work) -> None:
    with httpx.Client(timeout=60) as client:
        while time.monotonic() < until:
            start = time.monotonic()
            work(client)
            time.sleep(max(0.0, 1 / RATE_PER_THREAD - (time.monotonic() - start)))


def _singles(url: str, rows: list[dict], load: Load, until: float) -> None:
    i = iter(range(10**9))
    _paced(until, lambda c: load.record("single", c.post(f"{url}/predict", json=rows[next(i) % len(rows)]), 1))


def _batches(url: str, rows: list[dict], load: Load, until: float, seed: int) -> None:
    rng = random.Random(seed)

    def one(client: httpx.Client) -> None:
        size = rng.choice([10, 100, 1_000])
        start = rng.randrange(len(rows))
        chosen = [rows[(start + k) % len(rows)] for k in range(size)]
        load.record("batch", client.post(f"{url}/predict/batch", json={"rows": chosen}), size)

    _paced(until, one)


def _malformed(url: str, rows: list[dict], load: Load, until: float) -> None:
    row = rows[0]
    bodies = [
        ("/predict", b"{not json"),
        ("/predict", json.dumps({**row, "int_rate": "high"}).encode()),
        ("/predict", json.dumps({**row, "int_rate": 0.0}).replace('"int_rate": 0.0', '"int_rate": NaN').encode()),
        ("/predict", json.dumps({**row, "typo": 1}).encode()),
        ("/predict/batch", b'{"rows": []}'),
        ("/predict/batch", json.dumps({"rows": [row] * 30_000}).encode()),  # over the body limit: 413
    ]
    i = iter(range(10**9))

    def one(client: httpx.Client) -> None:
        path, body = bodies[next(i) % len(bodies)]
        load.record(
            "malformed", client.post(f"{url}{path}", content=body, headers={"content-type": "application/json"}), 0
        )

    _paced(until, one)


def _server(home: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [str(BIN / "lepton"), "serve", "finance", "--port", str(port), "--poll", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return server, url
        except httpx.TransportError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError("lepton serve did not become ready in 120 s")


def _soak(server: subprocess.Popen, url: str, rows: list[dict], seconds: float, move) -> dict:
    """Drive the load for ``seconds``, sampling the server's RSS and calling ``move(i)`` every
    minute; the figures the checks read."""
    load = Load()
    start = time.monotonic()
    until = start + seconds
    threads = [
        threading.Thread(target=_singles, args=(url, rows, load, until)),
        threading.Thread(target=_batches, args=(url, rows, load, until, 1)),
        threading.Thread(target=_batches, args=(url, rows, load, until, 2)),
        threading.Thread(target=_malformed, args=(url, rows, load, until)),
    ]
    for thread in threads:
        thread.start()
    rss: list[tuple[float, float]] = []
    moves = 0
    while time.monotonic() < until:
        time.sleep(5)
        rss.append((time.monotonic() - start, _rss_mb(server.pid)))
        if time.monotonic() - start >= 60 * (moves + 1) and until - time.monotonic() > SETTLE_S:
            moves += 1
            move(moves)
    for thread in threads:
        thread.join()
    settled = [mb for t, mb in rss if t >= WARMUP_S] or [rss[0][1]]
    return {
        "answers": dict(sorted(load.status.items())),
        "server_errors": load.server_errors[:20],
        "rows_answered_200": load.rows_ok,
        "alias_moves": moves,
        "versions_served": dict(load.versions),
        "served_at_end": httpx.get(f"{url}/ready", timeout=10).json()["model"]["version"],
        "rss_mb_after_warmup": round(settled[0], 1),
        "rss_mb_end": round(rss[-1][1], 1),
        "rss_mb_peak": round(max(mb for _, mb in rss), 1),
        "rss_growth": round(rss[-1][1] / settled[0] - 1, 4),
        "rss_mb_each_minute": [round(mb, 1) for t, mb in rss if int(t) % 60 < 5],
    }


def _failures(report: dict) -> list[str]:
    failures = []
    if report["server_errors"]:
        failures.append(f"{len(report['server_errors'])} 5xx answer(s)")
    if report["rows_logged"] != report["rows_answered_200"]:
        failures.append(
            f"prediction log holds {report['rows_logged']} rows, the 200 answers {report['rows_answered_200']}"
        )
    if report["served_at_end"] != report["alias_at_end"]:
        failures.append(f"serving v{report['served_at_end']} at the end, the alias names v{report['alias_at_end']}")
    if report["rss_growth"] >= 0.10:
        failures.append(f"RSS grew {report['rss_growth']:.1%} after the warm-up")
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    report: dict = {"benchmark": "soak", "domain": "finance", "minutes": args.minutes}
    with tempfile.TemporaryDirectory(prefix="lepton-soak-") as tmp:
        home = Path(tmp) / "home"
        env = {**os.environ, "LEPTON_HOME": str(home), "DO_NOT_TRACK": "true"}
        env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
        env.pop("MLFLOW_TRACKING_URI", None)
        for trials in ("0", "1"):  # two trial budgets: two run keys, two versions
            run_once([str(BIN / "lepton"), "run", "finance", "--trials", trials, "--json"], env)
        rows = _rows(home)
        from lepton.core import tracking
        from lepton.core.predlog import read_log
        from lepton.core.settings import load_settings

        tracking.configure(load_settings())
        versions = ["1", "2"]
        tracking.set_alias("lepton-finance", tracking.CHAMPION, versions[0])
        server, url = _server(home, env)
        try:
            report.update(
                _soak(server, url, rows, args.minutes * 60,
                      lambda i: tracking.set_alias("lepton-finance", tracking.CHAMPION, versions[i % 2]))
            )  # fmt: skip
        finally:
            server.send_signal(signal.SIGTERM)  # the prediction log is flushed on the way out
            server.wait(timeout=60)
        report["alias_at_end"] = versions[report["alias_moves"] % 2]
        report["rows_logged"] = read_log(home / "predictions" / "finance").height
    report["failures"] = _failures(report)
    print(json.dumps(report, indent=1))
    print(f"written to {write('soak', report)}")
    sys.exit(1 if report["failures"] else 0)


if __name__ == "__main__":
    main()
