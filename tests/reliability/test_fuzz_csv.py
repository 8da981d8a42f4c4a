"""Issue 18: the CSV reader over 2,000 generated files (delimiters, quotes, blank and ragged
lines, BOMs, NUL bytes, stray encodings, compressed or not): it returns a table or raises a
typed Lepton error, never anything else."""

import gzip

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lepton.core.tables import load
from lepton.errors import LeptonError

pytestmark = pytest.mark.slow

_cell = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "NA", "null", "?", "1,5", "1.234,5", "12%", "2021-03-04", "Mar-2018", '"', '""', "a\nb"]),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8),
)
_line = st.lists(_cell, min_size=1, max_size=6)


@st.composite
def _csv(draw) -> bytes:
    delimiter = draw(st.sampled_from([",", ";", "\t", "|"]))
    header = draw(st.lists(st.text(max_size=6), min_size=1, max_size=6))
    lines = [header, *draw(st.lists(_line, max_size=12))]
    quote = draw(st.booleans())
    text = "\n".join(delimiter.join(f'"{c}"' if quote and draw(st.booleans()) else c for c in line) for line in lines)
    data = text.encode("utf-8", errors="surrogatepass")
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    if draw(st.integers(0, 9)) == 0:
        data = data.replace(b",", b"\x00", 1)
    if draw(st.integers(0, 9)) == 0:
        data += "é".encode("latin-1")
    return data


@settings(max_examples=2_000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_csv(), packed=st.booleans(), encoding=st.sampled_from([None, None, "latin-1"]))
def test_the_csv_reader_returns_a_table_or_a_typed_error(tmp_path, data, packed, encoding):
    path = tmp_path / ("t.csv.gz" if packed else "t.csv")
    path.write_bytes(gzip.compress(data) if packed else data)
    try:
        loaded = load(path, encoding)
    except LeptonError as error:
        assert str(error)  # a message, naming the file
        return
    assert loaded.frame.height >= 1 and loaded.frame.width >= 1
