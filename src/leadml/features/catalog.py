"""The feature catalog: features declared once, as data, validated before any data is read.

``configs/features.yaml`` has two sections, ``lead`` and ``opportunity``; each is a
list of features in the order they appear in feature tables. Every feature has a
``name``, a ``kind`` and a ``label`` (a reason template with ``{value}``). Kinds:

``aggregate``
    an aggregation over the entity's records in a source table, in a window that
    ends just before the as-of time T: records with ``T - window <= ts < T``
    (``window: all`` means every record with ``ts < T``). ``filter`` keeps rows
    whose column equals a value or is in a list. ``scope: account_others`` (lead
    events only) aggregates the events of the OTHER leads at the lead's account
    (the buying committee).
``attribute``
    a column of the entity's row or of its account: ``categorical``, ``numeric``
    or ``days_since`` (T minus a timestamp column, in days). Opportunities expose
    only immutable columns (the mutable ones are rebuilt from history as ``state``).
``state``
    the entity's state at T rebuilt from its history table (last row with ts < T):
    lead status, opportunity stage, amount, expected close date, pushes, regressions.
``outcomes``
    deals of the same owner or account that closed before T (point-in-time win rate,
    past wins and losses); the opportunity itself is never counted.
``derived``
    arithmetic on earlier features of the same entity (trend ratios, no-shows).

Missing values: counts, ``exists`` and sums are 0 when no record matches; means,
minima, maxima, ``days_since_*`` and state values are missing (None/NaN).
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from leadml.config import Vocabulary
from leadml.contracts import TABLES
from leadml.errors import ConfigError

Entity = Literal["lead", "opportunity"]
ENTITIES: tuple[str, ...] = ("lead", "opportunity")
ENTITY_ID: dict[str, str] = {"lead": "lead_id", "opportunity": "opportunity_id"}

Aggregation = Literal[
    "count",
    "sum",
    "mean",
    "min",
    "max",
    "distinct_count",
    "days_since_last",
    "days_since_first",
    "exists",
]
AGGREGATIONS: tuple[str, ...] = Aggregation.__args__  # type: ignore[attr-defined]
NUMERIC_AGGREGATIONS = ("sum", "mean", "min", "max")

# Which source tables each entity can aggregate, keyed by the column that names the entity.
SOURCES: dict[str, dict[str, str]] = {
    "lead": {"events": "lead_id", "activities": "lead_id", "lead_status_history": "lead_id"},
    "opportunity": {"activities": "opportunity_id", "opportunity_history": "opportunity_id"},
}
# Rows of these tables belong to the entity; the columns below describe the entity itself.
ATTRIBUTE_TABLES: dict[str, dict[str, tuple[str, ...]]] = {
    "lead": {
        "lead": tuple(
            c.name for c in TABLES["leads"].columns if c.name not in ("lead_id", "account_id")
        ),
        "account": tuple(c.name for c in TABLES["accounts"].columns if c.name != "account_id"),
    },
    # Only immutable fields of the opportunity row: amount and stage change over time
    # and are rebuilt from opportunity_history (kind: state).
    "opportunity": {
        "opportunity": ("created_at", "owner_id", "segment"),
        "account": tuple(c.name for c in TABLES["accounts"].columns if c.name != "account_id"),
    },
}
LEAD_STATES = ("status", "days_in_status")
OPPORTUNITY_STATES = (
    "stage",
    "stage_index",
    "days_in_stage",
    "amount",
    "amount_change",
    "amount_changes",
    "close_date_pushes",
    "days_to_expected_close",
    "days_past_expected_close",
    "stage_changes",
    "stage_regressions",
    "days_since_update",
)
STATES: dict[str, tuple[str, ...]] = {"lead": LEAD_STATES, "opportunity": OPPORTUNITY_STATES}
CATEGORICAL_STATES = ("status", "stage")
OUTCOME_GROUPS: dict[str, tuple[str, ...]] = {
    "lead": ("account",),
    "opportunity": ("owner", "account"),
}
OUTCOME_METRICS = ("won_count", "lost_count", "win_rate", "won_amount")
# Columns a training set adds beside the features; a feature may not take these names.
RESERVED_NAMES = frozenset(
    {
        "lead_id",
        "opportunity_id",
        "as_of",
        "label",
        "outcome",
        "outcome_days",
        "segment",
        "owner_id",
        "amount",
    }
)

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_WINDOW = re.compile(r"^(?P<n>[1-9][0-9]{0,3})(?P<unit>[dw])$")
WINDOW_HELP = "'all' or a number of days/weeks such as 7d, 30d, 90d, 12w"

FilterValue = str | int | float | bool
DAY_US = 86_400_000_000


def _check_window(v: str) -> str:
    if v != "all" and not _WINDOW.match(v):
        raise ValueError(f"unknown window {v!r}; use {WINDOW_HELP}")
    return v


def _window_days(window: str) -> int | None:
    m = _WINDOW.match(window)
    return None if m is None else int(m["n"]) * (7 if m["unit"] == "w" else 1)


# Key suffix of a feature's reason template for negative values in a templates mapping.
NEGATIVE = "<0"


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    label: str = Field(description="Reason template; {value} is replaced by the feature value")
    label_negative: str | None = Field(
        None,
        description="Reason template for a negative value, which replaces {value} by its "
        "size ('{value} days past the expected close date' for -32)",
    )
    drift: bool = Field(
        True,
        description="Watched for drift in the nightly run (PSI against training). False for "
        "values that move by construction: counts that only grow, distances to calendar "
        "dates, a handful of per-owner values; their PSI is still shown, as 'unwatched'",
    )

    @field_validator("name")
    @classmethod
    def _valid_name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(
                "must be lower_snake_case: a letter, then letters, digits or _ (max 63)"
            )
        if v in RESERVED_NAMES:
            raise ValueError(
                f"is reserved for training-set columns ({', '.join(sorted(RESERVED_NAMES))})"
            )
        return v

    @field_validator("label", "label_negative")
    @classmethod
    def _valid_label(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(v) if f is not None]
        except ValueError as exc:
            raise ValueError(f"not a valid template ({exc})") from None
        bad = [f for f in fields if f != "value"]
        if bad:
            raise ValueError(f"unknown placeholder {{{bad[0]}}}; the only placeholder is {{value}}")
        return v


class AggregateFeature(_Entry):
    kind: Literal["aggregate"]
    source: str
    aggregation: Aggregation
    column: str | None = None
    filter: dict[str, FilterValue | list[FilterValue]] = Field(default_factory=dict)
    window: str = "all"
    scope: Literal["self", "account_others"] = "self"

    @field_validator("window")
    @classmethod
    def _valid_window(cls, v: str) -> str:
        return _check_window(v)

    @property
    def window_days(self) -> int | None:
        """Window length in days, None for all time."""
        return _window_days(self.window)

    def filter_items(self) -> list[tuple[str, list[FilterValue]]]:
        return [(c, v if isinstance(v, list) else [v]) for c, v in self.filter.items()]


class AttributeFeature(_Entry):
    kind: Literal["attribute"]
    table: str
    column: str
    type: Literal["categorical", "numeric", "days_since"]
    extra: bool = Field(
        False, description="the column is an extra (non-contract) column of the table"
    )


class StateFeature(_Entry):
    kind: Literal["state"]
    state: str


class OutcomesFeature(_Entry):
    kind: Literal["outcomes"]
    group: str
    metric: Literal["won_count", "lost_count", "win_rate", "won_amount"]
    window: str = "all"

    @field_validator("window")
    @classmethod
    def _valid_window(cls, v: str) -> str:
        return _check_window(v)

    @property
    def window_days(self) -> int | None:
        """Window length in days, None for all time."""
        return _window_days(self.window)


class DerivedFeature(_Entry):
    kind: Literal["derived"]
    op: Literal["ratio", "difference", "shortfall"]
    inputs: tuple[str, str]


Feature = Annotated[
    AggregateFeature | AttributeFeature | StateFeature | OutcomesFeature | DerivedFeature,
    Field(discriminator="kind"),
]


class Catalog(BaseModel):
    """The validated feature catalog; ``lead`` and ``opportunity`` lists keep their order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = 1
    lead: list[Feature] = Field(default_factory=list)
    opportunity: list[Feature] = Field(default_factory=list)
    _vocab: Vocabulary | None = PrivateAttr(default=None)

    @property
    def vocabulary(self) -> Vocabulary:
        """The vocabulary the catalog was validated against (stage order, closed stages)."""
        return self._vocab or Vocabulary()

    def features(self, entity: str) -> list[Feature]:
        if entity not in ENTITIES:
            raise ConfigError(f"unknown entity {entity!r}; valid: {', '.join(ENTITIES)}")
        return list(getattr(self, entity))

    def names(self, entity: str) -> list[str]:
        return [f.name for f in self.features(entity)]

    def unwatched(self, entity: str) -> list[str]:
        """Names of the features not watched for drift (``drift: false``)."""
        return [f.name for f in self.features(entity) if not f.drift]

    def categorical(self, entity: str) -> list[str]:
        """Names of the features whose values are strings (categories)."""
        return [f.name for f in self.features(entity) if is_categorical(f)]

    def labels(self, entity: str) -> dict[str, str]:
        """Reason templates by feature name; a template for negative values under
        ``<name><0`` (see :func:`leadml.modeling.explain.template_for`)."""
        out = {f.name: f.label for f in self.features(entity)}
        out.update(
            {
                f"{f.name}{NEGATIVE}": f.label_negative
                for f in self.features(entity)
                if f.label_negative
            }
        )
        return out


