"""Domain templates: one frozen DomainSpec per domain, looked up by name."""

from lepton.domains.spec import DomainSpec

DOMAINS = ("finance", "medical", "manufacturing")


def get_spec(name: str) -> DomainSpec:
    """Return the built-in spec called ``name`` (allowlisted: no import of arbitrary strings)."""
    if name == "finance":
        from lepton.domains.finance import SPEC
    elif name == "medical":
        from lepton.domains.medical import SPEC
    elif name == "manufacturing":
        from lepton.domains.manufacturing import SPEC
    else:
        raise KeyError(f"unknown domain {name!r}; choose one of {', '.join(DOMAINS)}")
    return SPEC
