"""Mapping configs: how a folder of CRM / marketing-automation exports becomes the
canonical tables.

A mapping (YAML, parsed into :class:`Mapping`) lists, for each canonical table,
one or more *sources*: a file of the export folder, an optional row filter and
how each output column is made from the file's columns (rename, constant,
coalesce, lookup in another file, value map to THE MODEL vocabulary, numeric
bins, regex classification, timestamp parsing with a format and time zone).
One file may feed several tables (a split); several sources of one table are
concatenated.

Time semantics: every timestamp is parsed in the source's time zone (a naive
value is local time there; a value with an offset keeps it) and converted to
UTC. ``end_of_day: true`` turns a date-only value into the *next* midnight, so
that a fact recorded only by its day is never visible before it could have
happened (point-in-time safe, at the cost of up to a day of delay).

Errors a user can cause (unknown source column, unmapped vocabulary value,
unparsable timestamp or number) raise :class:`MappingError` naming the file,
the column and the offending values. Rows that a filter removes, rows missing a
key, duplicate keys and rows that break the table contracts are *dropped* and
counted, with the reason, in :class:`ImportReport`.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import re
import types
import typing
import uuid
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import duckdb
import numpy as np
import pandas as pd
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from leadml.config import Vocabulary
from leadml.contracts import TABLES, Table, check_tables, connect
from leadml.errors import ConfigError, DataError
from leadml.sources import atomic_path, frames_source

PRESETS = ("salesforce", "hubspot")
ValueType = Literal["str", "id", "float", "int", "bool", "timestamp"]
NumberFormat = Literal["plain", "us", "eu"]
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}
_EXAMPLES = 5
_SCAN = 10_000  # rows looked at for distinct examples


def distinct(values: typing.Iterable[Any], n: int = _EXAMPLES) -> list[str]:
    """The first ``n`` distinct values, as text, in order."""
    out: list[str] = []
    for v in values:
        text = str(v)
        if text not in out:
            out.append(text)
            if len(out) == n:
                break
    return out


def _lines_text(lines: typing.Iterable[Any], n: int = _EXAMPLES) -> str:
    """``line 12`` / ``lines 12, 40, 77`` (the first ``n`` distinct)."""
    shown = distinct(lines, n)
    return ("line " if len(shown) == 1 else "lines ") + ", ".join(shown)


class MappingError(DataError):
    """A source export does not fit its mapping (names file, column and values)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Lookup(_Model):
    """Replace the value by ``take`` of the row of ``file`` whose ``match`` equals it."""

    file: str
    match: str
    take: str
    optional: bool = False  # a missing file matches nothing instead of raising


class Bin(_Model):
    """Values ``>= lower`` (up to the next bin's lower bound) get ``label``."""

    lower: float
    label: str


class ColumnSpec(_Model):
    """How one output column is made; the steps run in the order of the fields."""

    source: str | None = None
    aliases: list[str] = Field(default_factory=list)  # other header names for ``source``
    value: str | float | int | bool | None = None
    coalesce: list[ColumnSpec] | None = None
    required: bool = True  # False: an absent source column gives nulls instead of an error
    split: str | None = None  # a list in one cell ("id1;id2"): keep the first item
    lookup: Lookup | None = None
    pattern: str | None = None  # values not matching (re.match) become null
    prefix: str = ""
    # a name used as a key (a company name): Unicode NFKC, case and runs of spaces are
    # ignored, so "GAMMA  GmbH" and "Gamma GmbH" are one account
    normalize: bool = False
    type: ValueType | None = None  # default: the contract's kind, else str
    format: str | None = None  # strptime format for timestamps; None = ISO-8601; "excel" = serial
    number_format: NumberFormat = "plain"  # us: "$1,200.50"; eu: "1.200,50 €"
    timezone: str | None = None  # zone of naive timestamps; None = the mapping's
    end_of_day: bool = False
    bins: list[Bin] | None = None
    classify: list[tuple[str, str]] | None = None  # (regex searched case-insensitively, label)
    map: dict[str, str | None] | None = None  # source value -> vocabulary value (None = null)
    drop: list[str] = Field(default_factory=list)  # source values whose rows are dropped
    default: str | float | int | None = None  # for missing values and, with map, unmapped ones

    @field_validator("pattern")
    @classmethod
    def _valid_pattern(cls, value: str | None) -> str | None:
        if value is not None:
            _check_regex(value)
        return value

    @field_validator("classify")
    @classmethod
    def _valid_classify(cls, rules: list[tuple[str, str]] | None) -> list[tuple[str, str]] | None:
        for regex, _ in rules or []:
            _check_regex(regex)
        return rules

    @model_validator(mode="after")
    def _one_origin(self) -> ColumnSpec:
        origins = [self.source is not None, self.value is not None, self.coalesce is not None]
        if sum(origins) != 1:
            raise ValueError("give exactly one of source, value, coalesce")
        return self


def _check_regex(regex: str) -> None:
    try:
        re.compile(regex)
    except re.error as exc:
        raise ValueError(
            f"{regex!r} is not a valid regular expression ({exc}); fix it (in YAML, write "
            "regular expressions in single quotes so that backslashes stay as they are)"
        ) from None


class Condition(_Model):
    """A row filter on a source column; rows that fail it are dropped with ``reason``."""

    column: str
    aliases: list[str] = Field(default_factory=list)  # other header names for ``column``
    equals: str | None = None
    in_: list[str] | None = Field(default=None, alias="in")
    not_in: list[str] | None = None
    not_empty: bool | None = None
    empty: bool | None = None
    startswith: str | None = None
    not_in_file: Lookup | None = None  # uses file + match; take is ignored
    reason: str | None = None
    report: bool = True  # False for a split (the other rows go to another source): not "dropped"


class Source(_Model):
    """One file feeding one table."""

    file: str
    optional: bool = False  # a missing file is noted in the report instead of an error
    delimiter: str | None = None  # None = sniffed
    encoding: str = "utf-8-sig"
    timezone: str | None = None
    where: list[Condition] = Field(default_factory=list)
    # Several rows of this file may make the same key (one account per company name,
    # from many leads): the earliest row (by created_at) is kept and the repeats are
    # counted in a note, not reported as rows left out.
    shared_key: bool = False
    columns: dict[str, ColumnSpec | str]

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(
                f"unknown encoding {value!r}; use a codec name such as utf-8, latin-1 or cp1252"
            ) from None
        return value

    def spec(self, name: str) -> ColumnSpec:
        value = self.columns[name]
        return ColumnSpec(source=value) if isinstance(value, str) else value


class Mapping(_Model):
    """A whole mapping: canonical table name -> its sources."""

    name: str = "custom"
    description: str = ""
    timezone: str = "UTC"  # zone of naive timestamps unless a source or column says otherwise
    tables: dict[str, list[Source]]
    _origin: str = PrivateAttr(default="mapping")  # where it was loaded from, for messages

    @property
    def origin(self) -> str:
        """The mapping file (or ``preset <name>``) this mapping was loaded from."""
        return self._origin

    @model_validator(mode="before")
    @classmethod
    def _drop_anchor_keys(cls, data: Any) -> Any:
        # top-level "x-..." keys only hold YAML anchors shared by several columns
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not str(k).startswith("x-")}
        return data

    @model_validator(mode="after")
    def _known_tables(self) -> Mapping:
        for table, sources in self.tables.items():
            if table not in TABLES:
                raise ValueError(f"unknown table {table!r} (known: {', '.join(TABLES)})")
            contract = TABLES[table]
            for src in sources:
                extras = [c for c in src.columns if c not in contract.column_names]
                if extras and not contract.extra_allowed:
                    raise ValueError(
                        f"{table} from {src.file}: columns {', '.join(extras)} are not in the "
                        f"{table} contract ({', '.join(contract.column_names)}) and {table} "
                        "takes no extra columns"
                    )
        return self


def load_mapping(name_or_path: str | Path) -> Mapping:
    """A preset by name (``salesforce``, ``hubspot``) or a YAML mapping file."""
    text: str
    where: str
    if str(name_or_path) in PRESETS:
        where = f"preset {name_or_path}"
        text = (
            resources.files("leadml.importing") / "presets" / f"{name_or_path}.yaml"
        ).read_text()
    else:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"mapping {path} not found; pass a YAML mapping file or a preset name "
                f"({', '.join(PRESETS)})"
            )
        where, text = str(path), path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {exc}") from None
    try:
        mapping = Mapping.model_validate(data)
    except ValidationError as exc:
        problems = _mapping_problems(exc)
        if len(problems) == 1:
            raise ConfigError(f"{where}: invalid mapping: {problems[0]}") from None
        lines = [f"{where}: invalid mapping ({len(problems)} problems):"]
        lines += [f"  {p}" for p in problems]
        raise ConfigError("\n".join(lines)) from None
    mapping._origin = where
    return mapping


# pydantic error types that only say "this union branch does not fit the input's type"
_BRANCH_MISMATCH = {
    "string_type",
    "model_type",
    "model_attributes_type",
    "dict_type",
    "list_type",
    "float_type",
    "int_type",
    "bool_type",
}


