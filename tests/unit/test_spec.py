import pytest
from pydantic import ValidationError

from lepton.domains import DOMAINS, get_spec
from lepton.domains.recipes import SmoothingConfig
from lepton.domains.spec import DomainSpec
from lepton.errors import InputPathError, SpecError


def _raw(**overrides):
    base = {
        "name": "toy",
        "data": {"path": "toy.csv"},
        "columns": [
            {"name": "x", "dtype": "float"},
            {"name": "t", "dtype": "int", "role": "time"},
            {"name": "y", "dtype": "category", "role": "target"},
        ],
        "task": "binary",
        "positive_class": "bad",
        "split": {"kind": "stratified"},
        "primary_metric": "roc_auc",
        "metrics": ["roc_auc", "brier"],
    }
    return {**base, **overrides}


def test_minimal_spec_validates_and_derives_roles():
    spec = DomainSpec.model_validate(_raw())
    assert spec.target == "y"
    assert [c.name for c in spec.feature_columns] == ["x"]
    assert spec.time_column == "t"
    assert spec.model_name == "lepton-toy"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"split": {"kind": "stratified", "holdout_size": 1.5}}, "holdout_size"),
        ({"split": {"kind": "stratified", "holdout_size": 0}}, "holdout_size"),
        ({"metrics": ["roc_auc", "magic"]}, "metrics"),
        ({"primary_metric": "brier", "metrics": ["roc_auc"]}, "primary_metric"),
        ({"primary_metric": "r2", "metrics": ["r2"]}, "metrics"),
        ({"positive_class": None}, "positive_class"),
        ({"name": "Bad Name!"}, "name"),
        ({"split": {"kind": "given"}}, "split"),
        ({"columns": [{"name": "x", "dtype": "float"}, {"name": "x", "dtype": "float", "role": "target"}]}, "columns"),
        ({"columns": [{"name": "x", "dtype": "float"}, {"name": "y", "dtype": "decimal", "role": "target"}]}, "dtype"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invalid_spec_names_the_field(overrides, field):
    with pytest.raises(ValidationError) as info:
        DomainSpec.model_validate(_raw(**overrides))
    assert field in str(info.value)


def test_spec_is_frozen_and_hash_is_content_based():
    spec = DomainSpec.model_validate(_raw())
    with pytest.raises(ValidationError):
        spec.name = "other"
    assert spec.spec_hash() == DomainSpec.model_validate(_raw()).spec_hash()
    assert spec.spec_hash() != DomainSpec.model_validate(_raw(metrics=["roc_auc"])).spec_hash()


def test_yaml_spec_becomes_the_same_object_with_data_beside_it(tmp_path):
    import yaml

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(_raw()))
    expected = _raw(data={"path": str(tmp_path / "toy.csv")})
    assert DomainSpec.from_yaml(path) == DomainSpec.model_validate(expected)


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("name: [unclosed", ["(file)"]),
        ("- just\n- a list\n", ["(file)"]),
        (None, ["columns.1.dtype", "split.holdout_size"]),
    ],
)
def test_bad_yaml_spec_is_a_spec_error_naming_every_field(tmp_path, text, fields):
    import yaml

    if text is None:
        raw = _raw(split={"kind": "stratified", "holdout_size": 2})
        raw["columns"][1]["dtype"] = "timestamp"
        text = yaml.safe_dump(raw)
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        DomainSpec.from_yaml(path)
    assert set(fields) <= set(info.value.fields)
    for field in fields:
        assert field in str(info.value)


def test_missing_spec_file_is_a_path_error(tmp_path):
    with pytest.raises(InputPathError, match="no such spec file"):
        DomainSpec.from_yaml(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"leakage": {"allow": ["ghost"]}}, "leakage.allow"),
        ({"normal_class": 0}, "normal_class"),
        ({"task": "multiclass", "positive_class": None, "primary_metric": "f1_macro",
          "metrics": ["f1_macro", "false_alarm_rate"]}, "normal_class"),
        ({"smoothing": 5}, "smoothing: needs .* a 'group' and a 'time' column"),  # no group column
        ({"smoothing": 1}, "smoothing"),
    ],
)  # fmt: skip
def test_class_and_leakage_fields_are_checked(overrides, field):
    with pytest.raises(ValidationError, match=field):
        DomainSpec.model_validate(_raw(**overrides))


@pytest.mark.parametrize("name", DOMAINS)
def test_builtin_domains_round_trip_through_json(name):
    spec = get_spec(name)
    assert DomainSpec.model_validate(spec.model_dump(mode="json")) == spec


def test_unknown_domain_is_refused():
    with pytest.raises(KeyError, match="unknown domain"):
        get_spec("os.system")


def test_smoothing_adds_the_group_and_time_columns_to_the_model_inputs():
    columns = [*_raw()["columns"], {"name": "g", "dtype": "int", "role": "group"}]
    spec = DomainSpec.model_validate(_raw(columns=columns, smoothing=4))
    assert [c.name for c in spec.model_inputs] == ["x", "t", "g"]
    assert spec.smoothing_config() == SmoothingConfig(window=4, group="g", time="t")
    assert SmoothingConfig.from_json(spec.smoothing_config().to_json()) == spec.smoothing_config()
    assert DomainSpec.model_validate(_raw(columns=columns)).smoothing_config() is None
