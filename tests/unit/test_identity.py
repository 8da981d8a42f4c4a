"""The code identity reads the installed sources once each and names them by package."""

from lepton.core import identity


def test_every_source_file_is_counted_once_under_its_own_package():
    names = [name for name, _ in identity.source_files()]
    assert len(names) == len(set(names))
    assert {"lepton/core/identity.py", "lepton.tasks/train.py", "lepton.flows/pipeline.py",
            "lepton.domains/spec.py", "lepton/errors.py"} <= set(names)  # fmt: skip
    assert not any(name.startswith(("lepton/tasks/", "lepton/flows/", "lepton/domains/")) for name in names)


def test_the_key_changes_with_a_library_version_and_the_extras():
    code = identity.code_identity()
    assert dict(code.libraries)["xgboost"] != identity.ABSENT
    other = identity.CodeIdentity(code.sources, (*code.libraries[:-1], ("torch", "9.9")))
    assert other.key != code.key and identity.CodeIdentity(code.sources, code.libraries).key == code.key
    assert "xgboost" in code.describe()
