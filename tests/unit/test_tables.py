"""The reader meets real files: delimiters, quoting, BOM, encodings, text numbers, datetimes,
duplicate names and bad paths; and it is fuzzed: any bytes give a frame or a typed error."""

import datetime as dt
import os
import string

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lepton.core import tables
from lepton.core.tables import NULL_TOKENS, coerce_types, load, read_table
from lepton.errors import EmptyDataError, InputPathError, LeptonError, SchemaError


def _write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_delimiter_is_sniffed_and_quotes_keep_delimiters_inside_values(tmp_path, delimiter):
    rows = [["name", "amount", "label"], ['"Smith, J; Jr|x"', "10", "yes"], ['"Doe"', "20", "no"]]
    path = _write(tmp_path, "t.csv", "\n".join(delimiter.join(r) for r in rows) + "\n")
    loaded = load(path)
    assert loaded.frame.columns == ["name", "amount", "label"]
    assert loaded.frame["name"].to_list() == ["Smith, J; Jr|x", "Doe"]
    assert loaded.frame["amount"].dtype == pl.Int64
    assert (delimiter != ",") == any("delimiter" in n for n in loaded.notes)


def test_utf8_bom_is_skipped(tmp_path):
    path = _write(tmp_path, "bom.csv", "\ufeffid,value\n1,2\n")
    loaded = load(path)
    assert loaded.frame.columns == ["id", "value"]
    assert any("byte-order mark" in n for n in loaded.notes)


def test_non_utf8_file_names_the_line_and_the_fix(tmp_path):
    path = _write(tmp_path, "latin.csv", "city,n\nParis,1\nZürich,2\n", encoding="latin-1")
    with pytest.raises(InputPathError, match=r"not UTF-8 \(byte \d+, line 3\).*--encoding latin-1"):
        load(path)
    loaded = load(path, encoding="latin-1")
    assert loaded.frame["city"].to_list() == ["Paris", "Zürich"]
    with pytest.raises(InputPathError, match="unknown encoding 'klingon'"):
        load(path, encoding="klingon")


def test_duplicate_column_names_are_refused_in_csv_and_parquet(tmp_path):
    with pytest.raises(SchemaError) as info:
        load(_write(tmp_path, "dup.csv", "a,b,a\n1,2,3\n"))
    assert [(p.kind, p.column) for p in info.value.problems] == [("duplicate_column", "a")]
    assert "positions [0, 2]" in str(info.value)

    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "dup.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["x", "x"]), path)
    with pytest.raises(SchemaError, match="column 'x': duplicate column"):
        load(path)


def test_text_is_typed_numbers_percentages_decimal_commas_datetimes_and_missing_tokens(tmp_path):
    text = "id;rate;amount;opened;grade\n1; 13.5% ;1,5;2020-01-31;A\n2;7%;N/A;2021-02-01 10:30:00;?\n"
    frame = load(_write(tmp_path, "messy.csv", text)).frame
    assert frame.schema["id"] == pl.Int64
    assert frame["rate"].to_list() == [13.5, 7.0]
    assert frame["amount"].to_list() == [1.5, None]
    assert frame["opened"].to_list() == [dt.datetime(2020, 1, 31), dt.datetime(2021, 2, 1, 10, 30)]
    assert frame["grade"].to_list() == ["A", None]


def test_parquet_text_numbers_are_read_as_numbers_and_said(tmp_path):
    path = tmp_path / "t.parquet"
    pl.DataFrame({"income": [" 1200", "300.5", None], "city": ["a", "b", "c"]}).write_parquet(path)
    loaded = load(path)
    assert loaded.frame["income"].to_list() == [1200.0, 300.5, None]
    assert loaded.frame["city"].dtype == pl.String
    assert any("'income': numbers stored as text" in n for n in loaded.notes)


def test_thousands_separators_crlf_and_blank_lines(tmp_path):
    text = 'a,b,c\r\n1,"multi\r\nline","1,234.5"\r\n2,y,"12"\r\n\r\n'
    loaded = load(_write(tmp_path, "excel.csv", text))
    assert loaded.frame["c"].to_list() == [1234.5, 12.0]
    assert loaded.frame["b"].to_list() == ["multi\r\nline", "y"]
    assert "1 blank row(s) skipped" in loaded.notes
    european = load(_write(tmp_path, "eu.csv", 'n;amount\r\na;"1.234,5"\r\nb;7\r\n')).frame
    assert european["amount"].to_list() == [1234.5, 7.0]


def test_unnamed_columns_get_names(tmp_path):
    loaded = load(_write(tmp_path, "index.csv", ",a\n0,x\n1,y\n"))
    assert loaded.frame.columns == ["column_0", "a"]


