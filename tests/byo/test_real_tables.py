"""A new user's first hour: public tables Lepton does not ship (credit, clinical, process and
quality data, a regression target among them), each a file and a target column, no code.
Runs the real `lepton` command in a subprocess per table, as bench/real_tables.py does, and
holds each to what its rules must find: leaks stopped and named, ids, personal data, the time
column, and a champion at least as good as its baseline (after the named leaks are dropped)."""

import pytest

from bench.real_tables import TABLES, failures, run

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("key", list(TABLES))
def test_a_public_table_keeps_every_promise(tmp_path, key):
    row = run(TABLES[key], trials=4, workdir=tmp_path)
    assert failures(row, TABLES[key]) == [], row
    assert row["promoted"], row
