"""Tables: read a user's CSV or Parquet file as it really is, into a typed polars frame.

Real files are messy. This module sniffs the delimiter and quoting, accepts a UTF-8 BOM, decodes
other encodings only when asked (and says so when a file is not UTF-8), rejects duplicate column
names, trims whitespace, reads numbers stored as text as numbers and datetimes as datetimes. Every
decision is returned as a note so the CLI can say what it did.

A foundation module, not a stage: the preprocess stage, the monitor, the scoring flow, the
Python API and the service all read tables through it.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import hashlib
import io
import lzma
import os
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from lepton.errors import DataError, EmptyDataError, InputPathError, Problem, SchemaError

if TYPE_CHECKING:
    from lepton.domains.spec import DomainSpec

MAX_FILE_BYTES = 20 * 2**30
READERS = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet"}
NULL_TOKENS = ("", "NA", "N/A", "n/a", "NaN", "nan", "null", "NULL", "None", "#N/A", "?")
SNIFF_BYTES = 64 * 1024  # read past the header line, for the sniffer
MAX_HEADER_BYTES = 64 * 2**20  # a header line longer than this is refused
MAX_COLUMNS = 20_000  # a table wider than this is refused before it is read
DELIMITERS = ",;\t|"
COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}  # file.csv.gz and the like
MAGIC = (  # what a file that is not text begins with, and what to say about it
    (b"\x1f\x8b", "gzip-compressed: name it .csv.gz and Lepton reads it"),
    (b"BZh", "bzip2-compressed: name it .csv.bz2 and Lepton reads it"),
    (b"\xfd7zXZ\x00", "xz-compressed: name it .csv.xz and Lepton reads it"),
    (b"PAR1", "a Parquet file: name it .parquet"),
    (b"PK\x03\x04", "a zip archive (an .xlsx workbook is one): export or unpack the CSV inside"),
    (b"\x7fELF", "an executable (ELF), not a table"),
    (b"%PDF", "a PDF document, not a table"),
)


@dataclass(frozen=True)
class Loaded:
    """A table as read, with what the reader decided along the way."""

    frame: pl.DataFrame
    path: Path
    notes: tuple[str, ...] = field(default=())


# ---- paths -------------------------------------------------------------------------------------
def resolve_input(path: str | Path, max_bytes: int | None = None) -> Path:
    """Resolve a user path; check it is a readable, non-empty regular file of a known format."""
    resolved = Path(path).expanduser().resolve()
    if not resolved.exists():
        raise InputPathError(f"{resolved}: no such file")
    if resolved.is_dir():
        raise InputPathError(f"{resolved}: is a directory, expected a CSV or Parquet file")
    mode = resolved.stat().st_mode
    if not stat.S_ISREG(mode):
        raise InputPathError(f"{resolved}: not a regular file (a device, socket or pipe)")
    if _format(resolved) is None:
        raise InputPathError(
            f"{resolved}: unknown format {''.join(resolved.suffixes[-2:]) or resolved.name!r}; use .csv, .tsv or "
            ".parquet (CSV may be compressed: .csv.gz, .csv.bz2, .csv.xz)"
        )
    if not os.access(resolved, os.R_OK):
        raise InputPathError(f"{resolved}: not readable (permission denied)")
    size = resolved.stat().st_size
    if size == 0:
        raise EmptyDataError(f"{resolved}: the file is empty")
    limit = MAX_FILE_BYTES if max_bytes is None else max_bytes
    if size > limit:
        raise InputPathError(f"{resolved}: {size / 2**30:.2f} GiB is over the {limit / 2**30:.2f} GiB limit")
    return resolved


def _format(path: Path) -> str | None:
    """The format by the file's suffix, "csv" or "parquet" (a compressed CSV: the one before .gz), or None."""
    suffix = path.suffix.lower()
    if suffix in COMPRESSED:
        inner = Path(path.stem).suffix.lower()
        return "csv" if READERS.get(inner) == "csv" else None
    return READERS.get(suffix)


