import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lepton.core.tables import fingerprint, read_table
from lepton.domains.spec import DomainSpec
from lepton.errors import EmptyDataError, InputPathError, SchemaError
from lepton.tasks.preprocess import TabularEncoder, drop_unlabelled, prepare, split_frame, validate


def _spec(kind="stratified", task="binary"):
    return DomainSpec.model_validate(
        {
            "name": "toy",
            "data": {"path": "toy.csv"},
            "columns": [
                {"name": "amount", "dtype": "float"},
                {"name": "grade", "dtype": "category"},
                {"name": "year", "dtype": "int", "role": "time"},
                {"name": "label", "dtype": "category", "role": "target"},
            ],
            "task": task,
            "positive_class": "bad" if task == "binary" else None,
            "split": {"kind": kind, "holdout_size": 0.25, "validation_size": 0.25},
            "primary_metric": "roc_auc" if task == "binary" else "f1_macro",
            "metrics": ["roc_auc"] if task == "binary" else ["f1_macro"],
        }
    )


def _frame(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "amount": rng.normal(size=n),
            "grade": rng.choice(["A", "B", "C"], size=n),
            "year": np.repeat(np.arange(2000, 2000 + n // 4), 4)[:n],
            "label": np.where(np.arange(n) % 4 == 0, "bad", "good"),
        }
    )


def test_valid_frame_passes_and_is_cast():
    out = validate(_frame().with_columns(pl.col("amount").cast(pl.String)), _spec())
    assert out.schema["amount"] == pl.Float64
    assert out.columns == ["amount", "grade", "year", "label"]


def test_every_bad_column_is_named_at_once():
    bad = pl.DataFrame(
        {
            "amount": ["1.0", "2.5", "lots"],
            "grade": [None, None, None],
            "year": [2000, 2001, 2002],
            "other": [1, 2, 3],
        }
    )
    with pytest.raises(SchemaError) as info:
        validate(bad, _spec())
    kinds = {(p.kind, p.column) for p in info.value.problems}
    assert kinds == {("wrong_dtype", "amount"), ("all_null", "grade"), ("missing_column", "label")}
    assert "row 3 holds 'lots'" in str(info.value)


def test_single_class_target_is_refused():
    frame = _frame().with_columns(pl.lit("good").alias("label"))
    with pytest.raises(SchemaError, match="single class"):
        validate(frame, _spec())


def test_missing_positive_class_is_named():
    frame = _frame().with_columns(
        pl.when(pl.col("label") == "bad").then(pl.lit("poor")).otherwise(pl.lit("good")).alias("label")
    )
    with pytest.raises(SchemaError, match="positive class 'bad' never occurs"):
        validate(frame, _spec())


def test_unlabelled_rows_are_left_out_and_named():
    frame = _frame(80).with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise(pl.col("label")).alias("label")
    )
    out, notes = drop_unlabelled(validate(frame, _spec()), _spec())
    assert out.height == 79 and out["label"].null_count() == 0
    assert notes and "1 row(s)" in notes[0] and "rows [4]" in notes[0]
    prepared = prepare(_spec(), frame)
    assert prepared.notes == tuple(notes)
    assert prepared.train.rows + prepared.valid.rows + prepared.holdout.rows == 79


def test_empty_frame_and_files(tmp_path):
    with pytest.raises(EmptyDataError):
        validate(_frame().head(0), _spec())
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(EmptyDataError):
        read_table(empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text("amount,grade,year,label\n")
    with pytest.raises(EmptyDataError):
        read_table(header_only)


@pytest.mark.parametrize("name", ["missing.csv", "dir", "table.xlsx"])
def test_bad_paths_are_refused(tmp_path, name):
    (tmp_path / "dir").mkdir()
    (tmp_path / "table.xlsx").write_text("x")
    with pytest.raises(InputPathError):
        read_table(tmp_path / name)


def test_time_split_never_trains_on_the_future():
    train, valid, holdout = split_frame(validate(_frame(80), _spec("time")), _spec("time"))
    assert train["year"].max() < valid["year"].min() <= valid["year"].max() < holdout["year"].min()
    assert train.height + valid.height + holdout.height == 80


def test_stratified_split_keeps_the_class_ratio_and_is_seeded():
    frame = validate(_frame(400), _spec())
    train, valid, holdout = split_frame(frame, _spec())
    for part in (train, valid, holdout):
        assert part["label"].eq("bad").mean() == pytest.approx(0.25, abs=0.02)
    assert split_frame(frame, _spec())[2].equals(holdout)


def test_encoder_learns_levels_from_train_only():
    train = pl.DataFrame({"amount": [1.0, None], "grade": ["A", "B"]})
    later = pl.DataFrame({"amount": [3.0, 4.0], "grade": ["C", "A"]})
    enc = TabularEncoder(["amount"], ["grade"]).fit(train)
    assert enc.state_["categorical"] == {"grade": ["A", "B"]}
    X = enc.transform(later)
    np.testing.assert_array_equal(X, [[3.0, 0.0, 0.0], [4.0, 1.0, 0.0]])  # unseen 'C' -> all zeros
    assert np.isnan(enc.transform(train)[1, 0])


def test_prepare_encodes_labels_positive_last():
    data = prepare(_spec(), _frame(200))
    assert data.classes == ["good", "bad"]
    assert set(np.unique(data.train.y)) == {0, 1}
    assert data.train.X.shape[1] == 1 + 3


def test_fingerprint_tracks_content():
    a = _frame()
    assert fingerprint(a) == fingerprint(a.clone())
    assert fingerprint(a) != fingerprint(a.with_columns(pl.col("amount") + 1e-9))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_validate_fuzz_only_raises_schema_errors(data):
    """Whatever a file holds, validation returns a typed frame or a SchemaError naming columns."""
    n = data.draw(st.integers(1, 12))
    cell = st.one_of(st.none(), st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=4))
    columns = {}
    for name in data.draw(
        st.lists(st.sampled_from(["amount", "grade", "year", "label", "x"]), unique=True, max_size=5)
    ):
        values = data.draw(st.lists(cell, min_size=n, max_size=n))
        columns[name] = pl.Series(name, [None if v is None else str(v) for v in values], dtype=pl.String)
    frame = pl.DataFrame(columns) if columns else pl.DataFrame({"x": ["1"] * n})
    try:
        out = validate(frame, _spec())
    except SchemaError as exc:
        assert exc.problems and all(p.column in {"amount", "grade", "year", "label"} for p in exc.problems)
    else:
        assert out.columns == ["amount", "grade", "year", "label"]