def _unwrap(annotation: Any) -> Any:
    """``X | None`` -> ``X``; other unions stay unions."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else typing.Union[tuple(args)]  # noqa: UP007
    return annotation


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _walk(loc: tuple[Any, ...]) -> tuple[str, Any, int | None]:
    """A pydantic error location as the user's path (``tables.leads[0].columns.x``), the
    model class (or annotation) found there, and the index in ``loc`` of the last union
    branch tag (None if the path crosses no union)."""
    path = ""
    current: Any = Mapping
    union_at: int | None = None
    for i, part in enumerate(loc):
        current = _unwrap(current)
        if _is_union(current):  # pydantic names the branch it tried: not part of the path
            union_at = i
            current = next(
                (a for a in typing.get_args(current) if getattr(a, "__name__", "?") in str(part)),
                None,
            )
            continue
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
        if isinstance(current, type) and issubclass(current, BaseModel):
            fields = current.model_fields
            name = next((n for n, f in fields.items() if part in (n, f.alias)), None)
            current = fields[name].annotation if name else None
        elif typing.get_origin(current) is list:
            current = typing.get_args(current)[0]
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        else:
            current = None
    return path, _unwrap(current), union_at


def _keys(model: Any) -> list[str]:
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [f.alias or n for n, f in model.model_fields.items()]
    return []


def _mapping_problems(exc: ValidationError) -> list[str]:
    """One plain line per problem of an invalid mapping: the path as written in the YAML
    (``tables.leads[0].columns.created_at``), what is wrong and, for a misspelt key, the
    key it probably should be. Errors of union branches that do not fit the value's type
    at all (a ``str`` branch for a mapping of options) are left out."""
    errors = exc.errors()
    walked = [_walk(tuple(e["loc"])) for e in errors]
    # union positions where some branch failed for a reason other than its type
    real = {
        tuple(e["loc"][:u])
        for e, (_, _, u) in zip(errors, walked, strict=True)
        if u is not None and e["type"] not in _BRANCH_MISMATCH
    }
    unknown: dict[str, list[str]] = {}  # object path -> suggested keys for its unknown keys
    lines: list[tuple[str, str]] = []
    mismatch_seen: set[tuple[Any, ...]] = set()
    for err, (path, _, union_at) in zip(errors, walked, strict=True):
        kind, loc = err["type"], tuple(err["loc"])
        if union_at is not None and kind in _BRANCH_MISMATCH:
            if loc[:union_at] in real or loc[:union_at] in mismatch_seen:
                continue
            mismatch_seen.add(loc[:union_at])
            got = type(err.get("input")).__name__
            lines.append(
                (
                    _walk(loc[:union_at])[0],
                    f"expected a column name or a mapping of column options, got a {got}",
                )
            )
            continue
        if kind == "extra_forbidden":
            parent, model, _ = _walk(loc[:-1])
            key = str(loc[-1])
            allowed = _keys(model)
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            unknown.setdefault(parent, []).extend(close)
            hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(allowed)}"
            lines.append((parent, f"unknown key {key!r} ({hint})"))
        elif kind == "missing":
            parent = _walk(loc[:-1])[0]
            lines.append((parent, f"missing key {str(loc[-1])!r}"))
        elif kind == "value_error":
            lines.append((path, str(err["msg"]).removeprefix("Value error, ")))
        else:
            lines.append((path, f"{err['msg']} (got {err.get('input')!r})"))
    out = []
    for parent, text in lines:
        # "missing key 'columns'" next to "unknown key 'colums' (did you mean 'columns'?)"
        # says the same thing twice
        if text.startswith("missing key ") and text[12:].strip("'") in unknown.get(parent, []):
            continue
        out.append(f"{parent}: {text}" if parent else text)
    return list(dict.fromkeys(out))


def _spec_outputs(spec: ColumnSpec) -> list[tuple[str, Any]]:
    """(option, value) pairs of the values ``spec`` writes itself into its column:
    ``map`` targets, else ``classify`` labels, else ``bins`` labels, else a constant
    ``value``; and ``default``. Values read from the file are checked on import."""
    out: list[tuple[str, Any]] = []
    if spec.map is not None:
        out += [
            (f"map.{k}" if k.isidentifier() else f"map[{k!r}]", v)
            for k, v in spec.map.items()
            if v is not None
        ]
    elif spec.classify:
        out += [(f"classify[{i}]", label) for i, (_, label) in enumerate(spec.classify)]
    elif spec.bins:
        out += [(f"bins[{i}].label", b.label) for i, b in enumerate(spec.bins)]
    elif spec.value is not None:
        out.append(("value", spec.value))
    elif spec.coalesce:
        for i, sub in enumerate(spec.coalesce):
            out += [
                (f"coalesce[{i}].{opt}", v) for opt, v in _spec_outputs(sub) if opt != "default"
            ]
    if spec.default is not None:
        out.append(("default", spec.default))
    return out


def check_vocabulary(mapping: Mapping, vocab: Vocabulary) -> None:
    """Raise :class:`ConfigError` when the mapping itself writes a value that the column's
    vocabulary does not allow (``map: {Proposal: negotation}``): every row with it would
    be dropped by the contract check, though the mapping, not the data, is wrong."""
    problems: list[str] = []
    settings: list[str] = []
    for table, sources in mapping.tables.items():
        contract = TABLES[table]
        for i, src in enumerate(sources):
            for name in src.columns:
                if name not in contract.column_names or isinstance(src.columns[name], str):
                    continue
                col = contract.column(name)
                if col.vocab is None:
                    continue
                allowed = col.vocab(vocab)
                for option, value in _spec_outputs(src.spec(name)):
                    if str(value) in allowed:
                        continue
                    close = difflib.get_close_matches(str(value), allowed, n=1, cutoff=0.6)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    problems.append(
                        f"tables.{table}[{i}].columns.{name}.{option}: {value!r} is not an "
                        f"allowed {table}.{name} value (allowed: {', '.join(allowed)}{hint})"
                    )
                    settings.append(col.vocab_setting or "vocabulary")
    if not problems:
        return
    fix = (
        "the mapping is wrong, not the data: fix the value in the mapping (only if it is a "
        "real value missing from the configuration, add it to "
        f"{' / '.join(dict.fromkeys(settings))} in configs/leadml.yaml)"
    )
    if len(problems) == 1:
        raise ConfigError(f"{mapping.origin}: {problems[0]}; {fix}")
    lines = [f"{mapping.origin}: the mapping writes values its columns do not allow:"]
    lines += [f"  {p}" for p in problems]
    lines.append(fix)
    raise ConfigError("\n".join(lines))


# ------------------------------------------------------------------ report


@dataclass
class Dropped:
    """Rows left out of a table, and why."""

    table: str
    file: str
    reason: str
    count: int
    examples: list[str] = field(default_factory=list)


@dataclass
class ImportReport:
    """What an import read, produced and left out."""

    mapping: str
    src: str
    read: dict[str, int] = field(default_factory=dict)  # file -> rows
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows written
    dropped: list[Dropped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def drop(
        self,
        table: str,
        file: str,
        reason: str,
        values: pd.Series | None,
        count: int,
        lines: pd.Series | None = None,
    ) -> None:
        """Record ``count`` rows left out; examples are the first distinct ``values``, or,
        where a value is missing, the row's line in ``file`` (``lines``, aligned with
        ``values``)."""
        if count <= 0:
            return
        shown: list[str] = []
        if values is not None:
            for idx, v in values.head(_SCAN).items():
                if not pd.isna(v):
                    shown.append(str(v))
                elif lines is not None and idx in lines.index:
                    shown.append(f"line {lines[idx]}")
        elif lines is not None:
            shown = [f"line {n}" for n in lines.head(_SCAN)]
        self.dropped.append(Dropped(table, file, reason, int(count), distinct(shown)))

    def note(self, text: str) -> None:
        """Add a note once (a column may be built twice: coalesce, drop)."""
        if text not in self.notes:
            self.notes.append(text)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mapping": self.mapping,
            "src": self.src,
            "read": self.read,
            "rows": self.rows,
            "dropped": [d.__dict__ for d in self.dropped],
            "notes": self.notes,
        }


# ------------------------------------------------------------------ reading


class _Files:
    """Reads export files once, as text columns (types come from the mapping)."""

    def __init__(self, src_dir: Path, report: ImportReport) -> None:
        self.src_dir = src_dir
        self.report = report
        self._cache: dict[str, pd.DataFrame] = {}
        self._read_as: dict[str, tuple[str | None, str]] = {}  # file -> (delimiter, encoding)
        self._lines: dict[str, np.ndarray] = {}
        # optional source columns not in their file: file -> column -> (effects, paths)
        self.absent: dict[str, dict[str, tuple[list[str], list[str]]]] = {}
        self.mapping_place = ""  # where the mapping's columns are edited, for the notes

    def note_absent(self) -> None:
        """One note per file naming its optional source columns that are missing (a
        renamed column would otherwise import as silently empty), what is left empty,
        the file's columns (closest first) and where to fix the name."""
        for name, missing in self.absent.items():
            header = list(self._cache[name].columns) if name in self._cache else []
            parts, paths = [], []
            for column, (effects, where) in missing.items():
                close = _close_columns(column, header)
                near = f"; closest in the file: {', '.join(close)}" if close else ""
                parts.append(f"{column!r} ({'; '.join(dict.fromkeys(effects))}{near})")
                paths += where
            listing = ", ".join(map(str, header[:30])) + (
                f" (+{len(header) - 30} more)" if len(header) > 30 else ""
            )
            self.report.note(
                f"{self.src_dir / name}: optional column(s) not in the file: "
                f"{', '.join(parts)}. The file has: {listing}. If a column was renamed, put "
                f"its name in `source:` (or `aliases:`) of {', '.join(dict.fromkeys(paths))} "
                f"{self.mapping_place}"
            )

    def exists(self, name: str) -> bool:
        return (self.src_dir / name).is_file()

    def get(
        self, name: str, delimiter: str | None = None, encoding: str = "utf-8-sig"
    ) -> pd.DataFrame:
        if name not in self._cache:
            path = self.src_dir / name
            if not path.is_file():
                raise MappingError(
                    f"{path}: file not found (named by the mapping); export it or "
                    "mark the source `optional: true`"
                )
            self._cache[name] = read_text_table(path, delimiter, encoding)
            self._read_as[name] = (delimiter, encoding)
            self.report.read[name] = len(self._cache[name])
        return self._cache[name]

    def lines(self, name: str) -> np.ndarray:
        """The file line on which each row of ``name`` starts (the header is line 1)."""
        if name not in self._lines:
            n = len(self.get(name))
            delimiter, encoding = self._read_as[name]
            self._lines[name] = _record_lines(self.src_dir / name, n, delimiter, encoding)
        return self._lines[name]


