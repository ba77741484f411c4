"""The retraining workflow as a small Python API (the CLI and notebooks call these).

::

    from leadml.config import load_settings
    from leadml.modeling import workflow

    settings = load_settings()
    spec = workflow.load_model_spec(settings, "lead-readiness")
    data = workflow.open_data(settings)                       # checked tables + catalog
    frame, summary = workflow.build_dataset(data, spec)       # point-in-time training set
    result = workflow.train_spec(frame, spec, data=data)      # backtest + final fit
    logged = workflow.log_and_register(result, settings, data=data)   # MLflow, alias challenger

Time semantics are those of :mod:`leadml.modeling.train`: each row is a snapshot
as of its ``as_of``; the backtest trains on the past and tests on the future.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from leadml.config import Settings, default_models_dir
from leadml.errors import ConfigError, LeadmlError
from leadml.features.catalog import NEGATIVE
from leadml.modeling.spec import ModelSpec, default_spec_path, load_spec

Progress = Callable[[str], None]

TRUTH_FILES = {"lead_readiness": "lead_truth.parquet", "deal_close": "deal_truth.parquet"}
ENTITY = {"lead_readiness": "lead", "deal_close": "opportunity"}


def _quiet(_: str) -> None:
    return None


def load_model_spec(settings: Settings, kind: str, path: Path | None = None) -> ModelSpec:
    """The spec for ``kind`` (``lead-readiness`` / ``deal-close``) or the given file."""
    kind_id = kind.replace("-", "_")
    if kind_id not in TRUTH_FILES:
        raise ConfigError(f"unknown model {kind!r}; choose lead-readiness or deal-close")
    spec = load_spec(path or default_spec_path(default_models_dir(settings.config_dir), kind_id))
    if spec.kind != kind_id:
        raise ConfigError(f"{path}: kind is {spec.kind}, but {kind} was asked for")
    return spec


@dataclass
class Data:
    """An opened, contract-checked data folder and the feature catalog."""

    con: Any
    catalog: Any
    path: Path

    def close(self) -> None:
        self.con.close()


def open_data(settings: Settings, path: Path | None = None, *, dataset: Path | None = None) -> Data:
    """Check the tables in ``path`` (default: the settings' data folder) and load the catalog.
    ``dataset``: the saved training set the tables go with (a missing folder's message
    then says why the tables are still needed)."""
    from leadml.contracts import connect
    from leadml.features.catalog import load_catalog

    folder = (path or settings.data_dir).expanduser().resolve()
    if not folder.exists() and dataset is not None:
        raise LeadmlError(
            f"data folder {folder} does not exist: training on --dataset {dataset} still reads "
            "the tables it was built from: their reps table gives the IS capacity behind "
            "precision/recall at capacity and the simulator's truth/ folder the oracle "
            "metrics; pass --data with that folder"
        )
    if not folder.exists():
        raise LeadmlError(
            f"data folder {folder} does not exist; run `leadml "
            "simulate` or pass --data with your tables"
        )
    catalog = load_catalog(settings.config_file("features.yaml"), settings.vocabulary)
    con, _ = connect(
        folder,
        settings.vocabulary,
        bad_rows=settings.data.bad_rows,
        quarantine_dir=settings.quarantine_dir,
    )
    return Data(con, catalog, folder)


def check_features(spec: ModelSpec, catalog: Any) -> None:
    """Every spec feature must be a catalog feature of the model's entity."""
    import difflib

    known = set(catalog.names(ENTITY[spec.kind]))
    unknown = [f for f in spec.features if f not in known]
    if unknown:
        hints = []
        for f in unknown:
            close = difflib.get_close_matches(f, sorted(known), n=1)
            hints.append(f"{f} (did you mean {close[0]}?)" if close else f)
        raise ConfigError(
            f"{spec.source}: feature(s) {', '.join(hints)} "
            f"are not in the {ENTITY[spec.kind]} "
            "section of configs/features.yaml; add them there or remove them from the spec"
        )


def _check_tables(data: Data, tables: tuple[str, ...], model: str) -> None:
    """The tables a model is built from must exist and hold rows (optional ones may be
    absent from the data folder, which then looks like an empty training set)."""
    for table in tables:
        try:
            n = data.con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        except Exception:  # not even an empty view: absent
            n = 0
        if not n:
            raise LeadmlError(
                f"{model} needs the {table} table; {data.path} has no rows of it (looked for "
                f"{table}.parquet / {table}.csv there); add it, or train lead-readiness only"
            )


def _check_window(data: Data, start: str | None, end: str | None) -> None:
    """``--start`` / ``--end`` are ISO dates inside the data (say which flag is off)."""
    from leadml.features.labels import data_end, to_timestamp

    s = to_timestamp(start, "--start") if start is not None else None
    e = to_timestamp(end, "--end") if end is not None else None
    if s is not None and e is not None and e < s:
        raise LeadmlError(f"--end {e.date()} is before --start {s.date()}; swap them")
    if s is not None and e is None:
        last = data_end(data.con)
        if last is not None and s > last:
            raise LeadmlError(
                f"--start {s.date()} is after the end of the data ({last.date()}); choose an "
                "earlier --start"
            )


def build_dataset(
    data: Data,
    spec: ModelSpec,
    *,
    start: str | None = None,
    end: str | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> tuple[pd.DataFrame, Any]:
    """The spec's point-in-time training set (see :mod:`leadml.features.datasets`)."""
    from leadml.features.datasets import deal_close_dataset, lead_readiness_dataset

    check_features(spec, data.catalog)
    if spec.kind == "deal_close":
        _check_tables(data, ("opportunities", "opportunity_history"), "deal-close")
    _check_window(data, start, end)
    if spec.kind == "lead_readiness":
        return lead_readiness_dataset(
            data.con,
            data.catalog,
            start=start,
            end=end,
            every_days=spec.every_days,
            horizon_days=spec.target.horizon_days,
            progress=progress,
        )
    return deal_close_dataset(
        data.con, data.catalog, start=start, end=end, every_days=spec.every_days, progress=progress
    )


# Parquet schema metadata `leadml dataset` writes: what the set is and its label window
DATASET_KIND = "leadml.kind"
DATASET_HORIZON = "leadml.horizon_days"


def _check_made_for(path: Path, meta: dict[bytes, bytes] | None, spec: ModelSpec) -> None:
    """A set built for another model kind or label window must not train this spec."""
    from leadml.errors import DataError

    made = {k.decode(): v.decode() for k, v in (meta or {}).items() if k.startswith(b"leadml.")}
    kind = made.get(DATASET_KIND)
    if kind is not None and kind != spec.kind:
        raise DataError(
            f"training set {path} is a {kind.replace('_', '-')} set; {spec.source} is a "
            f"{spec.kind.replace('_', '-')} spec: train it with the matching command"
        )
    horizon = made.get(DATASET_HORIZON)
    if horizon is not None and int(horizon) != spec.target.horizon_days:
        raise DataError(
            f"training set {path} has {horizon}-day labels (`leadml dataset --horizon "
            f"{horizon}`), but {spec.source} says target.horizon_days "
            f"{spec.target.horizon_days}; rebuild the set with --horizon "
            f"{spec.target.horizon_days} or train with a spec of {horizon} days"
        )


def check_training_set_path(path: Path, spec: ModelSpec) -> None:
    """``path`` is an existing ``.parquet`` file (checked before any other work)."""
    from leadml.errors import DataError

    make = f"`leadml dataset {spec.kind.replace('_', '-')} --out FILE.parquet`"
    if not path.exists():
        raise DataError(f"training set {path} does not exist; write one with {make}")
    if not path.is_file() or path.suffix.lower() != ".parquet":
        raise DataError(f"training set {path}: not a Parquet file; write one with {make}")


def load_training_set(path: Path, spec: ModelSpec) -> pd.DataFrame:
    """A training set saved by ``leadml dataset`` (Parquet), lean: only the columns the
    spec reads, numbers as float32 (LightGBM bins them; half the memory: the one-year
    weekly set of a million leads is ~29M rows) and text as categories."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from leadml.errors import DataError

    check_training_set_path(path, spec)
    labels = ["label"] if spec.kind == "lead_readiness" else ["outcome", "outcome_days"]
    want = [spec.id_column, "as_of", *labels, *spec.features]
    schema = pq.read_schema(path)
    _check_made_for(path, schema.metadata, spec)
    missing = [c for c in dict.fromkeys(want) if c not in schema.names]
    if (
        spec.segment_column and spec.segment_column in schema.names
    ):  # metrics per segment, when the set has it
        want.append(spec.segment_column)
    if missing:
        raise DataError(
            f"training set {path} lacks column(s) {', '.join(missing)}; it must be a "
            f"`leadml dataset {spec.kind.replace('_', '-')}` output for this spec's features"
        )
    cols = list(dict.fromkeys(want))
    text = [
        c
        for c in cols
        if pa.types.is_string(schema.field(c).type)
        or pa.types.is_large_string(schema.field(c).type)
    ]
    floats = {  # numeric features (counts are exact in float32 up to 16.7M)
        c
        for c in spec.features
        if pa.types.is_floating(schema.field(c).type) or pa.types.is_integer(schema.field(c).type)
    }
    categories = {c for c in text if c not in (spec.id_column, "outcome")}
    lean = pa.schema(
        [
            pa.field(
                c,
                pa.float32()
                if c in floats
                else pa.dictionary(pa.int32(), schema.field(c).type)
                if c in categories
                else schema.field(c).type,
            )
            for c in cols
        ]
    )
    # row group by row group, so that the float64 columns are never all in memory
    parts = [
        pa.Table.from_batches([batch]).cast(lean)
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1 << 20, columns=cols)
    ]
    table = pa.concat_tables(parts, promote_options="permissive").unify_dictionaries()
    del parts
    return table.to_pandas(split_blocks=True, self_destruct=True)


def load_truth(data_dir: Path, spec: ModelSpec) -> pd.DataFrame | None:
    """The simulator's oracle probabilities for this model, when the data has them."""
    path = Path(data_dir) / "truth" / TRUTH_FILES[spec.kind]
    return pd.read_parquet(path) if path.exists() else None


def capacity(data: Data | None, spec: ModelSpec) -> int:
    """Leads IS can take per week, from the reps table (IS reps x weekly slots / slots per lead)."""
    from leadml.modeling.policy import lead_capacity

    reps = None
    if data is not None:
        try:
            reps = data.con.execute("SELECT * FROM reps").df()
        except Exception:  # no reps table in this data
            reps = None
    return max(1, lead_capacity(reps, spec.policy))


def train_spec(
    frame: pd.DataFrame,
    spec: ModelSpec,
    *,
    data: Data | None = None,
    truth: pd.DataFrame | None = None,
    progress: Progress = _quiet,
    final_fit: bool = True,
) -> Any:
    """Backtest and fit ``spec`` on ``frame``; oracle metrics when truth is given or in the data."""
    from leadml.modeling.train import train

    if truth is None and data is not None:
        truth = load_truth(data.path, spec)
    return train(
        frame,
        spec,
        capacity=capacity(data, spec) if spec.kind == "lead_readiness" else None,
        truth=truth,
        progress=progress,
        final_fit=final_fit,
    )


def reason_templates(
    data: Data | None, spec: ModelSpec
) -> tuple[dict[str, str], dict[str, Any] | None]:
    """(label templates, catalog entries as data) for the spec's features."""
    if data is None:
        return {}, None
    entity = ENTITY[spec.kind]
    labels = data.catalog.labels(entity)
    used = [
        f.model_dump(mode="json") for f in data.catalog.features(entity) if f.name in spec.features
    ]
    return {k: v for k, v in labels.items() if k.removesuffix(NEGATIVE) in spec.features}, {
        "version": data.catalog.version,
        entity: used,
    }


def log_and_register(
    result: Any,
    settings: Settings,
    *,
    data: Data | None = None,
    register: bool = True,
    run_name: str | None = None,
    extra_tags: dict[str, str] | None = None,
) -> Any:
    """Log the run to MLflow and register the bundle (alias ``challenger``). ``extra_tags``
    go on the run (e.g. :meth:`TuneResult.tags`, linking it to its tuning run)."""
    from leadml import tracking

    tracking.configure(settings)
    templates, catalog = reason_templates(data, result.spec)
    return tracking.log_training(
        result,
        settings,
        templates=templates,
        catalog=catalog,
        register=register,
        run_name=run_name,
        extra_tags=extra_tags,
    )


def compare(name: str, metrics: tuple[str, ...] | list[str] = ()) -> pd.DataFrame:
    """The registered versions of ``name`` (``lead_readiness`` or ``lead-readiness``, or a
    ``train --table`` model's name) side by side, one row a version: what `leadml models`
    lists (aliases, creation time, horizon, forced / rolled back, ROC AUC, latest-window
    ROC AUC, ECE, mean ratio error, Brier, ROC AUC / oracle, run id) plus each of
    ``metrics`` from the version's MLflow run (e.g. ``("pr_auc", "baseline_roc_auc")``).
    Reads the workspace's tracking store unless MLflow was pointed elsewhere."""
    from leadml import tracking

    return tracking.compare_versions(name.replace("-", "_"), metrics)


# ------------------------------------------------------------------ tuning


# name: (low, high, log scale, integer, LightGBM's default)
SEARCH_SPACE: dict[str, tuple[float, float, bool, bool, float]] = {
    "learning_rate": (0.02, 0.2, True, False, 0.1),
    "num_leaves": (7, 63, True, True, 31),
    "min_data_in_leaf": (20, 500, True, True, 20),
    "feature_fraction": (0.5, 1.0, False, False, 1.0),
    "lambda_l2": (1e-2, 20.0, True, False, 0.0),
}


TUNING_RUN_TAG = "leadml.tuning_run_id"


@dataclass
class TuneResult:
    """What :func:`tune` found. ``spec`` is the one to fit: the input spec itself when its
    own parameters (trial 0) won, else the best tuned trial's; ``trials`` the trial table."""

    spec: ModelSpec
    trials: list[dict[str, Any]]
    winner: str  # "spec" (the spec's own parameters) or "tuned"
    best_trial: int  # the best tuned trial (1..N); 0 when there was none
    spec_log_loss: float
    tuned_log_loss: float  # the best tuned trial's
    run_id: str = ""  # the ``<name>-tuning`` MLflow run holding the trials

    def tags(self) -> dict[str, str]:
        """Tags for the final run, linking it to its tuning run (``leadml.tuning_run_id``).
        ``leadml.tuned_on_reported_folds`` is ``true`` when tuned parameters won: they
        were chosen on the backtest folds whose metrics the run then logs and the gate
        reads, so those metrics are slightly optimistic."""
        from leadml.tracking import TUNED_TAG

        return {
            TUNING_RUN_TAG: self.run_id,
            "leadml.tuning_winner": self.winner,
            TUNED_TAG: "true" if self.winner == "tuned" else "false",
        }

    def caveat(self) -> str | None:
        """What a user should know about the metrics of the run fitted with this result."""
        if self.winner != "tuned":
            return None
        return (
            "tuned (--tune) on the same backtest folds whose metrics this run reports and the "
            "promotion gate reads: they are slightly optimistic"
        )

    def summary(self) -> str:
        if self.winner == "spec":
            return (
                f"tuning: the spec's own parameters won (log loss {self.spec_log_loss:.5f}; "
                f"best tuned trial {self.tuned_log_loss:.5f}), so the final fit uses them"
            )
        return (
            f"tuning: trial {self.best_trial} won (log loss {self.tuned_log_loss:.5f}; the "
            f"spec's own {self.spec_log_loss:.5f}), so the final fit uses its parameters"
        )


def _spec_start(params: dict[str, Any]) -> dict[str, Any]:
    """The spec's value of each tuned parameter (by name or LightGBM alias, else LightGBM's
    default), clipped to the search space: trial 0's suggestions."""
    from lightgbm.basic import _ConfigAliases

    start: dict[str, Any] = {}
    for name, (low, high, _, integer, default) in SEARCH_SPACE.items():
        given = [params[a] for a in _ConfigAliases.get(name) if a in params]
        value = min(max(float(given[0] if given else default), low), high)
        start[name] = int(round(value)) if integer else value
    return start


def tune(
    frame: pd.DataFrame,
    spec: ModelSpec,
    settings: Settings,
    trials: int,
    *,
    data: Data | None = None,
    progress: Progress = _quiet,
    seed: int = 7,
) -> TuneResult:
    """Optuna search of LightGBM parameters on the backtest (mean log loss of the test windows).

    Trial 0 trains the spec's own parameters, so the winner is never worse than the untuned
    spec on this objective. Each trial is a nested MLflow run under a parent
    ``<name>-tuning`` run, logged with a normal run's parameter names (``lgb_<name>``, ...).
    """
    import mlflow
    import optuna
    from lightgbm.basic import _ConfigAliases

    from leadml import tracking

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tracking.configure(settings)
    exp = tracking.experiment_id(settings)
    truth = load_truth(data.path, spec) if data is not None else None
    rows: list[dict[str, Any]] = []
    tuned_names = set().union(*(_ConfigAliases.get(n) for n in SEARCH_SPACE))
    others = {k: v for k, v in spec.estimator.params.items() if k not in tuned_names}

    def objective(trial: optuna.Trial) -> float:
        suggested = {
            name: trial.suggest_int(name, int(low), int(high), log=log)
            if integer
            else trial.suggest_float(name, low, high, log=log)
            for name, (low, high, log, integer, _) in SEARCH_SPACE.items()
        }
        # trial 0 (enqueued) is the spec exactly, unclipped and with its own aliases
        params = dict(spec.estimator.params) if trial.number == 0 else {**others, **suggested}
        candidate = spec.model_copy(
            update={"estimator": spec.estimator.model_copy(update={"params": params})}
        )
        with mlflow.start_run(experiment_id=exp, run_name=f"trial-{trial.number}", nested=True):
            result = train_spec(frame, candidate, data=data, truth=truth, final_fit=False)
            mlflow.log_params(tracking.run_params(result))
            m = {
                tracking.metric_name(k): v
                for k, v in result.metrics.items()
                if "." not in k
                and not k.startswith("fold")
                and isinstance(v, float)
                and not math.isnan(v)
            }
            mlflow.log_metrics(m)
        loss = result.metrics["log_loss"]
        rows.append(
            {
                "trial": trial.number,
                "source": "spec" if trial.number == 0 else "tuned",
                **params,
                "log_loss": loss,
                "roc_auc": result.metrics["roc_auc"],
                "ece": result.metrics["ece"],
            }
        )
        label = "the spec's own parameters" if trial.number == 0 else "tuned"
        shown = ", ".join(f"{k}={v:.4g}" for k, v in params.items() if k in tuned_names)
        progress(
            f"trial {trial.number}/{trials} ({label}): {shown}: "
            f"log loss {loss:.5f}, ROC AUC {result.metrics['roc_auc']:.4f}"
        )
        return loss

    with mlflow.start_run(experiment_id=exp, run_name=f"{spec.name}-tuning") as parent:
        study = optuna.create_study(
            direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed)
        )
        study.enqueue_trial(_spec_start(spec.estimator.params))
        study.optimize(objective, n_trials=trials + 1)
        spec_loss = rows[0]["log_loss"]
        tuned = min(rows[1:], key=lambda r: r["log_loss"], default=None)
        # a tie keeps the spec
        winner = tuned if tuned is not None and tuned["log_loss"] < spec_loss else None
        won = winner is not None
        if winner is not None:
            mlflow.log_params({f"best_{k}": winner[k] for k in SEARCH_SPACE})
        mlflow.log_param("tuning_winner", "tuned" if won else "spec")
        mlflow.log_metric("spec_log_loss", spec_loss)
        mlflow.log_metric("best_log_loss", winner["log_loss"] if winner is not None else spec_loss)
    chosen = spec
    if winner is not None:
        best = {k: v for k, v in winner.items() if k in SEARCH_SPACE}
        chosen = spec.model_copy(
            update={"estimator": spec.estimator.model_copy(update={"params": {**others, **best}})}
        )
    return TuneResult(
        spec=chosen,
        trials=rows,
        winner="tuned" if won else "spec",
        best_trial=tuned["trial"] if tuned else 0,
        spec_log_loss=spec_loss,
        tuned_log_loss=tuned["log_loss"] if tuned else math.nan,
        run_id=parent.info.run_id,
    )