def test_ragged_rows_are_a_read_error(tmp_path):
    with pytest.raises(InputPathError, match="cannot be read as CSV"):
        load(_write(tmp_path, "ragged.csv", "a,b\n1,2\n3,4,5,6\n"))


def test_bad_paths_are_refused_with_the_reason(tmp_path, monkeypatch):
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "table.xlsx").write_text("x")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "big.csv").write_text("a\n" + "1\n" * 100)
    (tmp_path / "dangling.csv").symlink_to(tmp_path / "gone.csv")
    os.mkfifo(tmp_path / "pipe.csv")
    cases = {
        "missing.csv": (InputPathError, "no such file"),
        "dangling.csv": (InputPathError, "no such file"),
        "folder.csv": (InputPathError, "is a directory"),
        "table.xlsx": (InputPathError, "unknown format '.xlsx'"),
        "empty.csv": (EmptyDataError, "empty"),
        "pipe.csv": (InputPathError, "not a regular file"),
    }
    for name, (error, message) in cases.items():
        with pytest.raises(error, match=message):
            read_table(tmp_path / name)
    monkeypatch.setattr(tables, "MAX_FILE_BYTES", 100)
    with pytest.raises(InputPathError, match="over the"):
        read_table(tmp_path / "big.csv")


def test_relative_paths_are_resolved(tmp_path, monkeypatch):
    _write(tmp_path, "t.csv", "a,b\n1,2\n")
    monkeypatch.chdir(tmp_path)
    assert load("t.csv").path == tmp_path / "t.csv"
    assert load("./sub/../t.csv").path == tmp_path / "t.csv"


# ---- fuzzing -------------------------------------------------------------------------------------
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_any_bytes_give_a_frame_or_a_typed_error(tmp_path, raw):
    path = tmp_path / "fuzz.csv"
    path.write_bytes(raw)
    try:
        frame = read_table(path)
    except LeptonError:
        return
    assert frame.height > 0 and frame.width > 0


_names = st.lists(st.text(string.ascii_letters + "_", min_size=1, max_size=8), min_size=1, max_size=5, unique=True)
_cells = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.floats(-1e6, 1e6, allow_nan=False).map(lambda v: f"{v:.3f}"),
    st.text(string.ascii_letters + " ,;'\"|", max_size=10),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=_names, data=st.data(), delimiter=st.sampled_from([",", ";", "\t", "|"]))
def test_quoted_tables_round_trip_through_the_reader(tmp_path, names, data, delimiter):
    rows = data.draw(st.lists(st.lists(_cells, min_size=len(names), max_size=len(names)), min_size=2, max_size=6))

    def quote(cell: str) -> str:
        return '"' + cell.replace('"', '""') + '"'

    text = "\n".join(delimiter.join(quote(c) for c in row) for row in [names, *rows]) + "\n"
    path = tmp_path / "round.csv"
    path.write_text(text, encoding="utf-8")
    try:
        frame = read_table(path)
    except LeptonError:
        return  # e.g. a file the sniffer cannot tell apart: an error is fine, a wrong table is not
    assert frame.columns == names
    # A row of empty cells or missing-value tokens only ("", "NA", "None") holds no value and is
    # skipped; one of spaces is a row of nulls.
    kept = [r for r in rows if any(c not in NULL_TOKENS for c in r)]
    raw = pl.DataFrame({n: [r[i] for r in kept] for i, n in enumerate(names)}, schema=dict.fromkeys(names, pl.String))
    expected = coerce_types(raw, decimal_comma=delimiter == ";")
    for name in names:
        got, want = frame[name].to_list(), expected[name].to_list()
        assert got == want, (name, got, want)


def test_a_partitioned_fit_shares_the_files_evenly_and_the_same_way_each_time():
    """``WorkerTable.placed``: every file with training or validation rows goes to exactly one
    worker, the rows each worker reads are balanced, files with neither are left out, and the
    same workers (in any order) give the same shares."""
    from pathlib import Path

    from lepton.core.partitions import Partition, WorkerTable

    rows = {"train": (500, 100, 0, 120, 90, 0), "valid": (0, 20, 300, 0, 10, 0)}
    sources = tuple((Partition(Path(f"part-{i}.parquet")), "data", 0) for i in range(6))
    table = WorkerTable(sources, rows, features=3, read=print, encode=print)
    shares = table.placed(["tcp://b:2", "tcp://a:1"])
    assert shares == table.placed(["tcp://a:1", "tcp://b:2"])
    assert sorted(i for parts in shares.values() for i in parts) == [0, 1, 2, 3, 4]  # part 5 has no rows
    read = sorted(sum(rows["train"][i] + rows["valid"][i] for i in parts) for parts in shares.values())
    assert read == [540, 600]  # largest first, each to the lighter worker: 500 + 100 and 300 + 120 + 120
