"""The stage cache: atomic entries, safe formats, misses on anything unreadable."""

import dataclasses

import numpy as np
import pytest

from lepton.core.cache import KEEP, MANIFEST, StageCache, key
from lepton.domains import get_spec
from lepton.tasks.features import FeatureRun
from lepton.tasks.optimise import optimise
from lepton.tasks.preprocess import load_domain_data, prepare
from lepton.tasks.stored import (
    read_optimised,
    read_prepared,
    read_trained,
    write_optimised,
    write_prepared,
    write_trained,
)
from lepton.tasks.train import train_task

SAFE = {".parquet", ".npy", ".json", ".ubj"}


def _write_text(value, folder):
    (folder / "value.json").write_text(value)


def _read_text(folder):
    return (folder / "value.json").read_text()


def test_an_entry_is_whole_or_absent(tmp_path):
    store = StageCache(tmp_path, "d")
    assert store.load("s", "k", _read_text) is None and not store.has("s", "k")
    store.store("s", "k", "hello", _write_text)
    assert store.has("s", "k") and store.load("s", "k", _read_text) == "hello"

    def crash(value, folder):
        (folder / "value.json").write_text("half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        store.store("s", "k2", "x", crash)
    assert not store.has("s", "k2") and [p.name for p in (tmp_path / "d" / "s").iterdir()] == ["k"]
    (tmp_path / "d" / "s" / "k" / "value.json").unlink()  # damaged: a miss, not an error
    assert store.load("s", "k", _read_text) is None


def test_an_entry_stays_unless_replaced_and_a_replacement_is_whole(tmp_path):
    store = StageCache(tmp_path, "d")
    store.store("s", "k", "first", _write_text)
    store.store("s", "k", "second", _write_text)  # the same key: the same output, the first stays
    assert store.load("s", "k", _read_text) == "first"
    store.store("s", "k", "newest", _write_text, replace=True)  # a run record: the newest run
    assert store.load("s", "k", _read_text) == "newest"
    assert [p.name for p in (tmp_path / "d" / "s").iterdir()] == ["k"]  # nothing stale left beside it


def test_a_disabled_cache_reads_and_writes_nothing(tmp_path):
    StageCache(tmp_path, "d").store("s", "k", "v", _write_text)
    off = StageCache(tmp_path, "d", enabled=False)
    assert off.load("s", "k", _read_text) is None
    off.store("s", "k3", "v", _write_text)
    assert not (tmp_path / "d" / "s" / "k3").exists()


def test_only_the_newest_entries_are_kept(tmp_path):
    store = StageCache(tmp_path, "d")
    for i in range(KEEP + 3):
        store.store("s", f"k{i}", str(i), _write_text)
    kept = sorted(p.name for p in (tmp_path / "d" / "s").iterdir() if (p / MANIFEST).exists())
    assert len(kept) == KEEP and "k0" not in kept and f"k{KEEP + 2}" in kept


def test_keys_are_stable_and_tell_inputs_apart():
    assert key("a", 1, [2, 3]) == key("a", 1, [2, 3]) != key("a", 1, [3, 2])


def test_stage_outputs_come_back_equal_from_safe_files(tmp_path):
    spec = get_spec("medical")
    data = prepare(spec, *load_domain_data(spec))
    trained = train_task.fn(spec, data, "cpu")
    result = optimise(spec, data, trained, 2)
    store = StageCache(tmp_path, "medical")
    store.store("prepared", "p", (data, FeatureRun(2, ("local",))), write_prepared)
    store.store("train", "t", trained, write_trained)
    store.store("optimise", "o", result, write_optimised)
    files = {p.suffix for p in tmp_path.rglob("*") if p.is_file()}
    assert files <= SAFE, files

    back, run = store.load("prepared", "p", read_prepared)
    assert run == FeatureRun(2, ("local",))
    for name in ("train", "valid", "holdout"):
        ours, theirs = getattr(data, name), getattr(back, name)
        assert ours.frame.equals(theirs.frame)
        np.testing.assert_array_equal(ours.X, theirs.X)
        np.testing.assert_array_equal(ours.y, theirs.y)
    assert (back.encoder, back.classes, back.fingerprint) == (data.encoder, data.classes, data.fingerprint)

    models = store.load("train", "t", read_trained)
    assert dataclasses.replace(models.default_tree) == trained.default_tree
    np.testing.assert_array_equal(
        models.default_tree.predict(data.holdout.X), trained.default_tree.predict(data.holdout.X)
    )
    again = store.load("optimise", "o", read_optimised)
    assert again.trials == result.trials and again.threshold == result.threshold and again.reason == result.reason
    assert again.calibration == result.calibration
    np.testing.assert_array_equal(again.candidate.predict(data.holdout.X), result.candidate.predict(data.holdout.X))
