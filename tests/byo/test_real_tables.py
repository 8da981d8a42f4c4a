"""A new user's first hour: public tables Lepton does not ship (credit, clinical, process and
quality data, a regression target among them), each a file and a target column, no code.
Runs the real `lepton` command in a subprocess per table, as bench/real_tables.py does."""

import pytest

from bench.real_tables import TABLES, run

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("key", list(TABLES))
def test_a_public_table_gets_a_champion_at_least_as_good_as_its_baseline(tmp_path, key):
    row = run(TABLES[key], trials=4, workdir=tmp_path)
    assert "error" not in row, row
    assert row["promoted"] and row["version"] == "1", row
    assert row["candidate"] >= row["baseline"], row