def is_categorical(f: object) -> bool:
    if isinstance(f, AttributeFeature):
        return f.type == "categorical"
    if isinstance(f, StateFeature):
        return f.state in CATEGORICAL_STATES
    return False


def is_count(f: object) -> bool:
    """Integer-valued features (compared exactly by the parity tests)."""
    if isinstance(f, AggregateFeature):
        return f.aggregation in ("count", "distinct_count", "exists")
    if isinstance(f, StateFeature):
        return f.state in (
            "stage_index",
            "amount_changes",
            "close_date_pushes",
            "stage_changes",
            "stage_regressions",
        )
    if isinstance(f, OutcomesFeature):
        return f.metric in ("won_count", "lost_count")
    return False


# ----------------------------------------------------------------- validation


def _choices(values: object) -> str:
    return ", ".join(str(v) for v in values)  # type: ignore[attr-defined]


def _check_filter(f: AggregateFeature, vocab: Vocabulary) -> list[str]:
    problems: list[str] = []
    cols = {c.name: c for c in TABLES[f.source].columns}
    for col, values in f.filter_items():
        if col not in cols or col == "ts":
            valid = _choices(c for c in cols if c != "ts")
            problems.append(f"filter: unknown column {f.source}.{col}; valid: {valid}")
            continue
        if not values:
            problems.append(f"filter: {col}: empty list of values")
        spec = cols[col]
        if spec.vocab is None:
            continue
        allowed = spec.vocab(vocab)
        what = col
        if col == "type":
            what = "event type" if f.source == "events" else "activity type"
        for v in values:
            if v not in allowed:
                problems.append(
                    f"filter: unknown {what} {v!r} in {f.source}.{col}; valid: {_choices(allowed)}"
                )
    return problems