def _not_text(path: Path, head: bytes) -> None:
    """Refuse a CSV-named file whose first bytes say it is something else, saying what it is."""
    for magic, what in MAGIC:
        if head.startswith(magic):
            raise InputPathError(f"{path}: not a text table: the file is {what}")
    if b"\x00" in head:
        raise InputPathError(f"{path}: not a text table: binary data (a NUL byte at offset {head.index(0)})")


def _open(path: Path) -> io.BufferedIOBase:
    """The file's bytes as a stream: decompressed for .gz, .bz2 and .xz."""
    opener = COMPRESSED.get(path.suffix.lower())
    return opener(path, "rb") if opener else path.open("rb")  # type: ignore[return-value]


def _decompressed(path: Path) -> bytes:
    """A compressed CSV's bytes, refused past ``MAX_FILE_BYTES`` (a small bomb cannot fill memory)."""
    parts, size = [], 0
    try:
        with _open(path) as handle:
            while chunk := handle.read(1 << 24):
                size += len(chunk)
                if size > MAX_FILE_BYTES:
                    raise InputPathError(f"{path}: decompresses to over {MAX_FILE_BYTES / 2**30:.0f} GiB")
                parts.append(chunk)
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise InputPathError(f"{path}: not a readable {path.suffix} file ({_first_line(exc)})") from exc
    return b"".join(parts)


# ---- reading -----------------------------------------------------------------------------------
def load(path: str | Path, encoding: str | None = None) -> Loaded:
    """Read ``path`` (CSV/TSV or Parquet) into a typed frame; raise a ``DataError`` naming the
    file, column or row when it cannot be used."""
    resolved = resolve_input(path)
    notes: list[str] = []
    text_file = _format(resolved) == "csv"
    if text_file:
        frame = _read_csv(resolved, encoding, notes)
    else:
        if encoding:
            raise InputPathError(f"{resolved}: --encoding applies to CSV files; Parquet stores its own")
        frame = _read_parquet(resolved)
    if frame.width == 0:
        raise EmptyDataError(f"{resolved}: no columns")
    blank = frame.select(pl.all_horizontal(pl.all().is_null())).to_series()
    if blank.any():
        frame = frame.filter(~blank)
        notes.append(f"{int(blank.sum())} blank row(s) skipped")
    if frame.height == 0:
        raise EmptyDataError(f"{resolved}: no data rows")
    decimal_comma = any(n == "delimiter ';' sniffed" for n in notes)
    return Loaded(frame=coerce_types(frame, notes, text_file, decimal_comma), path=resolved, notes=tuple(notes))


def read_table(path: str | Path, encoding: str | None = None) -> pl.DataFrame:
    return load(path, encoding).frame


def _read_parquet(path: Path) -> pl.DataFrame:
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except (OSError, ValueError) as exc:  # pyarrow raises ArrowInvalid (a ValueError) on a bad file
        raise InputPathError(f"{path}: not a readable Parquet file ({exc})") from exc
    _check_header(names, str(path))
    try:
        return pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputPathError(f"{path}: cannot be read ({exc.__class__.__name__}: {exc})") from exc


def _decode_check(path: Path, encoding: str | None, data: bytes | None = None) -> str:
    """The codec to read with. Without ``encoding``: UTF-8 (a BOM is fine); a file that is not
    UTF-8 is an error that names the first bad byte and says how to fix it. ``data``: the file's
    bytes when they are already in memory (decompressed)."""
    if encoding:
        try:
            return codecs.lookup(encoding).name
        except LookupError as exc:
            raise InputPathError(f"{path}: unknown encoding {encoding!r}") from exc
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with io.BytesIO(data) if data is not None else path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                before = (data[: offset + exc.start] if data is not None else _head(path, offset + exc.start)).count(
                    b"\n"
                )
                raise InputPathError(
                    f"{path}: not UTF-8 (byte {offset + exc.start}, line {before + 1}); "
                    "pass the file's encoding, e.g. --encoding latin-1 or --encoding cp1252"
                ) from exc
            offset += len(chunk)
    return "utf-8"