def test_a_holdout_file_is_refused_where_the_split_would_ignore_it(tmp_path):
    from lepton.domains import get_spec
    from lepton.tasks.preprocess import load_domain_data

    path = tmp_path / "test.csv"
    _frame().write_csv(path)
    with pytest.raises(InputPathError, match="would be ignored"):
        load_domain_data(get_spec("finance"), holdout=str(path))
    with pytest.raises(InputPathError, match="pass holdout data too"):
        load_domain_data(get_spec("manufacturing"), data=str(path))


def _group_spec():
    """The toy spec with ``year`` as a group column (a random split by group)."""
    return DomainSpec.model_validate(
        {
            **_spec().model_dump(mode="json"),
            "columns": [
                {"name": "amount", "dtype": "float"},
                {"name": "grade", "dtype": "category"},
                {"name": "year", "dtype": "int", "role": "group"},
                {"name": "label", "dtype": "category", "role": "target"},
            ],
        }
    )


def test_random_split_with_a_group_column_keeps_each_group_on_one_side():
    spec = _group_spec()
    frame = validate(_frame(400), spec)
    train, valid, holdout = split_frame(frame, spec)
    sides = [set(part["year"].to_list()) for part in (train, valid, holdout)]
    assert all(sides) and not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    assert train.height + valid.height + holdout.height == 400


def test_a_holdout_with_a_single_class_is_refused_by_name():
    # Time split: the latest years hold only 'good' loans, so the holdout cannot be scored.
    frame = _frame(80).with_columns(
        pl.when(pl.col("year") >= 2015).then(pl.lit("good")).otherwise(pl.col("label")).alias("label")
    )
    with pytest.raises(SchemaError, match=r"the holdout split \(\d+ rows\)") as info:
        prepare(_spec("time"), frame)
    assert info.value.problems[0].kind == "single_class"


@pytest.mark.parametrize("kind", ["time", "stratified"])
def test_appended_rows_train_and_the_holdout_stays_the_tables_own(kind, tmp_path):
    from lepton.tasks.preprocess import load_domain_data

    spec = _spec(kind)
    table, batch = _frame(80), _frame(24, seed=1).with_columns(pl.col("year") + 40)  # later than any row
    table.write_parquet(tmp_path / "table.parquet")
    batch.write_parquet(tmp_path / "batch.parquet")
    frame, _ = load_domain_data(spec, data=str(tmp_path / "table.parquet"), append=str(tmp_path / "batch.parquet"))
    train, valid, holdout = split_frame(validate(frame, spec), spec)

    alone = split_frame(validate(table, spec), spec)
    assert holdout.equals(alone[2])  # a retrain is judged on the champion's own holdout
    learned = set(train["amount"]) | set(valid["amount"])
    assert set(batch["amount"]) <= learned  # the whole batch trains (the latest years would be the holdout)
    assert set(batch["amount"]) & set(train["amount"]) and set(batch["amount"]) & set(valid["amount"])
    assert "__lepton_appended" not in train.columns
    assert train.height + valid.height + holdout.height == 104
    if kind == "time":  # the batch's own latest rows validate, as the table's do
        later = batch.filter(pl.col("amount").is_in(valid["amount"].implode()))
        assert later["year"].min() >= batch.filter(pl.col("amount").is_in(train["amount"].implode()))["year"].max()


def test_an_appended_row_of_a_held_out_group_joins_the_holdout(tmp_path):
    from lepton.tasks.preprocess import load_domain_data

    spec = _group_spec()
    table, batch = _frame(400), _frame(40, seed=1)  # the batch's groups are the table's
    table.write_parquet(tmp_path / "table.parquet")
    batch.write_parquet(tmp_path / "batch.parquet")
    frame, _ = load_domain_data(spec, data=str(tmp_path / "table.parquet"), append=str(tmp_path / "batch.parquet"))
    train, valid, holdout = split_frame(validate(frame, spec), spec)
    held = set(split_frame(validate(table, spec), spec)[2]["year"])
    assert set(holdout["year"]) == held and set(train["year"]).isdisjoint(held) and set(valid["year"]).isdisjoint(held)
    assert batch.filter(pl.col("year").is_in(list(held))).height > 0  # the case is exercised


def test_an_appended_batch_of_one_time_stamp_still_trains(tmp_path):
    from lepton.tasks.preprocess import load_domain_data

    spec = _spec("time")
    _frame(80).write_parquet(tmp_path / "table.parquet")
    batch = _frame(24, seed=1).with_columns(pl.lit(2050).alias("year"))  # one year: the tail rule takes it all
    batch.write_parquet(tmp_path / "batch.parquet")
    frame, _ = load_domain_data(spec, data=str(tmp_path / "table.parquet"), append=str(tmp_path / "batch.parquet"))
    train, valid, _ = split_frame(validate(frame, spec), spec)
    assert train.filter(pl.col("year") == 2050).height == 18 and valid.filter(pl.col("year") == 2050).height == 6