def _check_column(f: AggregateFeature) -> list[str]:
    cols = {c.name: c for c in TABLES[f.source].columns}
    got = "no column" if f.column is None else f"column {f.column!r}"
    if f.aggregation in NUMERIC_AGGREGATIONS:
        numeric = [c for c, spec in cols.items() if spec.kind in ("float", "int")]
        if f.column is None or f.column not in numeric:
            return [
                f"column: aggregation {f.aggregation} needs a numeric column of {f.source}, "
                f"got {got}; valid: "
                f"{_choices(numeric) or '(none: this table has no numeric column)'}"
            ]
    elif f.aggregation == "distinct_count":
        valid = [c for c in cols if c != "ts"]
        if f.column is None or f.column not in valid:
            return [
                f"column: distinct_count needs a column of {f.source}, got {got}; "
                f"valid: {_choices(valid)}"
            ]
    elif f.column is not None:
        return [f"column: aggregation {f.aggregation} takes no column (got {f.column!r})"]
    return []


def _check_scope(entity: str, f: AggregateFeature) -> list[str]:
    if f.scope != "account_others":
        return []
    problems: list[str] = []
    if entity != "lead" or f.source != "events":
        problems.append("scope: account_others is only for lead features over events")
    allowed_aggs = ("count", "exists", "distinct_count")
    if f.aggregation not in allowed_aggs:
        problems.append(
            f"aggregation: {f.aggregation} is not available with scope account_others; "
            f"valid: {_choices(allowed_aggs)}"
        )
    if f.aggregation == "distinct_count" and f.column != "lead_id":
        problems.append(
            "column: with scope account_others, distinct_count counts lead_id (engaged colleagues)"
        )
    return problems


def _check_aggregate(entity: str, f: AggregateFeature, vocab: Vocabulary) -> list[str]:
    sources = SOURCES[entity]
    if f.source not in sources:
        return [
            f"source: unknown table {f.source!r} for a {entity} aggregate; "
            f"valid: {_choices(sources)}"
        ]
    return [*_check_filter(f, vocab), *_check_column(f), *_check_scope(entity, f)]


_ROW_TABLES = {"lead": "leads", "account": "accounts", "opportunity": "opportunities"}