def _head(path: Path, size: int) -> bytes:
    with path.open("rb") as handle:
        return handle.read(size)


def _header_and_sample(head: bytes) -> bytes:
    """The first line whole and ``SNIFF_BYTES`` after it, cut after the last whole line."""
    end = head.find(b"\n")
    if end < 0:
        return head
    sample = head[: end + 1 + SNIFF_BYTES]
    return sample[: sample.rfind(b"\n") + 1] if len(sample) < len(head) else sample


def _leading(handle: io.BufferedIOBase) -> bytes:
    """The file's first line (up to ``MAX_HEADER_BYTES``) and ``SNIFF_BYTES`` more."""
    head = handle.read(SNIFF_BYTES)
    while b"\n" not in head and len(head) < MAX_HEADER_BYTES:
        more = handle.read(max(len(head), SNIFF_BYTES))
        if not more:
            return head
        head += more
    return head + handle.read(SNIFF_BYTES)


def _sniff(text: str) -> csv.Dialect | type[csv.Dialect]:
    try:
        return csv.Sniffer().sniff(text, delimiters=DELIMITERS)
    except csv.Error:
        return csv.excel


def _read_csv(path: Path, encoding: str | None, notes: list[str]) -> pl.DataFrame:
    data = None  # the bytes, when a compressed file had to be read whole
    if path.suffix.lower() in COMPRESSED:
        data = _decompressed(path)
        notes.append(f"decompressed from {path.suffix}")
    _not_text(path, data[:SNIFF_BYTES] if data is not None else _head(path, SNIFF_BYTES))
    codec = _decode_check(path, encoding, data)
    source: bytes | Path = data if data is not None else path
    if codec == "utf-8":
        with io.BytesIO(data) if data is not None else path.open("rb") as handle:
            head = _leading(handle)
        if b"\n" not in head and len(head) >= MAX_HEADER_BYTES:
            raise InputPathError(f"{path}: no line break in the first {MAX_HEADER_BYTES / 2**20:.0f} MiB")
        text_head = _header_and_sample(head).decode("utf-8-sig", errors="ignore")
        if head.startswith(codecs.BOM_UTF8):
            raw = data if data is not None else path.read_bytes()
            source = raw[len(codecs.BOM_UTF8) :]
            notes.append("a UTF-8 byte-order mark was skipped")
    else:
        try:
            text = (data if data is not None else path.read_bytes()).decode(codec)
        except UnicodeDecodeError as exc:
            raise InputPathError(f"{path}: not valid {codec} at byte {exc.start}") from exc
        notes.append(f"decoded from {codec}")
        end = text.find("\n")
        text_head = text[: (end if end >= 0 else len(text)) + 1 + SNIFF_BYTES]
        source = text.encode("utf-8")
    # The sniffer reads whole lines only, so a long last line cannot mislead it; the header line
    # is always whole, however wide.
    sample = text_head.rsplit("\n", 1)[0] if "\n" in text_head.rstrip("\n") else text_head
    dialect = _sniff(sample)
    delimiter = dialect.delimiter if dialect.delimiter in DELIMITERS else ","
    if delimiter != ",":
        notes.append(f"delimiter {delimiter!r} sniffed")
    try:
        header = next(
            csv.reader(io.StringIO(sample, newline=""), delimiter=delimiter, quotechar=dialect.quotechar or '"'), []
        )
    except csv.Error as exc:
        raise InputPathError(f"{path}: cannot be read as CSV (header: {exc})") from exc
    names = [h.strip() or f"column_{i}" for i, h in enumerate(header)]
    _check_header(names, str(path))
    try:
        frame = pl.read_csv(
            source,
            separator=delimiter,
            quote_char=dialect.quotechar or '"',
            infer_schema=False,  # every column as text; typed below, the same way for every file
            null_values=list(NULL_TOKENS),
            truncate_ragged_lines=False,
        )
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputPathError(f"{path}: cannot be read as CSV ({_first_line(exc)})") from exc
    if frame.width != len(names):
        raise InputPathError(f"{path}: the header has {len(names)} field(s) but the rows have {frame.width}")
    unnamed = [n for n, h in zip(names, header, strict=True) if not h.strip()]
    if unnamed:
        notes.append(f"unnamed column(s) called {unnamed}")
    frame.columns = names  # our trimmed names, not polars' renaming of blanks and duplicates
    return frame


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__


