"""Model specifications: one YAML file per predictive model in ``models/``.

A spec says what is predicted (target and horizon), from which catalog
features, with which estimator and calibration, how it is backtested, how much
data it needs, which gate a new version must pass before it becomes
``champion``, and (for lead readiness) the inside-sales hand-off policy.

Time semantics of the backtest: for each origin ``o`` a fold trains on rows
with ``as_of < o - gap_days`` and tests on rows with ``o <= as_of < o + test_days``.
The latest origin is placed so that its test window ends at the last labelled
``as_of``; earlier origins step back by ``step_days``.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Any, Literal

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

from leadml.errors import ConfigError

GradeName = Literal["A", "B", "C"]
DEFAULT_GRADE_CUTOFFS: dict[GradeName, float] = {"A": 0.3, "B": 0.15, "C": 0.05}

ModelKind = Literal["lead_readiness", "deal_close"]


# The headline metrics of a model card and of `leadml models`, in their order.
CARD_METRICS = (
    "roc_auc",
    "pr_auc",
    "brier",
    "log_loss",
    "ece",
    "mean_ratio_error",
    "lift_top_decile",
    "precision_at_capacity",
    "recall_at_capacity",
)


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TargetSpec(_Part):
    """What is predicted.

    lead_readiness: the lead becomes SQL / gets an opportunity in ``(as_of, as_of + horizon_days]``.
    deal_close: the deal is won by ``as_of + d``; ``horizon_days`` is the headline ``d``
    used for metrics, ``week_days`` the length of one hazard period and ``max_weeks``
    how far the hazard reaches (P(won by d) for d beyond it is P(won by max_weeks)).
    """

    horizon_days: int = Field(30, ge=1, le=730)
    week_days: int = Field(7, ge=1, le=31)
    max_weeks: int = Field(26, ge=1, le=104)
    eval_horizons_days: list[int] = Field(default_factory=lambda: [30, 90])
    # deal_close: "days until X" features (e.g. days to expected close) that the
    # hazard shifts by the period start, so week k sees the days left at week k.
    shift_features: list[str] = Field(default_factory=list)
    # deal_close: give the hazard each period's days to the end of its calendar quarter
    # (quarter-end pushes). Scoring inputs then need an ``as_of`` column.
    calendar: bool = False


class EstimatorSpec(_Part):
    """LightGBM parameters (passed to ``lightgbm.train``) and boosting rounds."""

    params: dict[str, Any] = Field(
        default_factory=lambda: {
            "learning_rate": 0.05,
            "num_leaves": 31,
            "min_data_in_leaf": 50,
            "feature_fraction": 0.9,
            "bagging_fraction": 0.9,
            "bagging_freq": 1,
            "lambda_l2": 1.0,
        }
    )
    num_boost_round: int = Field(400, ge=1, le=20_000)
    early_stopping_rounds: int = Field(30, ge=0)
    seed: int = 7
    # 0 = the physical cores available to the process (not OpenMP's "all logical
    # cores"). On a machine shared with other busy processes, 1 is often much
    # faster: LightGBM's OpenMP threads spin while they wait for a core.
    num_threads: int = Field(0, ge=0)
    max_bin: int = Field(255, ge=3, le=1023, description="histogram bins per feature")
    # lead readiness: share of the negative rows (label 0) the booster is fitted on,
    # weighted 1/negative_rate; positives and the calibration slice are never sampled.
    negative_rate: float = Field(1.0, gt=0, le=1)

    @field_validator("params")
    @classmethod
    def _known_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """Unknown names are refused (LightGBM would ignore a typo silently)."""
        import difflib

        known = lightgbm_param_names()
        unknown = [k for k in params if k not in known]
        if unknown:
            canonical = lightgbm_canonical_names()
            parts = []
            for k in unknown:
                close = difflib.get_close_matches(k, sorted(known), n=1)
                # suggest the parameter's own name, not the alias nearest the typo
                # (num_leafs: num_leaves, not its alias num_leaf)
                hint = canonical.get(close[0], close[0]) if close else None
                parts.append(f"{k!r}" + (f" (did you mean {hint!r}?)" if hint else ""))
            raise ValueError(
                f"unknown LightGBM parameter(s) {', '.join(parts)}; see "
                "https://lightgbm.readthedocs.io/en/latest/Parameters.html"
            )
        return params


def lightgbm_canonical_names() -> dict[str, str]:
    """Each LightGBM parameter name or alias -> the parameter's own (documented) name."""
    from lightgbm.basic import _ConfigAliases

    out: dict[str, str] = {}
    for main, aliases in _ConfigAliases._get_all_param_aliases().items():
        out.update({a: main for a in aliases})
        out[main] = main
    return out