def _check_attribute(entity: str, f: AttributeFeature) -> list[str]:
    tables = ATTRIBUTE_TABLES[entity]
    if f.table not in tables:
        return [
            f"table: unknown table {f.table!r} for a {entity} attribute; valid: {_choices(tables)}"
        ]
    if f.extra:
        if entity == "opportunity" and f.table == "opportunity":
            return [
                "extra: opportunities have no extra columns; "
                "only accounts' extra columns can be used"
            ]
        return []
    if f.column not in tables[f.table]:
        hint = ""
        if f.table in ("lead", "account"):
            hint = " (an extra column of leads/accounts needs `extra: true`)"
        return [
            f"column: unknown column {f.table}.{f.column}; valid: {_choices(tables[f.table])}{hint}"
        ]
    kind = TABLES[_ROW_TABLES[f.table]].column(f.column).kind
    where = f"{f.table}.{f.column}"
    if f.type == "days_since" and kind != "timestamp":
        return [f"type: days_since needs a timestamp column; {where} is {kind}"]
    if f.type == "numeric" and kind not in ("int", "float"):
        return [f"type: numeric needs a number column; {where} is {kind} (use categorical)"]
    if f.type == "categorical" and kind == "timestamp":
        return [f"type: {where} is a timestamp; use days_since"]
    return []


def _check_derived(entity: str, f: DerivedFeature, seen: dict[str, object]) -> list[str]:
    problems = []
    for name in f.inputs:
        if name not in seen:
            problems.append(
                f"inputs: {name!r} is not an earlier {entity} feature; "
                f"valid: {_choices(seen) or '(none)'}"
            )
        elif is_categorical(seen[name]):
            problems.append(
                f"inputs: {name!r} is categorical; derived features need numeric inputs"
            )
    return problems


def _check_entry(entity: str, f: object, vocab: Vocabulary, seen: dict[str, object]) -> list[str]:
    if isinstance(f, AggregateFeature):
        return _check_aggregate(entity, f, vocab)
    if isinstance(f, AttributeFeature):
        return _check_attribute(entity, f)
    if isinstance(f, StateFeature) and f.state not in STATES[entity]:
        return [f"state: unknown {entity} state {f.state!r}; valid: {_choices(STATES[entity])}"]
    if isinstance(f, OutcomesFeature) and f.group not in OUTCOME_GROUPS[entity]:
        valid = _choices(OUTCOME_GROUPS[entity])
        return [f"group: unknown group {f.group!r} for {entity} outcomes; valid: {valid}"]
    if isinstance(f, DerivedFeature):
        return _check_derived(entity, f, seen)
    return []


def validate_catalog(catalog: Catalog, vocab: Vocabulary, source: str = "features.yaml") -> Catalog:
    """Check names, tables, columns, vocabulary values and derived inputs; raise one
    :class:`ConfigError` listing every problem with its entry and the valid choices."""
    problems: list[str] = []
    for entity in ENTITIES:
        seen: dict[str, object] = {}
        for i, f in enumerate(catalog.features(entity)):
            where = f"{entity}[{i}] {f.name!r}"
            if f.name in seen:
                problems.append(f"{where}: name: duplicate feature name")
            for p in _check_entry(entity, f, vocab, seen):
                problems.append(f"{where}: {p}")
            seen[f.name] = f
    if problems:
        raise ConfigError(
            f"{source}: invalid feature catalog ({len(problems)} problem(s)):\n  "
            + "\n  ".join(problems)
        )
    catalog._vocab = vocab
    return catalog


def _describe(exc: ValidationError, data: dict, source: str) -> str:
    lines = [f"{source}: invalid feature catalog:"]
    for err in exc.errors():
        loc = list(err["loc"])
        where = ".".join(str(p) for p in loc)
        if len(loc) >= 2 and loc[0] in ENTITIES and isinstance(loc[1], int):
            try:
                name = data[loc[0]][loc[1]].get("name", "?")
            except (KeyError, IndexError, AttributeError, TypeError):
                name = "?"
            rest = [
                str(p)
                for p in loc[2:]
                if p not in ("aggregate", "attribute", "state", "outcomes", "derived")
            ]
            where = f"{loc[0]}[{loc[1]}] {name!r}: {'.'.join(rest) or 'entry'}"
        msg = err["msg"]
        if err["type"] == "union_tag_invalid" or err["type"] == "union_tag_not_found":
            msg = f"{msg} (kind must be one of: aggregate, attribute, state, outcomes, derived)"
        lines.append(f"  {where}: {msg}")
    return "\n".join(lines)


def parse_catalog(data: object, vocab: Vocabulary, source: str = "features.yaml") -> Catalog:
    """Validate a catalog given as a mapping (the parsed YAML)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with sections 'lead' and 'opportunity'")
    try:
        catalog = Catalog.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, data, source)) from None
    return validate_catalog(catalog, vocab, source)


def load_catalog(path: str | Path, vocab: Vocabulary) -> Catalog:
    """Read and validate ``features.yaml``; nothing about the data is read."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(
            f"feature catalog {path} does not exist; pass --config-dir with a features.yaml"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_catalog(data, vocab, str(path))