def _check_header(names: list[str], source: str) -> None:
    if len(names) > MAX_COLUMNS:
        raise InputPathError(f"{source}: the header names {len(names):,} columns; Lepton reads at most {MAX_COLUMNS:,}")
    counts = Counter(n for n in names if n)
    duplicated = {n: [i for i, m in enumerate(names) if m == n] for n, k in counts.items() if k > 1}
    if duplicated:
        raise SchemaError(
            [
                Problem("duplicate_column", n, f"appears {len(at)} times (positions {at})")
                for n, at in duplicated.items()
            ],
            source,
        )


# ---- typing ------------------------------------------------------------------------------------
def coerce_types(
    frame: pl.DataFrame, notes: list[str] | None = None, text_file: bool = False, decimal_comma: bool = False
) -> pl.DataFrame:
    """Float NaN becomes missing (null). Text columns: trimmed (empty means missing);
    all-numeric text becomes Int64/Float64 (a
    trailing ``%`` is dropped when every value has one); all-datetime text becomes Datetime.
    In a typed file (Parquet) a text column that holds numbers is worth a note; in CSV it is not.
    With ``decimal_comma`` (files delimited by ';'), "1,5" is read as 1.5."""
    notes = notes if notes is not None else []
    categorical = [n for n, d in frame.schema.items() if isinstance(d, pl.Categorical | pl.Enum)]
    floats = [n for n, d in frame.schema.items() if d.is_float()]
    frame = frame.with_columns(pl.col(categorical).cast(pl.String), pl.col(floats).fill_nan(None))  # NaN is missing
    strings = [n for n, d in frame.schema.items() if d == pl.String]
    frame = frame.with_columns(  # one parallel pass: trim, and missing-value tokens become null
        pl.when(pl.col(n).str.strip_chars().is_in(NULL_TOKENS))
        .then(None)
        .otherwise(pl.col(n).str.strip_chars())
        .alias(n)
        for n in strings
    )
    out = []
    for name in frame.columns:
        text = frame[name]
        if name not in strings:
            out.append(text)
            continue
        typed, how = _as_number(text)
        if typed is None:
            typed, how = _as_separated_number(text, decimal_comma)
        if typed is not None and typed.dtype.is_float():
            typed = typed.fill_nan(None)
        if typed is not None and not how and not text_file:
            how = "numbers stored as text, read as numbers"
        if typed is None:
            typed, how = _as_datetime(text)
        if typed is None:
            typed = text
        elif how:
            notes.append(f"column {name!r}: {how}")
        out.append(typed)
    return pl.DataFrame(out)


_GROUPED = {  # (pattern every value must match, separator to drop, decimal mark)
    "comma": (r"^[+-]?(\d{1,3}(,\d{3})+|\d+)(\.\d+)?$", ",", "."),
    "decimal_comma": (r"^[+-]?(\d{1,3}(\.\d{3})+|\d+)(,\d+)?$", ".", ","),
}


def _as_separated_number(text: pl.Series, decimal_comma: bool) -> tuple[pl.Series | None, str]:
    """'1,234.5' (or, in ';'-separated files, '1.234,5' and '1,5') as numbers."""
    present = text.drop_nulls()
    if present.len() == 0:
        return None, ""
    for kind in ("decimal_comma", "comma") if decimal_comma else ("comma",):
        pattern, group, mark = _GROUPED[kind]
        if not bool(present.str.contains(pattern).all()):
            continue
        plain = text.str.replace_all(group, "", literal=True).str.replace(mark, ".", literal=True)
        typed, _ = _as_number(plain)
        if typed is not None:
            return typed, "decimal commas read as numbers" if kind == "decimal_comma" else "thousands separators read"
    return None, ""


