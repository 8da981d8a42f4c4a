import pytest
from pydantic import ValidationError

from domains import DOMAINS, get_spec
from domains.spec import DomainSpec


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


def test_yaml_spec_becomes_the_same_object(tmp_path):
    import yaml

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(_raw()))
    assert DomainSpec.from_yaml(path) == DomainSpec.model_validate(_raw())


@pytest.mark.parametrize("name", DOMAINS)
def test_builtin_domains_round_trip_through_json(name):
    spec = get_spec(name)
    assert DomainSpec.model_validate(spec.model_dump(mode="json")) == spec


def test_unknown_domain_is_refused():
    with pytest.raises(KeyError, match="unknown domain"):
        get_spec("os.system")