def lightgbm_param_names() -> set[str]:
    """LightGBM's parameter names and their aliases (from the library itself)."""
    from lightgbm.basic import _ConfigAliases

    names: set[str] = set()
    for main, aliases in _ConfigAliases._get_all_param_aliases().items():
        names.add(main)
        names.update(aliases)
    return names


class BaselineSpec(_Part):
    """The logistic-regression baseline trained and logged beside LightGBM."""

    C: float = Field(1.0, gt=0)
    max_iter: int = Field(500, ge=10)
    # fit on at most this many rows (a seeded sample, weighted to the full set's class mix)
    max_rows: int | None = Field(100_000, ge=1000)


class CalibrationSpec(_Part):
    """Calibration on a held-out later slice of the training window.

    The booster used to fit the calibrator is trained on rows before the slice
    (minus the gap); with ``refit`` the booster is then refitted on all rows with
    the same number of rounds and the calibrator is kept.
    """

    method: Literal["isotonic", "sigmoid"] = "isotonic"
    holdout_days: int = Field(56, ge=7)
    refit: bool = True


class BacktestSpec(_Part):
    """Rolling-origin backtest (see the module docstring for the time semantics)."""

    origins: int = Field(3, ge=1, le=24)
    gap_days: int = Field(30, ge=0)
    test_days: int = Field(28, ge=7)
    step_days: int | None = Field(None, ge=7, description="default: test_days")


class GateSpec(_Part):
    """What a challenger must satisfy to become champion.

    * ``max_ece``: its backtest ECE (10 equal-width bins) at most this.
    * ``max_mean_ratio_error``: calibration in the large, ``|mean(p) / mean(y) - 1|`` over
      the backtest test rows, at most this (0.25: the predicted number of positives is
      within 25% of the observed). Equal-width bins put nearly every readiness row
      (p < 0.1, base rate ~1%) in one bin, so ECE alone passes probabilities off by 3-4x.
    * ``min_roc_auc``: its ROC AUC on its latest test window at least this.
    * ``max_roc_auc_drop``: its ROC AUC at most this below the champion's, both out of
      sample, compared in this order of preference: (1) both models scored on the
      challenger's latest-window rows after the champion's label cutoff (enough of them);
      (2) the same test window (same start and end) in both backtests: the challenger's
      fold on the champion's latest window against the champion's stored latest-window
      figure; (3) the challenger's latest window against the champion's stored latest
      window (different windows: a coarser check). See docs/retraining.md.
    """

    max_roc_auc_drop: float = Field(
        0.01, ge=0, le=1, description="vs champion, both out of sample (see the class doc)"
    )
    max_ece: float = Field(0.03, gt=0, le=1)
    max_mean_ratio_error: float = Field(
        0.25, gt=0, description="|mean(p) / mean(y) - 1| on the backtest test rows"
    )
    # 0.6 as in the shipped specs: a model ranking little better than chance (0.5) is no
    # champion, whatever its calibration (a table model without a spec gets this default)
    min_roc_auc: float = Field(0.6, ge=0, le=1)


class PolicySpec(_Part):
    """Inside-sales hand-off policy (lead readiness only).

    Capacity is IS reps x weekly slots minus booked slots, divided by
    ``slots_per_lead``; ``capacity_per_week`` is used when no reps table exists.
    Grades: a calibrated probability >= ``grade_cutoffs['A']`` is A, and so on; below
    the lowest cut-off is D. Leads under ``recycle_below`` are recycle-eligible.
    """

    slots_per_lead: float = Field(2.0, gt=0)
    capacity_per_week: int = Field(200, ge=1)
    recycle_below: float = Field(0.01, ge=0, le=1)
    precision_target: float = Field(0.3, gt=0, le=1)
    grade_cutoffs: dict[GradeName, float] = Field(
        default_factory=lambda: dict(DEFAULT_GRADE_CUTOFFS)
    )

    @model_validator(mode="after")
    def _ordered(self) -> PolicySpec:
        c = self.grade_cutoffs
        if set(c) != {"A", "B", "C"} or not (c["A"] > c["B"] > c["C"]):
            raise ValueError("grade_cutoffs needs A > B > C (calibrated probabilities)")
        return self


