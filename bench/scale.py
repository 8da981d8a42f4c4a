"""The whole pipeline at scale: ``lepton run finance`` on tables from ``lepton synth finance``.

    python bench/scale.py --rows 1000000 10000000 [--trials 8]
    python bench/scale.py --partitioned --rows 1000000 10000000 30000000 [--worker-memory 9GB]

Each size: the synthetic table (the domain's schema, the real dependence between features and
target) is written once, then ``lepton run finance --data F --json`` runs as a fresh process;
its wall time, peak RSS (wait4), the seconds of each stage, the holdout metrics and where the
model was trained are kept in ``bench/results/scale.json``. Candidates are fitted on at most
LEPTON_SEARCH_ROWS training rows, and the chosen tree model on every row (xgboost.dask from
LEPTON_DISTRIBUTED_ROWS), as in any run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import run_once, write

BIN = Path(sys.executable).parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", nargs="+", type=int, default=[1_000_000, 10_000_000])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--partitioned", action="store_true", help="a folder of files on a process cluster")
    parser.add_argument("--worker-memory", default="9GB", help="each worker's --memory-limit")
    parser.add_argument("--file-rows", type=int, default=250_000, help="rows per file")
    parser.add_argument("--lepton-only", action="store_true", help="with --partitioned: not the script by hand")
    parser.add_argument(
        "--domain", default="finance", choices=["finance", "manufacturing"],
        help="with --partitioned: the table to synthesise (the script by hand runs for finance only)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.partitioned:
        partitioned(args)
        return
    report: dict = {"benchmark": "scale", "domain": "finance", "trials": args.trials, "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="lepton-scale-") as tmp:
        env = {
            "LEPTON_HOME": str(Path(tmp) / "home"),
            "DO_NOT_TRACK": "true",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        for rows in args.rows:
            data = Path(tmp) / f"finance_{rows}.parquet"
            start = time.perf_counter()
            run_once([str(BIN / "lepton"), "synth", "finance", "--rows", str(rows), "-o", str(data)], env)
            synth_seconds = time.perf_counter() - start
            cmd = [str(BIN / "lepton"), "run", "finance", "--data", str(data), "--json", "--trials", str(args.trials)]
            sample, out = run_once(cmd, env, tree=True)
            result = json.loads(out.strip().splitlines()[-1])
            report["sizes"][str(rows)] = {
                "seconds": sample.seconds,
                "peak_rss_mb": sample.peak_rss_mb,
                "tree_peak_mb": sample.tree_peak_mb,
                "synth_seconds": synth_seconds,
                "file_mb": data.stat().st_size / 2**20,
                "stages": {k: v["seconds"] for k, v in result["stages"].items()},
                "metrics": result["metrics"],
                "baseline_metrics": result["baseline_metrics"],
                "trained_on": result["engine"]["trained_on"],
            }
            write("scale", report)
            data.unlink()
            print(
                f"{rows:>10,} rows: {sample.seconds:7.1f}s, peak {sample.peak_rss_mb:,.0f} MB "
                f"(all processes {sample.tree_peak_mb:,.0f} MB), "
                f"ROC AUC {result['metrics']['roc_auc']:.4f} (baseline {result['baseline_metrics']['roc_auc']:.4f}), "
                f"stages {report['sizes'][str(rows)]['stages']}, trained on {result['engine']['trained_on']}",
                flush=True,
            )
    print(f"written to {write('scale', report)}")


class ProcessCluster:
    """``dask scheduler`` and two ``dask worker`` processes (nanny, memory limit) on 127.0.0.1,
    whose resident memory is sampled (peak per worker, nanny and worker together)."""

    def __init__(self, folder: Path, memory: str, workers: int = 2) -> None:
        import psutil

        self.file = folder / "scheduler.json"
        self.file.unlink(missing_ok=True)
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        self.scheduler = subprocess.Popen(
            [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(self.file)], **quiet,
        )  # fmt: skip
        while not self.file.exists():
            time.sleep(0.1)
        time.sleep(0.5)
        self.address = json.loads(self.file.read_text())["address"]
        worker = [str(BIN / "dask"), "worker", self.address, "--host", "127.0.0.1", "--nthreads", "1",
                  "--memory-limit", memory, "--no-dashboard"]  # fmt: skip
        self.workers = [
            subprocess.Popen([*worker, "--name", f"w{i}", "--local-directory", str(folder / f"w{i}")], **quiet)
            for i in range(workers)
        ]
        self.processes = [psutil.Process(w.pid) for w in self.workers]
        self.peaks = [0.0] * workers
        self.done = threading.Event()
        self.sampler = threading.Thread(target=self._sample, daemon=True)
        self.sampler.start()
        from distributed import Client

        with Client(self.address, timeout="60s") as client:
            client.wait_for_workers(workers, timeout=120)

    def _sample(self) -> None:
        import psutil

        while not self.done.wait(0.2):
            for i, process in enumerate(self.processes):
                try:
                    tree = [process, *process.children(recursive=True)]
                    total = sum(p.memory_info().rss for p in tree)
                except psutil.NoSuchProcess:
                    continue
                self.peaks[i] = max(self.peaks[i], total / 2**20)

    def reset(self) -> list[float]:
        peaks, self.peaks = self.peaks, [0.0] * len(self.peaks)
        return peaks

    def stop(self) -> None:
        self.done.set()
        for process in [*self.workers, self.scheduler]:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
        for process in [*self.workers, self.scheduler]:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)


XGB_PARAMS = (
    "max_depth", "learning_rate", "min_child_weight", "subsample", "colsample_bytree", "reg_lambda", "max_bin",
)  # fmt: skip


def _chosen(home: Path, run_id: str) -> tuple[dict, int]:
    """The chosen model's parameters and its boosting rounds, from Lepton's MLflow run."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    params = client.get_run(run_id).data.params
    chosen = {k: float(params[k]) if "." in params[k] else int(params[k]) for k in XGB_PARAMS if k in params}
    return chosen, int(params.get("n_estimators", params.get("model.n_estimators", 300)))