def _record_lines(path: Path, n: int, delimiter: str | None, encoding: str) -> np.ndarray:
    """Row i of the ``n`` rows read from ``path`` starts on file line ``i + 2``, unless a
    quoted field holds a line break (a Salesforce Description or Street) or blank lines
    were skipped: then the lines come from reading the records once more (a Parquet
    file has no lines: row numbers + 1 as well)."""
    simple = np.arange(n) + 2
    if path.suffix.lower() in (".parquet", ".pq"):
        return simple
    newlines = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            newlines += chunk.count(b"\n")
    if newlines in (n, n + 1):  # one line per record (the last one's newline optional)
        return simple
    sep = delimiter or sniff_delimiter(path, encoding)
    starts: list[int] = []
    with open(path, encoding=encoding, errors="replace", newline="") as fh:
        try:
            reader = csv.reader(fh, delimiter=sep)
        except TypeError:  # a delimiter of several characters: row numbers it is
            return simple
        start, header = 1, True
        try:
            for record in reader:
                if header:
                    header = False
                elif record:  # pandas skips blank lines
                    starts.append(start)
                start = reader.line_num + 1
        except csv.Error:  # read by pandas, not by csv: row numbers it is
            return simple
    return np.asarray(starts) if len(starts) == n else simple


def sniff_delimiter(path: Path, encoding: str = "utf-8-sig") -> str:
    """The delimiter of a CSV file, guessed from its first 64 KiB (``,`` if unsure)."""
    with open(path, encoding=encoding, errors="replace", newline="") as fh:
        sample = fh.read(65536)
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


ENCODING_FIX = (
    "re-save it as UTF-8, or set `encoding: latin-1` (or the file's encoding) on this "
    "source in a copy of the mapping"
)


def read_text_table(
    path: Path,
    delimiter: str | None = None,
    encoding: str = "utf-8-sig",
    *,
    encoding_fix: str = ENCODING_FIX,
) -> pd.DataFrame:
    """A CSV (delimiter sniffed) or Parquet file with every column as text; empty -> NA.

    An empty file, a file in another encoding and a malformed CSV raise
    :class:`MappingError` naming the file; ``encoding_fix`` is the advice given for a
    file that is not in ``encoding``."""
    if path.suffix.lower() in (".parquet", ".pq"):
        df = pd.read_parquet(path)
        return df.apply(_as_text)
    sep = delimiter or sniff_delimiter(path, encoding)
    try:
        df = pd.read_csv(
            path,
            sep=sep,
            dtype=str,
            keep_default_na=False,
            encoding=encoding,
        )
    except pd.errors.EmptyDataError:
        raise MappingError(
            f"{path}: the file is empty (no header row); export it again with its header row"
        ) from None
    except UnicodeDecodeError as exc:
        raise MappingError(
            f"{path}: is not {_encoding_name(encoding)} ({_bad_byte(path, encoding, exc)}); "
            f"{encoding_fix}"
        ) from None
    except pd.errors.ParserError as exc:
        raise MappingError(
            f"{path}: cannot read as CSV: {_csv_problem(path, encoding, sep, exc)}"
        ) from None
    df.columns = [str(c).strip() for c in df.columns]
    return df.apply(_as_text)


def _record_line(path: Path, encoding: str, sep: str, record: int) -> int | None:
    """The file line on which CSV record ``record`` (0 = the header) starts: records
    with a quoted line break span several lines, so records and lines differ."""
    with open(path, encoding=encoding, errors="replace", newline="") as fh:
        try:
            reader = csv.reader(fh, delimiter=sep)
        except TypeError:  # a delimiter of several characters: no line to give
            return None
        start, k = 1, 0
        try:
            for _ in reader:
                if k == record:
                    return start
                start, k = reader.line_num + 1, k + 1
        except csv.Error:
            pass  # the record that never ends: it starts at ``start``
    return start if k == record else None


def _csv_problem(path: Path, encoding: str, sep: str, exc: Exception) -> str:
    """A pandas parser error in the user's terms: the file line and a fix."""
    text = str(exc)
    quote = re.search(r"EOF inside string starting at row (\d+)", text)
    if quote:
        line = _record_line(path, encoding, sep, int(quote.group(1)))
        at = f"line {line}" if line else f"record {quote.group(1)}"
        return (
            f'a quoted value opened on {at} is never closed (an unbalanced "), so the rest '
            "of the file reads as one value; close the quote on that line, or double a "
            'quote that is part of the value ("")'
        )
    fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text)
    if fields:
        want, rec, got = (int(g) for g in fields.groups())
        line = _record_line(path, encoding, sep, rec - 1)
        at = f"line {line}" if line else f"record {rec - 1}"
        shown = {",": "','", ";": "';'", "\t": "tab", "|": "'|'"}.get(sep, repr(sep))
        return (
            f"{at} has {got} fields separated by {shown} where the rows before it have "
            f"{want}; quote a value that contains {shown}, or, if the file uses another "
            "separator, set `delimiter:` on this source in a copy of the mapping"
        )
    return f"{text}; open the file in a text editor at the place named and fix the row"


def _encoding_name(encoding: str) -> str:
    return (
        "UTF-8"
        if encoding.lower().replace("_", "-") in ("utf-8", "utf-8-sig", "utf8")
        else (f"{encoding} text")
    )


def _bad_byte(path: Path, encoding: str, exc: UnicodeDecodeError) -> str:
    """Where the first undecodable byte is, in the file (pandas reports chunk offsets)."""
    data = path.read_bytes()
    try:
        data.decode(encoding)
    except UnicodeDecodeError as whole:
        exc = whole
    start = exc.start
    byte = exc.object[start : start + 1]
    line = data[:start].count(b"\n") + 1
    as_latin1 = byte.decode("latin-1")
    shown = f", {as_latin1!r} in latin-1" if as_latin1.isprintable() else ""
    return f"byte 0x{byte.hex()} on line {line}, at offset {start}{shown}"