class ModelSpec(_Part):
    """One predictive model."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="registered model name")
    kind: ModelKind
    description: str = ""
    target: TargetSpec = TargetSpec()
    features: list[str] = Field(min_length=1, description="catalog feature names")
    segment_column: str | None = "segment"
    estimator: EstimatorSpec = EstimatorSpec()
    baseline: BaselineSpec = BaselineSpec()
    calibration: CalibrationSpec = CalibrationSpec()
    backtest: BacktestSpec = BacktestSpec()
    min_positives: int = Field(50, ge=1, description="positives needed in the training window")
    gate: GateSpec = GateSpec()
    policy: PolicySpec = PolicySpec()
    every_days: int = Field(7, ge=1, description="as-of sampling interval of the training set")
    history_days: int | None = Field(None, ge=30, description="training window; None = all data")
    # the file the spec was read from (set by load_spec; error messages name it)
    _source: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> str:
        """The spec file this came from, for messages (``models/<name>.yaml`` if built in code)."""
        return str(self._source) if self._source is not None else f"models/{self.name}.yaml"

    @property
    def id_column(self) -> str:
        return "lead_id" if self.kind == "lead_readiness" else "opportunity_id"

    def with_changes(self, **changes: Any) -> ModelSpec:
        """A copy with ``changes`` merged in (nested mappings key by key), validated like
        a spec file: ``spec.with_changes(estimator={"params": {"num_leaves": 63}})``.
        (Pydantic's ``model_copy(update=...)`` checks nothing: a horizon of -7 or a
        misspelt LightGBM parameter would train.)"""
        spec = _validated(_merged(self.model_dump(), changes), f"{self.source} with changes")
        spec._source = self._source
        check_lightgbm_params(spec)
        return spec

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        dupes = sorted({f for f in self.features if self.features.count(f) > 1})
        if dupes:
            raise ValueError(f"features listed twice: {', '.join(dupes)}")
        if self.kind == "lead_readiness" and self.backtest.gap_days < self.target.horizon_days:
            # a training row's label must be known before the test window starts
            raise ValueError(
                f"backtest.gap_days ({self.backtest.gap_days}) must be at least "
                f"target.horizon_days ({self.target.horizon_days})"
            )
        unknown = sorted(set(self.target.shift_features) - set(self.features))
        if unknown:
            raise ValueError(f"target.shift_features not in features: {', '.join(unknown)}")
        return self


def load_spec(path: str | Path) -> ModelSpec:
    """Read and validate a model spec; errors name the file and the field."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"model spec {path} does not exist; pass --spec with a file from models/")
    if path.is_dir():
        raise ConfigError(
            f"model spec {path}/ is a folder; pass a YAML file, e.g. models/lead_readiness.yaml"
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    spec = _validated(data, str(path))
    spec._source = path
    check_lightgbm_params(spec)
    return spec


def _validated(data: dict[str, Any], where_from: str) -> ModelSpec:
    """``data`` as a spec; errors name ``where_from`` and each field."""
    try:
        return ModelSpec.model_validate(data)
    except ValidationError as exc:
        lines = [f"invalid model spec {where_from}:"]
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            got = (
                ""
                if not err["loc"] or isinstance(err.get("input"), dict)
                else (f" (got {err.get('input')!r})")
            )
            # a validator's ValueError reads "Value error, <our message>": keep the message;
            # a check of the whole spec (no field) names its fields itself
            msg = str(err["msg"]).removeprefix("Value error, ")
            lines.append(f"  {where}: {msg}{got}" if where else f"  {msg}")
        raise ConfigError("\n".join(lines)) from None


def _merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


_CHECK = re.compile(r"Check failed: \(?(\w+)\)? *([<>=!]+) *\(?([^)\s]+)\)?")


def lightgbm_error(spec: ModelSpec, exc: BaseException) -> ConfigError:
    """A LightGBM failure as a spec error naming the file and ``estimator.params``."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    m = _CHECK.search(text)
    if m:
        name, op, limit = m.groups()
        got = spec.estimator.params.get(name, "?")
        return ConfigError(
            f"invalid model spec {spec.source}: estimator.params.{name}: must be {op} {limit} "
            f"(got {got})"
        )
    return ConfigError(
        f"invalid model spec {spec.source}: LightGBM rejected estimator.params: {text}"
    )


@contextlib.contextmanager
def _quiet_native_stderr() -> Any:
    """Silence file descriptor 2 (C libraries' stderr) inside the block."""
    import os
    import sys

    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):  # captured stderr (tests)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def check_lightgbm_params(spec: ModelSpec) -> None:
    """Let LightGBM check the values of ``estimator.params`` (ranges, choices) on a tiny
    data set, so a bad value fails when the spec is read, not after building the data."""
    import lightgbm as lgb
    import numpy as np

    params = {**spec.estimator.params, "verbosity": -1, "num_threads": 1}
    x = np.arange(40, dtype=float).reshape(20, 2)
    y = np.arange(20) % 2
    try:  # LightGBM writes its own "[Fatal]" line to stderr (C level): the ConfigError says it
        with _quiet_native_stderr():
            lgb.train(
                {"objective": "binary", **params},
                lgb.Dataset(x, label=y, params={"verbosity": -1}),
                num_boost_round=1,
            )
    except lgb.basic.LightGBMError as exc:
        raise lightgbm_error(spec, exc) from None


def default_spec_path(models_dir: Path, kind: str) -> Path:
    """``models/<kind>.yaml`` with dashes accepted (``lead-readiness``)."""
    return models_dir / f"{kind.replace('-', '_')}.yaml"