def partitioned(args: argparse.Namespace) -> None:
    domain = args.domain
    settings = {k: v for k, v in os.environ.items() if k in ("LEPTON_SEARCH_ROWS", "LEPTON_DISTRIBUTED_ROWS")}
    report: dict = {"benchmark": "scale_partitioned", "domain": domain, "trials": args.trials,
                    "worker_memory": args.worker_memory, "settings": settings, "sizes": {}}  # fmt: skip
    name = "scale_partitioned" if domain == "finance" else f"scale_partitioned_{domain}"
    with tempfile.TemporaryDirectory(prefix="lepton-scale-") as tmp:
        home = Path(tmp) / "home"
        cluster = ProcessCluster(Path(tmp), args.worker_memory)
        env = {"LEPTON_HOME": str(home), "DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "LEPTON_DASK_ADDRESS": cluster.address}  # fmt: skip
        try:
            for rows in args.rows:
                data = Path(tmp) / f"{domain}_{rows}"
                files = max(2, -(-rows // args.file_rows))
                start = time.perf_counter()
                run_once([str(BIN / "lepton"), "synth", domain, "--rows", str(rows), "--files", str(files),
                          "-o", str(data), "--force"], env)  # fmt: skip
                synth_seconds = time.perf_counter() - start
                size_mb = sum(f.stat().st_size for f in data.iterdir()) / 2**20
                in_memory_mb = _in_memory_mb(data)
                cluster.reset()
                cmd = [str(BIN / "lepton"), "run", domain, "--data", str(data), "--json",
                       "--trials", str(args.trials), "--no-cache"]  # fmt: skip
                holdout = data.with_name(f"{data.name}_holdout")  # a domain with a given test table
                if holdout.exists():
                    cmd += ["--holdout", str(holdout)]
                sample, out = run_once(cmd, env, tree=True)
                lepton_workers = cluster.reset()
                result = json.loads(out.strip().splitlines()[-1])
                params, rounds = _chosen(home, result["run_id"])
                metric = result["primary_metric"]
                entry = {
                    "files": files,
                    "file_mb": size_mb,
                    "in_memory_mb": in_memory_mb,
                    "synth_seconds": synth_seconds,
                    "lepton": {
                        "seconds": sample.seconds,
                        "driver_peak_mb": sample.peak_rss_mb,  # wait4: the largest of it and its children
                        "driver_own_peak_mb": sample.own_peak_mb,  # the lepton process alone, sampled
                        "driver_tree_peak_mb": sample.tree_peak_mb,  # with the temporary Prefect server
                        "worker_peak_mb": lepton_workers,
                        "stages": {k: v["seconds"] for k, v in result["stages"].items()},
                        "metric": metric,
                        "value": result["metrics"][metric],
                        "baseline_value": result["baseline_metrics"][metric],
                        "trained_on": result["engine"]["trained_on"],
                        "family": result["family"],
                        "params": params,
                        "rounds": rounds,
                        "final_fit_seconds": _final_fit_seconds(home, result["run_id"]),
                        "trials": _trials(home, result["run_id"]),
                    },
                }
                report["sizes"][str(rows)] = entry
                write(name, report)  # kept should the script by hand fail
                mb = ", ".join(f"{w:,.0f}" for w in lepton_workers)
                line = (
                    f"{rows:>11,} rows ({files} files, {in_memory_mb:,.0f} MB in memory, synth {synth_seconds:.0f}s): "
                    f"Lepton {sample.seconds:.1f}s, driver {sample.peak_rss_mb:,.0f} MB (itself "
                    f"{sample.own_peak_mb or 0:,.0f} MB, with its children {sample.tree_peak_mb or 0:,.0f} MB), "
                    f"workers {mb} MB, "
                    f"{metric} {entry['lepton']['value']:.4f}, {entry['lepton']['trained_on']}, "
                    f"stages {entry['lepton']['stages']}"
                )
                if domain == "finance" and not args.lepton_only:
                    hand_cmd = [str(BIN / "python"), str(Path(__file__).with_name("by_hand.py")), str(data),
                                "--address", cluster.address, "--params", json.dumps(params),
                                "--rounds", str(rounds), "--features", "credit"]  # fmt: skip
                    hand, hand_out = run_once(hand_cmd, env)
                    hand_workers = cluster.reset()
                    by_hand = json.loads(hand_out.strip().splitlines()[-1])
                    entry["by_hand"] = {**by_hand, "driver_peak_mb": hand.peak_rss_mb, "worker_peak_mb": hand_workers}
                    write(name, report)
                    line += (
                        f"; by hand {by_hand['seconds']:.1f}s (fit {by_hand['steps']['fit']:.1f}s), driver "
                        f"{hand.peak_rss_mb:,.0f} MB, workers {', '.join(f'{w:,.0f}' for w in hand_workers)} MB, "
                        f"ROC AUC {by_hand['roc_auc']:.4f}"
                    )
                shutil.rmtree(data)
                shutil.rmtree(holdout, ignore_errors=True)
                print(line, flush=True)
        finally:
            cluster.stop()
    print(f"written to {write(name, report)}")


def _trials(home: Path, run_id: str) -> list[dict]:
    """Each candidate's family, source, state and fit seconds (Lepton's nested trial runs), so the
    search's cost can be read by family."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_run(run_id).info.experiment_id
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{run_id}'")
    rows = []
    for child in sorted(children, key=lambda r: r.info.run_name):
        tags, params = child.data.tags, child.data.params
        rows.append({
            "name": child.info.run_name,
            "family": params.get("family"),
            "source": tags.get("lepton.source"),
            "state": tags.get("lepton.trial_state"),
            "fit_seconds": child.data.metrics.get("fit_seconds"),
        })  # fmt: skip
    return rows


def _in_memory_mb(folder: Path) -> float:
    """The table's size in memory as polars holds it: one file read, scaled by the rows."""
    import polars as pl
    import pyarrow.parquet as pq

    files = sorted(folder.iterdir())
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    first = pl.read_parquet(files[0])
    return first.estimated_size() / max(1, first.height) * rows / 2**20


def _final_fit_seconds(home: Path, run_id: str) -> float | None:
    """How long the chosen model's last fit took (the run's ``fit_seconds``), if it was logged."""
    from mlflow import MlflowClient

    run = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}").get_run(run_id)
    value = run.data.metrics.get("fit_seconds", run.data.params.get("fit_seconds"))
    return float(value) if value is not None else None


if __name__ == "__main__":
    main()