def _as_text(col: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(col):
        return col  # already typed (Parquet); kept as is
    if pd.api.types.is_float_dtype(col) and (col.dropna() % 1 == 0).all():
        col = col.astype("Int64")  # ids stored as floats (NaN forces float): 9001.0 -> "9001"
    out = col.astype("string").str.strip()
    return out.mask(out == "")


# ------------------------------------------------------------------ building


@dataclass
class _Col:
    """What one output column is being made from, for messages: the output column, its
    place in the mapping and the file column its values come from (for a lookup, the
    looked-up file's ``take`` column, reached by ``via``)."""

    out: str  # canonical (or extra) output column
    label: str  # the spec's source column, or the output name
    path: str  # the spec in the mapping: tables.<table>[i].columns.<out>[.coalesce[j]]
    file: str | None = None  # file the values come from
    column: str | None = None  # its column
    via: str = ""  # "looked up by ..." for a lookup
    whole: bool = False  # values are that column's as they are: re-checkable whole


class _Ctx:
    def __init__(
        self,
        mapping: Mapping,
        files: _Files,
        table: str,
        src: Source,
        index: int = 0,
        lines: pd.Series | None = None,
    ) -> None:
        self.mapping, self.files, self.table, self.src = mapping, files, table, src
        self.index = index  # of ``src`` in the table's sources
        self.lines = lines  # file line of each row (header = line 1), by row index

    def path(self, out_name: str) -> str:
        return f"tables.{self.table}[{self.index}].columns.{out_name}"

    def in_mapping(self) -> str:
        """Where an edited option goes: the mapping file, or a copy of the preset."""
        origin = self.mapping.origin
        if origin.startswith("preset "):
            name = origin.removeprefix("preset ")
            path = resources.files("leadml.importing") / "presets" / f"{name}.yaml"
            return f"in a copy of the {name} preset ({path}; pass the copy as --mapping)"
        return f"in {origin}"

    def on_column(self, paths: list[str] | None = None) -> str:
        """Where a column option goes: this column (or ``paths``), in a copy when the
        mapping is a preset."""
        where = f"on {', '.join(paths)}" if paths else "on this column"
        return f"{where} {self.in_mapping()}"

    def err(
        self, column: str, reason: str, values: pd.Series | list[Any] | None = None
    ) -> MappingError:
        return MappingError(
            f"{self.files.src_dir / self.src.file}, column {column!r} (-> {self.table}): "
            f"{reason}{_shown(values)}"
        )

    def uses(self, file: str, column: str) -> list[tuple[str, str]]:
        """(``table.column``, mapping path) of every output column that reads ``column``
        of ``file`` as its values (not as a lookup key); this one first."""
        found: list[tuple[str, str]] = []

        def visit(spec: ColumnSpec, table: str, out: str, path: str) -> None:
            if spec.coalesce is not None:
                for j, sub in enumerate(spec.coalesce):
                    visit(sub, table, out, f"{path}.coalesce[{j}]")
            elif spec.lookup is None and column in (spec.source, *spec.aliases):
                found.append((f"{table}.{out}", path))

        for table, sources in self.mapping.tables.items():
            for i, src in enumerate(sources):
                if src.file != file:
                    continue
                for out in src.columns:
                    visit(src.spec(out), table, out, f"tables.{table}[{i}].columns.{out}")
        return list(dict.fromkeys(found))

    def value_err(
        self,
        col: _Col,
        what: str,
        fix: str,
        bad: pd.Series,
        values: pd.Series,
        check: typing.Callable[[pd.Series], pd.Series] | None = None,
    ) -> MappingError:
        """Values of ``col`` that do not read as ``what``. Counted over the whole file
        column when the values are that column's as they are (``check`` gives the bad
        ones of any series), so that one run names every bad value; with their lines."""
        file, column = col.file or self.src.file, col.column or col.label
        n_here = int(bad.sum())
        shown, lines, count, scope = values[bad], [], n_here, ""
        if col.whole and col.file is not None and col.column is not None and check is not None:
            full = self.files.get(col.file)[col.column].reset_index(drop=True)
            full_bad = check(full).fillna(False).astype(bool)
            if full_bad.any():
                count, shown = int(full_bad.sum()), full[full_bad]
                starts = self.files.lines(col.file)
                lines = [int(starts[i]) for i in np.flatnonzero(full_bad.to_numpy())]
                if not col.via and count != n_here:
                    scope = f" ({n_here} of them in the rows mapped to {self.table})"
        elif file == self.src.file and self.lines is not None:
            lines = self.lines.reindex(bad[bad].index).dropna().astype(int).tolist()
            if self.src.where:
                scope = f" (counted in the rows mapped to {self.table})"
        if col.via:
            where = f"column {column!r} ({col.via} for {self.table}.{col.out})"
            paths = [col.path]
        else:
            uses = self.uses(file, column) if file == self.src.file else []
            if not any(p == col.path for _, p in uses):
                uses.insert(0, (f"{self.table}.{col.out}", col.path))
            where = f"column {column!r} (read for {', '.join(u for u, _ in uses)})"
            paths = [p for _, p in uses]
        at = ""
        if lines:
            more = ", ..." if len(set(lines)) > _EXAMPLES else ""
            at = f" ({_lines_text(lines)}{more})"
        return MappingError(
            f"{self.files.src_dir / file}, {where}: {count} value(s){at} {what}{scope}; "
            f"{fix.replace('{on}', self.on_column(paths))}{_shown(shown)}"
        )


def _shown(values: pd.Series | list[Any] | None) -> str:
    if values is None:
        return ""
    uniq = list(
        dict.fromkeys(
            str(v) for v in (values.tolist() if isinstance(values, pd.Series) else values)
        )
    )
    more = f" (+{len(uniq) - 10} more)" if len(uniq) > 10 else ""
    return f": {', '.join(repr(v) for v in uniq[:10])}{more}"


def _present(df: pd.DataFrame, spec: ColumnSpec) -> str | None:
    """The header of ``spec.source`` (or one of its aliases) in ``df``."""
    return next((c for c in [spec.source, *spec.aliases] if c in df.columns), None)


def _norm_header(name: str) -> str:
    return re.sub(r"[\W_]+", "", re.sub(r"__c$", "", str(name).casefold()))


def _close_columns(wanted: str, columns: typing.Iterable[Any]) -> list[str]:
    """Up to three of ``columns`` closest to ``wanted`` (``Lead_Source__c`` for
    ``LeadSource``), best first."""
    key = _norm_header(wanted)
    score = {
        str(c): difflib.SequenceMatcher(None, key, _norm_header(str(c))).ratio() for c in columns
    }
    return sorted((c for c, r in score.items() if r >= 0.6), key=lambda c: -score[c])[:3]


def _columns_listing(wanted: str, columns: typing.Iterable[Any], limit: int = 30) -> str:
    """The file's columns, the ones closest to ``wanted`` first."""
    cols = [str(c) for c in columns]
    close = _close_columns(wanted, cols)
    rest = [c for c in cols if c not in close]
    shown = rest[: max(0, limit - len(close))]
    more = f" (+{len(rest) - len(shown)} more)" if len(rest) > len(shown) else ""
    if close:
        return f"{', '.join(close)} (closest); also {', '.join(shown)}{more}"
    return f"{', '.join(shown)}{more}"


def _raw(
    ctx: _Ctx, df: pd.DataFrame, spec: ColumnSpec, out_name: str, path: str, part: bool = False
) -> pd.Series:
    if spec.value is not None:
        return pd.Series([spec.value] * len(df), index=df.index, dtype=object)
    if spec.coalesce is not None:
        parts = [
            _column(ctx, df, sub, out_name, final=False, path=f"{path}.coalesce[{j}]")
            for j, sub in enumerate(spec.coalesce)
        ]
        result = parts[0].astype(object)
        for p in parts[1:]:
            result = result.where(result.notna(), p.astype(object))
        return result
    assert spec.source is not None
    present = _present(df, spec)
    if present is None:
        if not spec.required:
            _note_absent(ctx, df, spec, out_name, path, part)
            return pd.Series([None] * len(df), index=df.index, dtype=object)
        raise ctx.err(
            spec.source,
            f"unknown source column (the file has: {_columns_listing(spec.source, df.columns)}); "
            f"fix the name (`source:`, or add the file's name to `aliases:`) of {path} "
            f"{ctx.in_mapping()}, or set `required: false` there",
        )
    return df[present]


def _note_absent(
    ctx: _Ctx, df: pd.DataFrame, spec: ColumnSpec, out_name: str, path: str, part: bool
) -> None:
    """Remember an optional source column missing from the file (noted at the end)."""
    target = f"{ctx.table}.{out_name}"
    if part:
        effect = f"this alternative of {target}'s `coalesce` gives nothing"
    elif spec.default is not None:
        effect = f"{target} gets the default {spec.default!r} on every row"
    else:
        effect = f"{target} is empty on every row"
    effects, paths = ctx.files.absent.setdefault(ctx.src.file, {}).setdefault(
        str(spec.source), ([], [])
    )
    effects.append(effect)
    paths.append(path)
    ctx.files.mapping_place = ctx.in_mapping()


def _column(
    ctx: _Ctx,
    df: pd.DataFrame,
    spec: ColumnSpec,
    out_name: str,
    final: bool = True,
    path: str | None = None,
) -> pd.Series:
    """The values of one output column (before row drops)."""
    path = path or ctx.path(out_name)
    s = _raw(ctx, df, spec, out_name, path, part=not final)
    col = _Col(out_name, spec.source or out_name, path)
    present = _present(df, spec) if spec.source is not None else None
    if present is not None:
        col.file, col.column = ctx.src.file, present
        col.whole = spec.split is None
    if spec.split is not None:
        s = s.astype("string").str.split(spec.split).str[0].str.strip().astype(object)
        s = s.where(s.notna() & (s != ""), None)
    empty_in_file = s.isna()
    if spec.lookup is not None:
        s = _lookup(ctx, s, spec.lookup)
        lk = spec.lookup
        col.file, col.column, col.whole = lk.file, lk.take, True
        col.via = f"looked up by {ctx.src.file} column {present or spec.source!r} in {lk.match!r}"
    if spec.pattern is not None:
        s = s.where(s.astype("string").str.match(spec.pattern).fillna(False).astype(bool))
    if spec.normalize:
        text = s.astype("string").str.normalize("NFKC").str.casefold().str.split().str.join(" ")
        s = s.where(s.notna() & (text != "").fillna(False), None)
        s = s.where(s.isna(), text)
    if spec.prefix:
        s = s.where(s.isna(), spec.prefix + s.astype("string"))
    if spec.pattern is not None or spec.prefix or spec.normalize:
        col.whole = False
    kind = spec.type or _contract_kind(ctx.table, out_name)
    s = _typed(ctx, s, spec, col, kind)
    if spec.default is not None and final:
        if spec.source is None or present is not None:  # absent: noted once, per file
            _note_default(ctx, spec, col, s.isna() & empty_in_file, s.isna() & ~empty_in_file)
        s = s.where(s.notna(), spec.default)
    if kind in ("id", "str") and final:
        s = s.astype(object).where(s.notna(), None)
        s = s.map(lambda v: v if v is None else _id_text(v))
    return s


def _typed(ctx: _Ctx, s: pd.Series, spec: ColumnSpec, col: _Col, kind: str) -> pd.Series:
    """Parse to ``kind``, then bins, classify and map."""
    if kind == "timestamp":
        s = _timestamps(ctx, s, spec, col)
    elif kind in ("float", "int") or spec.bins:
        s = _numbers(ctx, s, col, spec.number_format)
    elif kind == "bool":
        s = _bools(ctx, s, col)
    if spec.bins:
        s = _bins(s, spec.bins)
    if spec.classify:
        s = _classify(s, spec.classify)
    if spec.map is not None:
        col.whole = col.whole and not spec.bins and not spec.classify
        s = _map(ctx, s, spec, col)
    return s


def _note_default(
    ctx: _Ctx, spec: ColumnSpec, col: _Col, empty: pd.Series, no_value: pd.Series
) -> None:
    """A note for rows where ``default`` filled a value (a missing amount read as 0 is
    data the user should know about)."""
    name = spec.source or "(coalesce)"
    for hit, why in (
        (empty, f"an empty {name!r}"),
        (no_value, f"a value of {name!r} that gave none ({_no_value_why(spec)})"),
    ):
        n = int(hit.sum())
        if not n:
            continue
        lines = []
        if ctx.lines is not None:
            lines = ctx.lines.reindex(hit[hit].index).dropna().astype(int).tolist()
        at = f" ({_lines_text(lines)}{', ...' if n > _EXAMPLES else ''})" if lines else ""
        ctx.files.report.note(
            f"{ctx.files.src_dir / ctx.src.file}: {n} row(s){at} with {why} got the default "
            f"{spec.default!r} for {ctx.table}.{col.out}; if {spec.default!r} is not right "
            "for them, fill the values in the export (or change `default:` of "
            f"{col.path} {ctx.in_mapping()})"
        )


def _no_value_why(spec: ColumnSpec) -> str:
    why = []
    if spec.lookup is not None:
        lk = spec.lookup
        why.append(f"no row of {lk.file} with that {lk.match!r}, or an empty {lk.take!r} there")
    if spec.pattern is not None:
        why.append("not matching `pattern`")
    if spec.bins:
        why.append("below every bin")
    if spec.classify:
        why.append("matched by no `classify` rule")
    if spec.map is not None:
        why.append("not in `map`")
    if spec.coalesce is not None:
        why.append("no alternative of `coalesce` gave one")
    return "; ".join(why) or "not usable"


def _id_text(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _contract_kind(table: str, column: str) -> str:
    contract = TABLES[table]
    return contract.column(column).kind if column in contract.column_names else "str"


def _lookup(ctx: _Ctx, s: pd.Series, lk: Lookup) -> pd.Series:
    if lk.optional and not ctx.files.exists(lk.file):
        return pd.Series([None] * len(s), index=s.index, dtype=object)
    other = ctx.files.get(lk.file)
    for col in (lk.match, lk.take):
        if col not in other.columns:
            raise MappingError(
                f"{ctx.files.src_dir / lk.file}, column {col!r} (lookup for {ctx.table}): unknown "
                f"source column (the file has: {', '.join(map(str, other.columns))})"
            )
    pairs = other[[lk.match, lk.take]].dropna(subset=[lk.match]).drop_duplicates(lk.match)
    table = dict(zip(pairs[lk.match].astype(str), pairs[lk.take], strict=True))
    return s.map(lambda v: None if pd.isna(v) else table.get(str(v))).astype(object)


_EXCEL_EPOCH = pd.Timestamp("1899-12-30")
# Excel serial days of 1954-10-03 .. 2119-01-10: numbers in this range in a date column are
# almost surely serials, not Unix seconds or years
_EXCEL_RANGE = (20000, 80000)


def _looks_excel(values: pd.Series) -> bool:
    days = pd.to_numeric(values.astype(object), errors="coerce").astype(float)
    return bool(len(days)) and bool(days.notna().all() and days.between(*_EXCEL_RANGE).all())


def _excel_days(text: pd.Series) -> pd.Series:
    return pd.to_numeric(text.astype("string"), errors="coerce")


def _parse_timestamps(text: pd.Series, fmt: str | None) -> pd.Series:
    text = text.astype("string")
    try:
        return pd.to_datetime(text, format=fmt or "ISO8601", errors="coerce")
    except (ValueError, TypeError):
        # mixed offsets / naive and aware values: read each as UTC-aware
        return pd.to_datetime(text, format=fmt or "ISO8601", errors="coerce", utc=True)


def _timestamps(ctx: _Ctx, s: pd.Series, spec: ColumnSpec, col: _Col) -> pd.Series:
    zone = spec.timezone or ctx.src.timezone or ctx.mapping.timezone
    label = col.label
    if pd.api.types.is_datetime64_any_dtype(s):
        parsed = s
    elif spec.format == "excel":
        text = s.astype("string")
        days = _excel_days(text)
        bad = text.notna() & days.isna()
        if bad.any():
            raise ctx.value_err(
                col,
                "are not Excel serial dates (days since 1899-12-30, e.g. 45892.5) as "
                "`format: excel` says",
                "fix them in the export, or remove `format: excel` {on}",
                bad,
                text,
                lambda full: full.notna() & _excel_days(full).isna(),
            )
        parsed = _EXCEL_EPOCH + pd.to_timedelta(days.astype(float), unit="D").dt.round("s")
    else:
        text = s.astype("string")
        parsed = _parse_timestamps(text, spec.format)
        bad = text.notna() & parsed.isna()
        if bad.any():
            expected = (
                f"format {spec.format!r}" if spec.format else "ISO-8601 (e.g. 2024-03-05T14:22:10Z)"
            )
            if _looks_excel(text[bad]):
                fix = (
                    "these look like Excel serial dates (days since 1899-12-30): re-export "
                    "the column as dates, or set `format: excel` {on}"
                )
            else:
                fix = "set `format:` (strptime codes, e.g. '%m/%d/%Y %H:%M') {on}"
            fmt = spec.format
            raise ctx.value_err(
                col,
                f"are not timestamps in {expected}",
                fix,
                bad,
                text,
                lambda full: full.notna() & _parse_timestamps(full, fmt).isna(),
            )
    if parsed.dt.tz is None:
        parsed = _localize(ctx, parsed, zone, label)
    out = parsed.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
    if spec.end_of_day:
        out = out.dt.normalize() + pd.Timedelta(days=1)
    return out


def _localize(ctx: _Ctx, naive: pd.Series, zone: str, label: str) -> pd.Series:
    """Naive local times in ``zone`` as aware times. A time in the hour that repeats when
    daylight-saving time ends (02:30 on the last Sunday of October in Berlin) is read as
    its first occurrence, in daylight-saving time; a time in the hour skipped when it
    starts is moved forward to the first time after the gap. Both are counted in a note
    of the report, never dropped."""
    try:
        local = naive.dt.tz_localize(
            zone, ambiguous=np.ones(len(naive), dtype=bool), nonexistent="shift_forward"
        )
        unsure = (
            naive.notna() & naive.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT").isna()
        )
    except Exception as exc:  # unknown zone name
        raise ctx.err(label, f"cannot use time zone {zone!r}: {exc}") from None
    if not unsure.any():
        return local
    ambiguous = (
        unsure & naive.dt.tz_localize(zone, ambiguous="NaT", nonexistent="shift_forward").isna()
    )
    where = f"{ctx.files.src_dir / ctx.src.file}, column {label!r} (-> {ctx.table})"
    notes = ctx.files.report.notes
    for hit, what, how in (
        (
            ambiguous,
            "fall in the hour that repeats when daylight-saving time ends",
            "read as the first occurrence (daylight-saving time)",
        ),
        (
            unsure & ~ambiguous,
            "do not exist (the hour skipped when daylight-saving time starts)",
            "moved forward to the first time after the gap",
        ),
    ):
        if not hit.any():
            continue
        first = hit.idxmax()
        utc = local[first].tz_convert("UTC")
        note = (
            f"{where}: {int(hit.sum())} local time(s) in {zone} {what}; {how}, e.g. "
            f"'{naive[first]}' -> {utc:%Y-%m-%d %H:%M:%S} UTC"
        )
        if note not in notes:  # a column may be built twice (coalesce, drop)
            notes.append(note)
    return local


# currency symbols and codes, and the spaces (also non-breaking and thin) around them
_CURRENCY = re.compile(r"[\s\u00a0\u202f$€£¥₹]|\b(?:USD|EUR|GBP|JPY|CHF|CAD|AUD)\b", re.I)
_US_NUMBER = re.compile(r"^[-+]?\d{1,3}(,\d{3})+(\.\d*)?$|^[-+]?\d*\.\d+$|^[-+]?\d+$")
_EU_NUMBER = re.compile(r"^[-+]?\d{1,3}([.\u00a0\u202f ]\d{3})+(,\d*)?$|^[-+]?\d*,\d+$|^[-+]?\d+$")


def parse_numbers(s: pd.Series, number_format: str = "plain") -> pd.Series:
    """Numbers from text; NaN where a value does not parse.

    ``plain``: as written (``1200.5``). ``us``: ``,`` groups thousands and ``.`` is the
    decimal point (``$1,200.50``). ``eu``: ``.`` or a space groups thousands and ``,`` is
    the decimal comma (``1.200,50 €``). ``us`` and ``eu`` strip currency symbols and codes
    and spaces first."""
    if number_format == "plain" or pd.api.types.is_numeric_dtype(s):
        return pd.to_numeric(s, errors="coerce")
    text = s.astype("string").str.replace(_CURRENCY, "", regex=True)
    if number_format == "us":
        text = text.str.replace(",", "", regex=False)
    else:
        text = text.str.replace(".", "", regex=False).str.replace(",", ".", regex=False)
    return pd.to_numeric(text, errors="coerce")


def _looks_formatted(values: pd.Series) -> str | None:
    """``us`` or ``eu`` when every value reads as a number in that format (currency
    symbols and thousands separators), else None."""
    text = values.astype("string").str.replace(_CURRENCY, "", regex=True)
    if not len(text) or not text.str.contains(r"\d", regex=True).all():
        return None
    for fmt, rx in (("us", _US_NUMBER), ("eu", _EU_NUMBER)):
        if text.str.match(rx).all():
            return fmt
    return None


def _numbers(ctx: _Ctx, s: pd.Series, col: _Col, number_format: str = "plain") -> pd.Series:
    out = parse_numbers(s, number_format)
    bad = s.notna() & out.isna()
    if bad.any():
        guess = _looks_formatted(s[bad].head(100))
        if number_format == "plain" and guess:
            fix = (
                f"they look like formatted amounts: set `number_format: {guess}` {{on}} "
                "(us: '$1,200.50', eu: '1.200,50 €'; currency symbols are stripped)"
            )
        else:
            fix = "fix them in the export, or set `number_format:` (us or eu) {on}"
        read = "" if number_format == "plain" else f" (read with `number_format: {number_format}`)"
        raise ctx.value_err(
            col,
            f"are not numbers{read}",
            fix,
            bad,
            s,
            lambda full: full.notna() & parse_numbers(full, number_format).isna(),
        )
    return out.astype(float)


def _bad_bools(s: pd.Series) -> pd.Series:
    low = s.astype("string").str.lower()
    return low.notna() & ~low.isin(_TRUE | _FALSE)


def _bools(ctx: _Ctx, s: pd.Series, col: _Col) -> pd.Series:
    bad = _bad_bools(s)
    if bad.any():
        raise ctx.value_err(
            col,
            f"are not true/false (read: {', '.join(sorted(_TRUE | _FALSE))})",
            "fix them in the export, or read the column with `map:` {on}",
            bad,
            s,
            _bad_bools,
        )
    low = s.astype("string").str.lower()
    return low.map(lambda v: None if pd.isna(v) else v in _TRUE).astype(object)


def _bins(s: pd.Series, bins: list[Bin]) -> pd.Series:
    ordered = sorted(bins, key=lambda b: b.lower)
    edges = np.array([b.lower for b in ordered])
    idx = np.searchsorted(edges, s.to_numpy(dtype=float), side="right") - 1
    labels = np.array([b.label for b in ordered], dtype=object)
    vals = np.where((idx >= 0) & s.notna().to_numpy(), labels[np.clip(idx, 0, None)], None)
    return pd.Series(vals, index=s.index, dtype=object)


def _classify(s: pd.Series, rules: list[tuple[str, str]]) -> pd.Series:
    compiled = [(re.compile(p, re.IGNORECASE), label) for p, label in rules]

    def one(v: Any) -> Any:
        if pd.isna(v):
            return None
        return next((label for rx, label in compiled if rx.search(str(v))), None)

    return s.map(one).astype(object)


def _norm(v: Any) -> str:
    return str(v).strip().casefold()


def _map(ctx: _Ctx, s: pd.Series, spec: ColumnSpec, col: _Col) -> pd.Series:
    assert spec.map is not None
    table = {_norm(k): v for k, v in spec.map.items()}
    dropped = [_norm(d) for d in spec.drop]

    def unmapped(values: pd.Series) -> pd.Series:
        keys = values.map(lambda v: None if pd.isna(v) else _norm(v))
        return keys.notna() & ~keys.isin(list(table)) & ~keys.isin(dropped)

    bad = unmapped(s)
    if bad.any() and spec.default is None:
        allowed = sorted({v for v in spec.map.values() if v is not None})
        raise ctx.value_err(
            col,
            f"have no entry in the mapping's `map` (maps to: {', '.join(allowed)})",
            "add them to `map`, list them under `drop`, or give a `default` {on}",
            bad,
            s,
            # other sources of a split file may map the other rows' values
            None if ctx.src.where else unmapped,
        )
    keys = s.map(lambda v: None if pd.isna(v) else _norm(v))
    return keys.map(lambda k: None if k is None else table.get(k)).astype(object)


def _row_filter(ctx: _Ctx, df: pd.DataFrame, cond: Condition) -> pd.Series:
    """True for rows that pass ``cond``."""
    present = next((c for c in [cond.column, *cond.aliases] if c in df.columns), None)
    if present is None:
        raise ctx.err(
            cond.column,
            f"unknown source column in `where` (the file has: {', '.join(map(str, df.columns))})",
        )
    col = df[present]
    low = col.astype("string").str.strip().str.casefold()
    ok = pd.Series(True, index=df.index)
    if cond.equals is not None:
        ok &= (low == _norm(cond.equals)).fillna(False)
    if cond.in_ is not None:
        ok &= low.isin([_norm(v) for v in cond.in_]).fillna(False)
    if cond.not_in is not None:
        ok &= ~low.isin([_norm(v) for v in cond.not_in]).fillna(False)
    if cond.not_empty:
        ok &= col.notna()
    if cond.empty:
        ok &= col.isna()
    if cond.startswith is not None:
        ok &= col.astype("string").str.startswith(cond.startswith).fillna(False)
    if cond.not_in_file is not None and (
        not cond.not_in_file.optional or ctx.files.exists(cond.not_in_file.file)
    ):
        other = ctx.files.get(cond.not_in_file.file)
        if cond.not_in_file.match not in other.columns:
            raise MappingError(
                f"{ctx.files.src_dir / cond.not_in_file.file}, column {cond.not_in_file.match!r}: "
                "unknown source column (used by `not_in_file`)"
            )
        ok &= ~col.isin(other[cond.not_in_file.match].dropna().tolist()).fillna(False)
    return ok.astype(bool)


def _describe(cond: Condition) -> str:
    if cond.reason:
        return cond.reason
    parts = []
    for name in ("equals", "in_", "not_in", "startswith"):
        if getattr(cond, name) is not None:
            parts.append(f"{name.rstrip('_')} {getattr(cond, name)}")
    if cond.not_empty:
        parts.append("not empty")
    if cond.empty:
        parts.append("empty")
    if cond.not_in_file is not None:
        parts.append(f"not in {cond.not_in_file.file}.{cond.not_in_file.match}")
    return f"filtered out: {cond.column} must be {' and '.join(parts)}"


def _build_source(
    mapping: Mapping,
    files: _Files,
    table: str,
    src: Source,
    report: ImportReport,
    index: int = 0,
) -> pd.DataFrame | None:
    """The rows one source contributes to ``table`` (canonical + extra columns)."""
    if not files.exists(src.file):
        if src.optional:
            report.notes.append(f"{table}: optional file {src.file} not found, skipped")
            return None
        files.get(src.file)  # raises with the path
    df = files.get(src.file, src.delimiter, src.encoding)
    # the line of each row in the file (the header is line 1), to name rows left out
    lines = pd.Series(files.lines(src.file), index=df.index)
    ctx = _Ctx(mapping, files, table, src, index, lines)
    for cond in src.where:
        ok = _row_filter(ctx, df, cond)
        if cond.report:
            report.drop(
                table,
                src.file,
                _describe(cond),
                df.loc[~ok, next(c for c in [cond.column, *cond.aliases] if c in df.columns)],
                int((~ok).sum()),
                lines,
            )
        df = df[ok]
    out = pd.DataFrame(index=df.index)
    for name in src.columns:
        spec = src.spec(name)
        values = _column(ctx, df, spec, name)
        if spec.drop:
            raw = _raw(ctx, df, spec, name, ctx.path(name))
            dropped = {_norm(d) for d in spec.drop}
            hit = raw.map(lambda v, d=dropped: not pd.isna(v) and _norm(v) in d).astype(bool)
            what = spec.source or name
            report.drop(
                table,
                src.file,
                f"{what} value listed under `drop`",
                raw[hit],
                int(hit.sum()),
                lines,
            )
            df, out, values = df[~hit], out[~hit], values[~hit]
        out[name] = values
    out["_line"] = lines[out.index]
    out["_quiet"] = src.shared_key
    if src.shared_key and "created_at" in out.columns:
        out = out.sort_values("created_at", kind="stable")  # the earliest row is kept
    return out.reset_index(drop=True)


def _finish_table(
    table: Table, frames: list[tuple[str, pd.DataFrame]], report: ImportReport
) -> pd.DataFrame:
    """Concatenate a table's sources; drop rows without a key, duplicate keys, exact duplicates."""
    parts = [f.assign(_file=name) for name, f in frames]
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    for key in table.key:
        if key not in df.columns:
            continue
        missing = df[key].isna()
        for name, n in df.loc[missing, "_file"].value_counts().items():
            hit = missing & (df["_file"] == name)
            report.drop(table.name, str(name), f"no {key}", None, int(n), df.loc[hit, "_line"])
        df = df[~missing]
        dup = df.duplicated(subset=[key], keep="first")
        quiet = dup & df["_quiet"].astype(bool)
        for name, n in df.loc[dup & ~quiet, "_file"].value_counts().items():
            report.drop(
                table.name,
                str(name),
                f"duplicate {key} (first row kept)",
                df.loc[dup & ~quiet & (df["_file"] == name), key],
                int(n),
            )
        for name, n in df.loc[quiet, "_file"].value_counts().items():
            shown = ", ".join(distinct(df.loc[quiet & (df["_file"] == name), key].head(_SCAN)))
            report.note(
                f"{table.name}: {int(n)} row(s) of {name} have the same {key} as an earlier "
                f"row (e.g. {shown}), as expected for this source (`shared_key`: several "
                f"rows make one {table.name} row): one row per {key}, from the earliest; "
                "not data left out"
            )
        df = df[~dup]
    if not table.key and len(df):
        cols = [c for c in df.columns if c not in ("_file", "_line", "_quiet")]
        dup = df.duplicated(subset=cols, keep="first")
        for name, n in df.loc[dup, "_file"].value_counts().items():
            hit = dup & (df["_file"] == name)
            report.drop(
                table.name,
                str(name),
                "exact duplicate of another row",
                None,
                int(n),
                df.loc[hit, "_line"],
            )
        df = df[~dup]
    df = df.drop(columns=["_file", "_line", "_quiet"], errors="ignore")
    order = [c for c in ("ts", "created_at") if c in df.columns]
    if order and len(df):
        df = df.sort_values(order[0], kind="stable")
    return df.reset_index(drop=True)


def map_tables(
    mapping: Mapping,
    src_dir: str | Path,
    report: ImportReport | None = None,
    vocab: Vocabulary | None = None,
) -> tuple[dict[str, pd.DataFrame], ImportReport]:
    """Apply ``mapping`` to the export folder ``src_dir`` (no contract checks yet).

    The values the mapping writes itself (``map`` targets, labels, constants) are checked
    against ``vocab`` (default: the built-in vocabulary) before any file is read."""
    check_vocabulary(mapping, vocab or Vocabulary())
    src_dir = Path(src_dir).expanduser()
    if not src_dir.is_dir():
        raise MappingError(
            f"source folder {src_dir} does not exist; pass --src with the folder of export files"
        )
    report = report or ImportReport(mapping.name, str(src_dir))
    files = _Files(src_dir, report)
    out: dict[str, pd.DataFrame] = {}
    for table_name, sources in mapping.tables.items():
        frames = []
        for i, src in enumerate(sources):
            built = _build_source(mapping, files, table_name, src, report, i)
            if built is not None:
                frames.append((src.file, built))
        if frames:
            out[table_name] = _finish_table(TABLES[table_name], frames, report)
    files.note_absent()
    _note_empty_files(mapping, report, out)
    return out, report


def _note_empty_files(
    mapping: Mapping, report: ImportReport, tables: dict[str, pd.DataFrame]
) -> None:
    """A file with a header but no rows: a note, or an error when a required table is
    left with no rows at all because of it (a first import of a broken export)."""
    empty = [name for name, n in report.read.items() if n == 0]
    for name in empty:
        fed = [t for t, sources in mapping.tables.items() if any(s.file == name for s in sources)]
        for t in fed:
            if TABLES[t].required and len(tables.get(t, ())) == 0:
                raise MappingError(
                    f"{Path(report.src) / name}: the file has a header but no rows, and {t} "
                    f"(a required table) gets no rows from any file; export {name} again with "
                    "its rows"
                )
        report.notes.append(
            f"{name} has a header but no rows: nothing from it in {', '.join(fed) or 'any table'}"
        )


# ------------------------------------------------------------------ import


def import_tables(
    mapping: Mapping,
    src_dir: str | Path,
    vocab: Vocabulary | None = None,
    *,
    strict: bool = False,
    dropped_dir: Path | None = None,
) -> tuple[dict[str, pd.DataFrame], ImportReport]:
    """Map the exports in ``src_dir`` and check the result against the table contracts.

    Returns the canonical tables (typed as :func:`leadml.contracts.load_tables` types
    them; extra columns kept on leads and accounts) and the report. Rows that break a
    contract (an activity of a deleted lead, a deal of an unknown account, ...) are
    dropped and reported, and with ``dropped_dir`` written there as ``<table>.csv``
    with a ``_reasons`` column; with ``strict`` they raise :class:`DataError` instead.
    Timestamps are UTC; nothing is read from outside ``src_dir``.
    """
    vocab = vocab or Vocabulary()
    frames, report = map_tables(mapping, src_dir, vocab=vocab)
    source = frames_source(frames)
    source.location = f"the import of {src_dir} (mapping {mapping.origin})"
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    try:
        check = check_tables(
            con,
            source,
            vocab,
            bad_rows="quarantine",
            quarantine_dir=None if strict else dropped_dir,
        )
        if strict and check.problems:
            raise DataError(_strict_failure(src_dir, mapping, check.problems))
        for p in check.problems:
            examples: list[str] = []
            if p.examples is not None and len(p.examples):
                examples = distinct(
                    _example(TABLES[p.table], row, p.column)
                    for _, row in p.examples.head(_SCAN).iterrows()
                )
            what = f"{p.column}: {p.reason}" if p.column else p.reason
            report.dropped.append(Dropped(p.table, CONTRACT_CHECK, what, p.count, examples))
        tables = {name: con.execute(f"SELECT * FROM {name}").df() for name in check.rows}
    finally:
        con.close()
    # The result must now meet every contract as it is (a second, strict pass).
    con, _ = connect(frames_source(tables), vocab)
    con.close()
    report.rows = {name: len(df) for name, df in tables.items()}
    _note_current_close_dates(mapping, tables, report)
    _note_emptied_tables(report)
    return tables, report


CONTRACT_CHECK = "contract check"  # the "file" of rows left out by the table contracts


def _strict_failure(src_dir: str | Path, mapping: Mapping, problems: list[Any]) -> str:
    """The error of ``--strict`` when mapped rows break a table contract."""
    total = sum(p.count for p in problems)
    lines = [
        f"--strict: {total} row(s) imported from {src_dir} with {mapping.origin} break a "
        f"table contract ({len(problems)} problem(s)):",
        *("- " + p.render() for p in problems),
        "fix: correct these rows in the export files (or the mapping), or run the import "
        "without --strict to leave them out: they are then listed in import_report.json "
        "and written to dropped/<table>.csv in the output folder",
    ]
    return "\n".join(lines)


def _note_emptied_tables(report: ImportReport) -> None:
    """A note, first in the list, for every table whose rows were all left out: an empty
    table is rarely what the export meant (e.g. a header-only deals file drops every
    stage-history row as an unknown deal)."""
    for table in sorted({d.table for d in report.dropped}):
        if report.rows.get(table):
            continue
        drops = [d for d in report.dropped if d.table == table]
        top = max(drops, key=lambda d: d.count)
        total = sum(d.count for d in drops)
        example = f" (e.g. {top.examples[0]})" if top.examples else ""
        where = "" if top.file == CONTRACT_CHECK else f", in {top.file}"
        report.notes.insert(
            0,
            f"every row of {table} was left out ({total:,} rows; most for: {top.reason}"
            f"{example}{where}): the import wrote it empty; fix that reason "
            "or leave the table out of the mapping",
        )


CURRENT_VALUES_NOTE = (
    "opportunity_history holds each deal's current close date (and amount) on every row, "
    "not the values the deal had at the time ({why}): a forecast trained on it learns "
    "'expected close date inside the period' from close dates known only in hindsight "
    "and overstates open-deal revenue. Export the full stage and close-date history (one "
    "row per change, with the close date valid at that time) and map it to fix this; "
    "see docs/byod.md"
)


def _note_current_close_dates(
    mapping: Mapping, tables: dict[str, pd.DataFrame], report: ImportReport
) -> None:
    """A note when the deal history cannot show how close dates moved: the HubSpot preset
    (its exports have only current values), a close date looked up from another file
    (the deal's current one), or a history with one row per deal (a snapshot)."""
    hist = tables.get("opportunity_history")
    if hist is None or not len(hist):
        return

    def looked_up(spec: ColumnSpec) -> bool:
        return spec.lookup is not None or any(looked_up(s) for s in spec.coalesce or [])

    why = None
    if mapping.origin == "preset hubspot":
        why = "HubSpot exports only current values"
    elif any(
        "expected_close_date" in src.columns and looked_up(src.spec("expected_close_date"))
        for src in mapping.tables.get("opportunity_history", [])
    ):
        why = "the mapping looks the close date up in another file"
    elif hist["opportunity_id"].value_counts().max() == 1:
        why = "it has one row per deal"
    if why is not None:
        report.notes.append(CURRENT_VALUES_NOTE.format(why=why))


def _example(table: Table, row: pd.Series, column: str | None) -> str:
    """A row that broke a contract, as the user can find it: the failing value when it
    has one (an unknown lead id), else the row's key (``lead_id=...``) or a few of its
    id and time columns."""
    if column in row.index and not pd.isna(row[column]):
        return str(row[column])
    for key in table.key:
        if key in row.index and not pd.isna(row[key]):
            return f"{key}={row[key]}"
    ids = [
        c.name
        for c in table.columns
        if c.kind in ("id", "timestamp") and c.name in row.index and not pd.isna(row[c.name])
    ]
    return ", ".join(f"{c}={row[c]}" for c in ids[:3]) or "(every id is empty)"


REPORT_FILE = "import_report.json"  # also the mark of an earlier import's output folder
_SYSTEM_FILES = {".DS_Store", "Thumbs.db", "desktop.ini"}  # written by file browsers


def _import_entries(folder: Path) -> tuple[list[Path], list[str]]:
    """The entries of ``folder`` an import writes (``<table>.parquet``, the report,
    ``dropped/``), and the names of the others."""
    ours = {f"{t}.parquet" for t in TABLES} | {REPORT_FILE, "dropped"}
    mine, foreign = [], []
    for entry in sorted(folder.iterdir()):
        if entry.name in ours:
            mine.append(entry)
        elif entry.name not in _SYSTEM_FILES:
            foreign.append(entry.name)
    return mine, foreign


def _named_files(mapping: Mapping) -> set[str]:
    """Every file the mapping reads (sources, lookups, ``not_in_file`` filters)."""
    names: set[str] = set()

    def spec_files(spec: ColumnSpec) -> None:
        if spec.lookup is not None:
            names.add(spec.lookup.file)
        for sub in spec.coalesce or []:
            spec_files(sub)

    for sources in mapping.tables.values():
        for src in sources:
            names.add(src.file)
            names.update(c.not_in_file.file for c in src.where if c.not_in_file is not None)
            for name in src.columns:
                spec_files(src.spec(name))
    return names


def _listing(names: list[str]) -> str:
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return ", ".join(names[:5]) + more


def check_out_dir(out_dir: str | Path, src_dir: str | Path, mapping: Mapping | None = None) -> Path:
    """The import's output folder, resolved, if it may be replaced whole; else a
    :class:`ConfigError` saying why and what to pass instead (nothing is touched).

    Allowed: a folder that does not exist yet, an empty folder, or the output of an
    earlier import (it has ``import_report.json`` and nothing an import does not write).
    Refused: a file, the source folder, a folder holding the source folder or a file the
    mapping reads, and any other non-empty folder."""
    given = out_dir
    out = Path(out_dir).expanduser().resolve()
    src = Path(src_dir).expanduser().resolve()
    fix = "pass --out with a new or empty folder"
    if out.exists() and not out.is_dir():
        raise ConfigError(f"import output {given} is a file, not a folder; {fix}")
    parent = next((p for p in out.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ConfigError(
            f"import output {given}: {parent} is a file, so the folder cannot be made; {fix}"
        )
    replaced = "the import replaces its output folder whole"
    if out == src:
        raise ConfigError(
            f"import output {given} is the source folder (--src {src_dir}); {replaced} and "
            f"would delete the export files; {fix} outside the source folder"
        )
    if src.is_relative_to(out):
        raise ConfigError(
            f"import output {given} contains the source folder (--src {src_dir}); {replaced} "
            f"and would delete the export files; {fix} outside the source folder"
        )
    if mapping is not None and out.is_relative_to(src):
        inside = sorted(n for n in _named_files(mapping) if (src / n).resolve().is_relative_to(out))
        if inside:
            raise ConfigError(
                f"import output {given} holds files the mapping reads ({_listing(inside)}); "
                f"{replaced} and would delete them; {fix} outside the source folder"
            )
    if out.is_dir():
        mine, foreign = _import_entries(out)
        if not (out / REPORT_FILE).is_file():
            if foreign or mine:
                names = _listing(foreign + [m.name for m in mine])
                raise ConfigError(
                    f"import output {given} is a non-empty folder that is not an earlier "
                    f"import (no {REPORT_FILE}; it holds {names}) and {replaced}; {fix}"
                )
        elif foreign:
            raise ConfigError(
                f"import output {given} is an earlier import's output but also holds files "
                f"an import does not write ({_listing(foreign)}); {replaced}: move them "
                f"elsewhere first, or {fix}"
            )
    return out


def write_import(
    tables: dict[str, pd.DataFrame],
    report: ImportReport,
    out_dir: Path,
    dropped_from: Path | None = None,
) -> Path:
    """Write ``<table>.parquet`` files, ``import_report.json`` and the dropped rows
    (``dropped/<table>.csv``) into ``out_dir``, replacing it atomically: everything is
    written into a temporary folder beside it first. When ``out_dir`` is the current
    folder (or holds it) its contents are swapped instead of the folder itself, so that
    the shell that ran the import does not end up in a deleted folder."""
    import json
    import shutil

    out_dir = Path(out_dir).expanduser().resolve()

    def fill(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        for name, df in tables.items():
            df.to_parquet(tmp / f"{name}.parquet", index=False)
        if dropped_from is not None and dropped_from.is_dir() and any(dropped_from.iterdir()):
            shutil.copytree(dropped_from, tmp / "dropped")
        (tmp / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2, default=str))

    try:
        if out_dir.is_dir() and Path.cwd().resolve().is_relative_to(out_dir):
            tmp = out_dir.with_name(f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}")
            try:
                fill(tmp)
                _swap_contents(tmp, out_dir)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        else:
            with atomic_path(out_dir) as tmp:
                fill(tmp)
    except OSError as exc:
        raise ConfigError(
            f"cannot write the import output {out_dir}: {exc.strerror or exc}; pass --out "
            "with a folder you can write to"
        ) from None
    return out_dir


def _swap_contents(new: Path, target: Path) -> None:
    """Replace the import entries of ``target`` by the entries of ``new`` (same file
    system: renames), the report last; on an error the old entries are put back."""
    import os
    import shutil

    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    old.mkdir()
    moved_out: list[Path] = []
    moved_in: list[Path] = []
    try:
        for entry in _import_entries(target)[0]:
            os.replace(entry, old / entry.name)
            moved_out.append(entry)
        entries = sorted(new.iterdir(), key=lambda p: p.name == REPORT_FILE)
        for entry in entries:
            os.replace(entry, target / entry.name)
            moved_in.append(target / entry.name)
    except OSError:
        for entry in moved_in:
            os.replace(entry, new / entry.name)
        for entry in moved_out:
            os.replace(old / entry.name, entry)
        old.rmdir()
        raise
    shutil.rmtree(old, ignore_errors=True)


def run_import(
    mapping: Mapping,
    src_dir: str | Path,
    out_dir: str | Path,
    vocab: Vocabulary | None = None,
    *,
    strict: bool = False,
) -> tuple[dict[str, pd.DataFrame], ImportReport]:
    """:func:`import_tables` then :func:`write_import` into ``out_dir`` (atomically:
    on any error ``out_dir`` is left as it was). ``out_dir`` is checked first by
    :func:`check_out_dir`: a folder that holds anything but an earlier import's output,
    or the exports themselves, is refused before any file is read."""
    import tempfile

    out = check_out_dir(out_dir, src_dir, mapping)
    with tempfile.TemporaryDirectory(prefix="leadml-import-") as tmp:
        dropped = Path(tmp) / "dropped"
        tables, report = import_tables(mapping, src_dir, vocab, strict=strict, dropped_dir=dropped)
        write_import(tables, report, out, dropped_from=dropped)
    return tables, report