def _distinct_sample(text: pl.Series, size: int = 200) -> pl.Series:
    """A few distinct values: a column that fails on them is not worth parsing in full."""
    return text.drop_nulls().unique(maintain_order=True).head(size)


def _as_number(text: pl.Series) -> tuple[pl.Series | None, str]:
    sample = _distinct_sample(text)
    if sample.len() == 0:
        return None, ""
    percent = bool(sample.str.ends_with("%").all()) and bool(text.drop_nulls().str.ends_with("%").all())
    body = text.str.strip_suffix("%").str.strip_chars() if percent else text
    probe = sample.str.strip_suffix("%").str.strip_chars() if percent else sample
    if probe.cast(pl.Float64, strict=False).null_count():
        return None, ""
    for dtype in (pl.Int64, pl.Float64):
        cast = body.cast(dtype, strict=False)
        if cast.null_count() == text.null_count():
            if percent:
                return cast.cast(pl.Float64), "percentages read as numbers"
            return cast, ""
    return None, ""


MONTH_FORMATS = ("%b-%Y", "%b %Y", "%B %Y", "%B-%Y", "%b-%y", "%Y-%m", "%m/%Y")  # "Mar-2018": a month


def _as_month(text: pl.Series, sample: pl.Series) -> pl.Series | None:
    """Months written without a day ("Mar-2018", "2018-03") as the first day of the month."""
    for form in MONTH_FORMATS:

        def parse(values: pl.Series, form: str = form) -> pl.Series:
            dated = ("01 " + values).str.to_datetime(f"%d {form}", strict=False, time_unit="us")
            return dated.alias(values.name)

        if parse(sample).null_count() == 0:
            return parse(text)
    return None


def _as_datetime(text: pl.Series) -> tuple[pl.Series | None, str]:
    sample = _distinct_sample(text)  # parsing a whole column that is not dates is slow
    if sample.len() == 0 or not bool(sample.str.contains(r"\d").all()):
        return None, ""
    try:
        auto = sample.str.to_datetime(strict=False, time_unit="us").null_count() == 0
    except pl.exceptions.PolarsError:  # no format polars recognises
        auto = False
    try:
        if not auto:
            month = _as_month(text, sample)
            if month is None or month.null_count() != text.null_count():
                return None, ""
            return month, "months parsed as dates (the first of each month)"
        parsed = text.str.to_datetime(strict=False, time_unit="us")
    except pl.exceptions.PolarsError:
        return None, ""
    if parsed.null_count() != text.null_count():
        return None, ""
    zone = getattr(parsed.dtype, "time_zone", None)
    return (parsed.dt.replace_time_zone(None) if zone else parsed), "datetimes parsed"


def input_paths(
    spec: DomainSpec, data: str | None = None, holdout: str | None = None, append: str | None = None
) -> list[str | Path]:
    """What a run reads, as given: the table, a given holdout, an appended batch (each a file, or
    a folder, glob or URL of files)."""
    given = spec.split.kind == "given"
    paths = [data or spec.data.resolve(spec.data.path)]
    if holdout or (given and not data):
        paths.append(holdout or spec.data.resolve(spec.data.holdout_path))
    if append:
        paths.append(append)
    return [p for p in paths if p is not None]


def input_files(
    spec: DomainSpec, data: str | None = None, holdout: str | None = None, append: str | None = None
) -> list[Path] | None:
    """The files ``load_domain_data`` reads, resolved; None when one of them is not a readable
    file (reading it raises the typed error)."""
    try:
        return [resolve_input(path) for path in input_paths(spec, data, holdout, append)]
    except DataError:
        return None


def fingerprint(*frames: pl.DataFrame) -> str:
    """Content hash of the tables (schema and every value); equal data gives equal fingerprints."""
    digest = hashlib.sha256()
    for frame in frames:
        digest.update(str(frame.schema).encode())
        digest.update(frame.hash_rows(seed=0).to_numpy().tobytes())
    return digest.hexdigest()
