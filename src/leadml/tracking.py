"""MLflow: where runs go, what a training run logs, and the registry workflow.

* Tracking URI: ``settings.tracking.uri``, else ``MLFLOW_TRACKING_URI``, else
  ``sqlite:///<workspace>/mlflow/mlflow.db`` with artifacts in
  ``<workspace>/mlflow/artifacts``. An ``http://`` server URI works unchanged.
* A training run logs params, data window, feature-list hash, metrics (overall,
  per fold as steps, per segment, baseline and oracle), plots, the model card
  and the scoring bundle, registered under the spec's name with alias
  ``challenger``.
* :func:`promote` moves ``champion`` only when the gate stored on the version
  holds; :func:`rollback` restores the previous champion. The champion history
  is a JSON list in the registered model's tag ``leadml.champion_history``.
* A version is registered only after the run's artifacts are logged, with its
  leadml tags in the same call; a failure or Ctrl-C while registering deletes the
  version again, so no untagged half-registered version is left behind.
* Errors of the tracking store (unreachable server, unsupported URI) become a
  :class:`TrackingError` naming the URI and the settings that choose it; a bare path
  (``/srv/mlflow.db``) is refused with the ``sqlite:///`` URI to write instead, before
  MLflow would read it as a folder store (which MLflow 3 refuses anyway).
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from leadml.config import Settings
from leadml.errors import LeadmlError

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_TAG = "leadml.champion_history"
MODEL_NAMES = ("lead_readiness", "deal_close")


class RegistryError(LeadmlError):
    """A registry operation cannot be done (unknown model/version, gate failed, ...)."""


class GateFailed(RegistryError):
    """The promotion gate does not hold; ``checks`` holds every criterion (ok or not)."""

    def __init__(self, message: str, checks: list[GateCheck]) -> None:
        super().__init__(message)
        self.checks = checks


class TrackingError(LeadmlError):
    """The MLflow tracking store cannot be used (unreachable, unsupported URI, ...)."""


URI_SETTINGS = "tracking.uri in configs/leadml.yaml, LEADML_TRACKING__URI or MLFLOW_TRACKING_URI"

# The champion is scored on the challenger's latest-window rows it could not have been
# trained on (as_of at or after its label cutoff) only when they hold at least this many
# positives and negatives: fewer make a ROC AUC too noisy to gate on (+-0.05 and worse).
# Otherwise the gate compares the challenger's latest window with the champion's own
# out-of-sample backtest on its latest window.
FAIR_MIN_POSITIVES = 50
FAIR_MIN_NEGATIVES = 50

_F = TypeVar("_F", bound=Callable[..., Any])


# ------------------------------------------------------------------ setup


def tracking_uri(settings: Settings) -> str:
    """The tracking URI this workspace uses (see the module docstring)."""
    if settings.tracking.uri:
        return settings.tracking.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{settings.mlflow_dir / 'mlflow.db'}"


def ui_hint(settings: Settings) -> str:
    """How to open the MLflow UI on this workspace's store (a server is its own UI)."""
    uri = tracking_uri(settings)
    if uri.startswith(("http://", "https://")):
        return uri
    return f"mlflow ui --backend-store-uri {uri}"


def store_error(exc: BaseException, uri: str) -> TrackingError:
    """A clear error for a failure of the tracking store at ``uri``."""
    text = str(exc)
    kind = type(exc).__name__
    bare = uri_problem(uri)  # a folder is no problem when MLFLOW_ALLOW_FILE_STORE allows it
    if bare is not None and ("MLFLOW_ALLOW_FILE_STORE" in text or "filesystem" in text):
        return TrackingError(bare)
    if "MLFLOW_ALLOW_FILE_STORE" in text:  # a file: URI or ./mlruns chosen some other way
        return TrackingError(
            f"MLflow tracking URI {uri!r} is a folder (MLflow's file store), which MLflow 3 "
            f"refuses (set by {URI_SETTINGS}); use sqlite:///ABSOLUTE/PATH/mlflow.db "
            "(`mlflow migrate-filestore` moves an existing folder store into one), or set "
            "MLFLOW_ALLOW_FILE_STORE=true to keep using the folder"
        )
    if "Unsupported" in kind or "Could not find a registered" in text or "not a valid" in text:
        return TrackingError(
            f"MLflow tracking URI {uri!r} is not supported (set by {URI_SETTINGS}); use "
            "sqlite:///ABSOLUTE/PATH/mlflow.db or http://host:5000"
        )
    unreachable = (
        "API request to" in text
        or "Max retries exceeded" in text
        or "Connection refused" in text
        or isinstance(exc, ConnectionError | OSError)
        or "ConnectionError" in kind
    )
    if unreachable:
        return TrackingError(
            f"MLflow tracking server {uri} is not reachable (set by {URI_SETTINGS}); "
            "start it or fix the URI"
        )
    first = text.strip().splitlines()[0] if text.strip() else kind
    return TrackingError(
        f"MLflow tracking store {uri}: {clip(first)} (the URI is set by {URI_SETTINGS})"
    )


def clip(text: str, limit: int = 300) -> str:
    """``text`` shortened to about ``limit`` characters at a sentence end, else between
    words: never inside a word or a URL (MLflow's messages end in links)."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    sentence = head.rfind(". ")
    if sentence >= limit // 2:
        return head[: sentence + 1] + " [...]"
    space = head.rfind(" ")
    return (head[:space] if space > 0 else text.split(" ", 1)[0]) + " [...]"


SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def uri_problem(uri: str, *, allow_folder: bool | None = None) -> str | None:
    """What is wrong with a tracking URI that is a local path (no scheme, or ``file:``),
    else None. MLflow reads such a URI as a folder store (``./mlruns``), which MLflow 3
    refuses unless ``MLFLOW_ALLOW_FILE_STORE=true``: a SQLite file given as a bare path
    (``/tmp/x.db``) needs ``sqlite:///`` and the absolute path. ``allow_folder``: accept a
    folder store (default: as ``MLFLOW_ALLOW_FILE_STORE`` says)."""
    from urllib.parse import unquote, urlparse

    if uri.split(":")[0] in ("databricks", "databricks-uc", "uc"):  # MLflow's own names
        return None
    parsed = urlparse(uri)
    windows_drive = len(parsed.scheme) == 1  # a Windows path: C:/...
    if parsed.scheme not in ("", "file") and not windows_drive:
        return None
    raw = unquote(parsed.path) if parsed.scheme == "file" else uri
    path = Path(raw).expanduser().absolute()
    if path.suffix.lower() in SQLITE_SUFFIXES or path.is_file():
        return (
            f"MLflow tracking URI {uri!r} is a file's path, not a database URI (set by "
            f"{URI_SETTINGS}); a SQLite store is written sqlite:/// followed by the absolute "
            f"path: sqlite:///{path.as_posix()}"
        )
    if allow_folder is None:
        allow_folder = os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() in ("true", "1")
    if allow_folder:
        return None
    db = (path / "mlflow.db").as_posix()
    return (
        f"MLflow tracking URI {uri!r} is a folder (MLflow's file store), which MLflow 3 refuses "
        f"(set by {URI_SETTINGS}); use a SQLite file: sqlite:///{db} (`mlflow "
        "migrate-filestore` moves an existing folder store into one), or set "
        "MLFLOW_ALLOW_FILE_STORE=true to keep using the folder"
    )


def _is_store_error(exc: BaseException) -> bool:
    if isinstance(exc, LeadmlError):
        return False
    mod = type(exc).__module__ or ""
    return mod.startswith(("mlflow", "requests", "urllib3", "sqlalchemy")) or isinstance(
        exc, ConnectionError
    )


@contextmanager
def store_errors(uri: str | None = None) -> Iterator[None]:
    """Turn MLflow / connection errors raised inside into a :class:`TrackingError`."""
    try:
        yield
    except Exception as exc:
        if not _is_store_error(exc):
            raise
        import mlflow

        raise store_error(exc, uri or mlflow.get_tracking_uri()) from None


def _store_call(fn: _F) -> _F:
    """Decorator: the tracking store's errors leave ``fn`` as :class:`TrackingError`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with store_errors():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def is_missing(exc: BaseException) -> bool:
    """An MLflow "not found" answer (a normal answer, not a store failure)."""
    return getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def _probe_server(uri: str) -> None:
    """An ``http(s)`` server is probed once with a short timeout (MLflow's own client
    retries for minutes before it gives up)."""
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            requests.get(uri.rstrip("/") + "/health", timeout=5)
        except requests.RequestException as exc:
            raise store_error(ConnectionError(str(exc)), uri) from None


def readable_store(settings: Settings) -> str:
    """The tracking URI of a store that exists, for code that only reads the registry
    (``leadml serve`` / ``build``): a SQLite file must exist (MLflow would create an empty
    one anywhere the URI points), a workspace's moved store is re-pointed at its own
    artifacts, a server must answer within seconds."""
    uri = tracking_uri(settings)
    problem = uri_problem(uri)
    if problem is not None:
        raise TrackingError(problem)
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.is_file():
            raise TrackingError(
                f"no MLflow store at {db} (tracking URI set by {URI_SETTINGS}); train and "
                "promote the models in this workspace first, or point LEADML_WORKSPACE or "
                "MLFLOW_TRACKING_URI at the one that has them"
            )
        relocate_artifacts(db, settings.mlflow_dir)
    _probe_server(uri)
    return uri


def check_store(uri: str) -> None:
    """Fail fast, with a clear message, when the tracking store at ``uri`` cannot be used:
    a server is probed with a short timeout, then one cheap query runs through MLflow."""
    _probe_server(uri)
    with store_errors(uri):
        client().search_registered_models(max_results=1)


def configure(settings: Settings, *, check: bool = True) -> str:
    """Point MLflow at this workspace's tracking store and check it answers; returns the URI.

    Raises :class:`TrackingError` when the store is unreachable or the URI unsupported."""
    import mlflow

    uri = tracking_uri(settings)
    problem = uri_problem(uri)
    if problem is not None:  # before MLflow creates a folder store at a file's path
        raise TrackingError(problem)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        relocate_artifacts(Path(uri.removeprefix("sqlite:///")), settings.mlflow_dir)
    with store_errors(uri):
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
    if check:
        check_store(uri)
    return uri


# Columns of MLflow's SQL store that hold artifact locations (file:// URIs for a local store).
_LOCATION_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("model_versions", "storage_location"),
    ("logged_models", "artifact_location"),
)


def relocate_artifacts(db: Path, mlflow_dir: Path) -> str | None:
    """Re-point a workspace's SQLite store at the workspace's own artifacts.

    MLflow stores absolute artifact URIs, so a workspace that was copied or moved kept
    reading (and writing new runs into) the old folder's ``mlflow/artifacts``, and failed
    with "No such artifact" once that folder was gone. When the store at ``db`` (inside
    ``mlflow_dir``) names another workspace's ``.../mlflow/artifacts`` and this workspace
    has its own, every stored location is rewritten to it. Returns the old location (None
    when nothing changed); stores outside the workspace are never touched."""
    import sqlite3

    here = (mlflow_dir / "artifacts").resolve()
    if db.resolve().parent != mlflow_dir.resolve() or not db.is_file() or not here.is_dir():
        return None
    new = here.as_uri()
    with closing(sqlite3.connect(db)) as con:
        try:
            rows = con.execute("SELECT artifact_location FROM experiments").fetchall()
        except sqlite3.Error:
            return None  # not (yet) an MLflow store
        old = next(
            (
                str(loc)
                for (loc,) in rows
                if loc
                and str(loc).startswith("file://")
                and str(loc).rstrip("/").endswith("/mlflow/artifacts")
                and str(loc).rstrip("/") != new
            ),
            None,
        )
        if old is None:
            return None
        old = old.rstrip("/")
        with con:
            for table, column in _LOCATION_COLUMNS:
                with suppress(sqlite3.OperationalError):  # table of another version
                    con.execute(
                        f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                        f"WHERE {column} = ? OR {column} LIKE ? ESCAPE '\\'",
                        (new, len(old) + 1, old, _like_prefix(old) + "/%"),
                    )
    print(
        f"leadml: this workspace's MLflow store pointed at {old} (a copied or moved "
        f"workspace); it now reads and writes {new}",
        file=sys.stderr,
    )
    return old


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@_store_call
def experiment_id(settings: Settings, name: str | None = None) -> str:
    """The experiment's id, created on first use (local stores keep artifacts in the workspace)."""
    import mlflow

    name = name or settings.tracking.experiment
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    location = None
    if tracking_uri(settings).startswith("sqlite:"):
        location = (settings.mlflow_dir / "artifacts").resolve().as_uri()
    return str(mlflow.create_experiment(name, artifact_location=location))


def ensure_configured() -> None:
    """Point MLflow at the workspace's store unless this process already chose one
    (:func:`configure`, or ``mlflow.set_tracking_uri``): a notebook that lists, loads or
    promotes models before training anything would otherwise read an empty
    ``./mlflow.db`` of its current folder."""
    from mlflow.tracking._tracking_service import utils

    if utils._tracking_uri is None:
        from leadml.config import load_settings

        configure(load_settings(), check=False)


def client() -> Any:
    from mlflow import MlflowClient

    ensure_configured()
    return MlflowClient()


# ------------------------------------------------------------------ logging


@dataclass
class LoggedVersion:
    """What :func:`log_training` produced."""

    run_id: str
    name: str
    version: str | None
    model_uri: str
    metrics: dict[str, float]
    champion_comparison: dict[str, Any] = field(default_factory=dict)


def metric_name(key: str) -> str:
    """The MLflow name of a metric: counts of scored test rows are ``test_rows`` /
    ``test_positives`` (``latest_test_rows``, ``oracle_test_positives``, ``<segment>.test_rows``),
    so that they cannot be confused with the run's params ``train_rows`` / ``train_positives``
    (the training set's)."""
    head, dot, name = key.rpartition(".")
    for count in ("rows", "positives"):
        if name == count or name.endswith(f"_{count}"):
            name = f"{name[: -len(count)]}test_{count}"
            break
    return f"{head}{dot}{name}".replace(" ", "_")


def _clean_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Finite metrics under their MLflow names (:func:`metric_name`)."""
    out = {}
    for k, v in metrics.items():
        if v is None or (isinstance(v, float) and (math.isnan(v) or math.isinf(v))):
            continue
        out[metric_name(k)] = float(v)
    return out


def run_params(result: Any) -> dict[str, Any]:
    """The parameters a training run logs (spec, data window, LightGBM ``lgb_*``)."""
    from leadml.modeling.evaluate import calibration_used

    spec = result.spec
    p: dict[str, Any] = {
        "kind": spec.kind,
        "horizon_days": spec.target.horizon_days,
        "n_features": len(spec.features),
        "feature_hash": result.feature_hash,
        "num_boost_round_used": result.model.rounds,
        "calibration": calibration_used(result.model, spec),  # what the model applies
        "calibration_holdout_days": spec.calibration.holdout_days,
        "backtest_origins": spec.backtest.origins,
        "backtest_gap_days": spec.backtest.gap_days,
        "backtest_test_days": spec.backtest.test_days,
        "min_positives": spec.min_positives,
        "baseline_C": spec.baseline.C,
        "data_start": result.data_window[0].isoformat(),
        "data_end": result.data_window[1].isoformat(),
        "label_cutoff": label_cutoff(result).isoformat(),
        # the training set's; the metrics test_rows / test_positives are the backtest's
        "train_rows": result.rows,
        "train_positives": result.positives,
    }
    for k, v in spec.estimator.params.items():
        p[f"lgb_{k}"] = v
    est = spec.estimator
    for k in ("num_boost_round", "early_stopping_rounds", "seed", "num_threads", "max_bin"):
        p[k] = getattr(est, k)
    p["negative_rate"] = est.negative_rate
    p["baseline_max_rows"] = spec.baseline.max_rows
    for k, v in spec.gate.model_dump().items():
        p[f"gate_{k}"] = v
    if spec.kind == "deal_close":
        p["week_days"] = spec.target.week_days
        p["max_weeks"] = spec.target.max_weeks
    return p


def label_cutoff(result: Any) -> pd.Timestamp:
    """The time up to which the labels a training run used were known: its final fit saw
    every outcome before this, so only snapshots with ``as_of`` at or after it are out of
    sample for it. Readiness: the last as-of plus the horizon; deal close: the time up to
    which the training set observed deal outcomes."""
    from leadml.modeling.train import observed_until

    spec = result.spec
    frame = result.train_frame
    if spec.kind == "deal_close" and {"as_of", "outcome_days"} <= set(frame.columns):
        return pd.Timestamp(observed_until(frame))
    return result.data_window[1] + pd.Timedelta(days=spec.target.horizon_days)


def _champion(name: str) -> Any | None:
    """The champion's model version, or ``None`` when there is no such registered model or
    no champion. Store failures propagate (an unreachable registry is not "no champion")."""
    cl = client()
    try:
        rm = cl.get_registered_model(name)
    except Exception as exc:
        if is_missing(exc):
            return None
        raise
    version = (rm.aliases or {}).get(CHAMPION)
    return None if version is None else cl.get_model_version(name, str(version))


def _version_kind(mv: Any) -> str | None:
    """``leadml.kind`` of a version (its tag; older versions: their run's tag)."""
    kind = mv.tags.get("leadml.kind")
    if kind or not mv.run_id:
        return kind or None
    try:
        return client().get_run(mv.run_id).data.tags.get("leadml.kind") or None
    except Exception as exc:
        if is_missing(exc):
            return None
        raise


def _version_horizon(mv: Any) -> int | None:
    """The horizon (days) a version predicts: its run's ``horizon_days`` param."""
    if not mv.run_id:
        return None
    try:
        value = client().get_run(mv.run_id).data.params.get("horizon_days")
    except Exception as exc:
        if is_missing(exc):
            return None
        raise
    return int(value) if value not in (None, "") else None


def _champion_cutoff(mv: Any, horizon_days: int) -> pd.Timestamp | None:
    """The champion's label cutoff: its tag, else (versions registered before the tag
    existed) its run's last training as-of plus the horizon (a safe upper bound)."""
    tag = mv.tags.get("leadml.label_cutoff")
    if tag:
        return pd.Timestamp(tag)
    if not mv.run_id:
        return None
    params = client().get_run(mv.run_id).data.params
    if not params.get("data_end"):
        return None
    horizon = int(float(params.get("horizon_days") or horizon_days))
    return pd.Timestamp(params["data_end"]) + pd.Timedelta(days=horizon)


def _champion_window(mv: Any) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """The champion's latest backtest test window ``[start, end)``: its tags (the end tag
    since the same-window comparison; before it, the start plus its run's
    ``backtest_test_days``). None when unknown."""
    start = mv.tags.get("leadml.latest_window_start")
    if not start:
        return None
    end = mv.tags.get("leadml.latest_window_end")
    if end:
        return pd.Timestamp(start), pd.Timestamp(end)
    if not mv.run_id:
        return None
    try:
        days = client().get_run(mv.run_id).data.params.get("backtest_test_days")
    except Exception as exc:
        if is_missing(exc):  # a registry without the run (copied models): fall back
            return None
        raise
    if not days:
        return None
    return pd.Timestamp(start), pd.Timestamp(start) + pd.Timedelta(days=int(float(days)))


def window_text(start: pd.Timestamp, end: pd.Timestamp) -> str:
    """``2025-07-15..2025-08-12`` (as-of dates ``start <= as_of < end``)."""
    return f"{start:%Y-%m-%d}..{end:%Y-%m-%d}"


def same_window_fold(
    folds: list[Any], test_days: int, window: tuple[pd.Timestamp, pd.Timestamp] | None
) -> int | None:
    """The position of the challenger's backtest fold whose test window is exactly
    ``window`` (same start and end), if any."""
    if window is None:
        return None
    start, end = window
    for i, fold in enumerate(folds):
        if fold.origin == start and fold.origin + pd.Timedelta(days=test_days) == end:
            return i
    return None


def stored_comparison(
    folds: list[Any],
    test_days: int,
    latest_auc: float,
    version: str,
    window: tuple[pd.Timestamp, pd.Timestamp] | None,
    champion_auc: float,
    why: str,
) -> dict[str, Any]:
    """The comparison with the champion's stored out-of-sample backtest (pure: the
    challenger's folds, the champion's latest window and its ROC AUC there).

    When one of the challenger's folds tested exactly the champion's latest window (a
    retrain a whole number of ``step_days`` later, or an identical retrain), that fold's
    ROC AUC is compared (``method: same_window``): same window, both out of sample. Else
    the challenger's latest window (``method: stored_backtest``), which is another window:
    the spread between windows (0.04 in ROC AUC on the simulator) exceeds the gate's
    tolerance, so that check is coarse."""
    found = same_window_fold(folds, test_days, window)
    base = {"version": version, "roc_auc": champion_auc}
    if found is not None and window is not None:
        fold = folds[found]
        place = "latest fold" if found == len(folds) - 1 else f"fold {found + 1} of {len(folds)}"
        return {
            **base,
            "method": "same_window",
            "challenger_roc_auc": float(fold.metrics.get("roc_auc", math.nan)),
            "window": window_text(*window),
            "detail": (
                f"same window {window_text(*window)}: challenger's {place} vs champion "
                f"v{version}'s latest, both out of sample, because {why}"
            ),
        }
    shown = window_text(*window) if window is not None else "unknown"
    starts = ", ".join(f"{f.origin:%Y-%m-%d}" for f in folds)
    return {
        **base,
        "method": "stored_backtest",
        "challenger_roc_auc": latest_auc,
        "window": shown,
        "detail": (
            f"challenger's latest window vs champion v{version}'s own out-of-sample "
            f"backtest on its latest window {shown} (different windows: a coarse check), "
            f"because {why}, and no challenger fold tests that window (its folds start "
            f"{starts}, {test_days} days each; a retrain a multiple of the backtest's "
            "step later shares one)"
        ),
    }


def _stored_latest_auc(mv: Any) -> float:
    """The champion's own out-of-sample ROC AUC on its latest backtest window."""
    value = _num(mv.tags.get("leadml.metric.latest_roc_auc"))
    if math.isnan(value) and mv.run_id:
        value = float(client().get_run(mv.run_id).data.metrics.get("latest_roc_auc", math.nan))
    return value


@_store_call
def champion_on_latest_window(result: Any, name: str) -> dict[str, Any]:
    """How the current champion compares with this challenger, without in-sample rows.

    The champion's final fit used every label known before its *label cutoff*
    (:func:`label_cutoff`), which usually covers the challenger's latest test window.
    In this order:

    1. ``unseen_rows``: the champion is scored on the challenger's latest-window rows
       with ``as_of`` at or after that cutoff (the challenger's ROC AUC on the same
       rows), provided they hold at least :data:`FAIR_MIN_POSITIVES` positives and
       :data:`FAIR_MIN_NEGATIVES` negatives;
    2. ``same_window``: one of the challenger's backtest folds tested exactly the
       champion's latest window (same start and end: an identical retrain, or one a
       whole number of ``step_days`` later, e.g. 4 weeks with 28-day windows): that
       fold's ROC AUC against the champion's stored one there, both out of sample;
    3. ``stored_backtest``: the challenger's latest window against the champion's stored
       latest window (different windows).

    ``detail`` says which comparison was made and why.

    Returns ``{}`` when there is no champion. ``roc_auc`` is the champion's and
    ``challenger_roc_auc`` the challenger's figure of the comparison; ``error`` is set
    when the champion cannot be compared at all (another kind of model, missing features).
    """
    from leadml.modeling.bundle import ScoringBundle
    from leadml.modeling.evaluate import binary_metrics

    champ = _champion(name)
    if champ is None:
        return {}
    spec = result.spec
    version = str(champ.version)
    kind = _version_kind(champ)
    if kind and kind != spec.kind:
        return {
            "version": version,
            "error": f"champion v{version} is a {kind} model, this one is {spec.kind}",
        }
    horizon = _version_horizon(champ)
    if horizon is not None and horizon != spec.target.horizon_days:
        return {
            "version": version,
            "error": f"champion v{version} predicts within {horizon} days and this one within "
            f"{spec.target.horizon_days} days: their ROC AUCs answer different questions; "
            "promote with --force and a reason to change the horizon",
        }
    cutoff = _champion_cutoff(champ, spec.target.horizon_days)
    preds = result.predictions
    latest = preds[(preds["fold"] == preds["fold"].max()) & preds["label"].notna()]
    unseen = latest if cutoff is None else latest[latest["as_of"] >= cutoff]
    if cutoff is None:
        unseen = latest.iloc[:0]
    positives = int(unseen["label"].sum())
    negatives = len(unseen) - positives
    cut = f"{cutoff:%Y-%m-%d}" if cutoff is not None else "unknown"
    if positives >= FAIR_MIN_POSITIVES and negatives >= FAIR_MIN_NEGATIVES:
        key = [spec.id_column, "as_of"]
        frame = result.train_frame.drop(columns=["label"], errors="ignore")
        rows = unseen[key + ["label", "p_model"]].merge(frame, on=key, how="left")
        bundle = ScoringBundle.load(f"models:/{name}@{CHAMPION}")
        missing = [f for f in bundle.features if f not in rows.columns]
        if missing:
            return {
                "version": version,
                "error": f"champion v{version} needs features not in this data: {missing}",
            }
        p = bundle.predict_proba(
            rows, spec.target.horizon_days if spec.kind == "deal_close" else None
        )
        y = rows["label"].astype(int).to_numpy()
        m = binary_metrics(y, p)
        mine = binary_metrics(y, rows["p_model"].to_numpy(dtype=float))
        return {
            "version": version,
            "method": "unseen_rows",
            "roc_auc": m["roc_auc"],
            "ece": m["ece"],
            "brier": m["brier"],
            "challenger_roc_auc": mine["roc_auc"],
            "rows": len(rows),
            "positives": positives,
            "cutoff": cut,
            "detail": (
                f"both scored on the {len(rows):,} latest-window rows ({positives:,} "
                f"positives) with as_of on or after {cut}, which champion v{version} was "
                "not trained on"
            ),
        }
    why = unseen_rows_why(version, cut, positives, negatives)
    found = stored_comparison(
        result.folds,
        spec.backtest.test_days,
        result.metrics.get("latest_roc_auc", math.nan),
        version,
        _champion_window(champ),
        _stored_latest_auc(champ),
        why,
    )
    return {**found, "cutoff": cut}


def unseen_rows_why(version: str, cut: str, positives: int, negatives: int) -> str:
    """Why the champion was not scored on the challenger's rows (short: it is shown with
    every comparison; the docs explain the rule)."""
    if cut == "unknown":
        return f"champion v{version}'s label cutoff is unknown"
    if positives + negatives == 0:  # an identical retrain, or one a few weeks later
        return f"no latest-window row comes after champion v{version}'s label cutoff {cut}"
    return (
        f"only {positives} positive(s) and {negatives} negative(s) of the latest window come "
        f"after champion v{version}'s label cutoff {cut} (scoring both on them needs "
        f"{FAIR_MIN_POSITIVES} and {FAIR_MIN_NEGATIVES})"
    )


@_store_call
def check_registration(name: str, kind: str) -> None:
    """Refuse to add a ``kind`` model to a registered model holding another kind."""
    cl = client()
    try:
        versions = cl.search_model_versions(f"name = '{name}'")
    except Exception as exc:
        if is_missing(exc):
            return
        raise
    for mv in versions:
        other = _version_kind(mv)
        if other and other != kind:
            raise RegistryError(
                f"registered model {name!r} holds {other} versions (version {mv.version}), but "
                f"this spec trains a {kind} model; give the spec another name: (e.g. "
                f"{kind}_{name}), or train with --no-register"
            )


def log_training(
    result: Any,
    settings: Settings,
    *,
    templates: dict[str, str] | None = None,
    catalog: dict[str, Any] | None = None,
    run_name: str | None = None,
    register: bool = True,
    extra_tags: dict[str, str] | None = None,
) -> LoggedVersion:
    """Log a :class:`~leadml.modeling.train.TrainingResult` as one MLflow run and register
    its scoring bundle (alias ``challenger``). Call :func:`configure` first.

    The version is created only after everything else is logged, with its tags in the
    same call; if that step fails or is interrupted, the version is deleted again."""
    with store_errors():
        return _log_training(result, settings, templates, catalog, run_name, register, extra_tags)


def _log_training(
    result: Any,
    settings: Settings,
    templates: dict[str, str] | None,
    catalog: dict[str, Any] | None,
    run_name: str | None,
    register: bool,
    extra_tags: dict[str, str] | None,
) -> LoggedVersion:
    import mlflow

    from leadml.modeling import plots
    from leadml.modeling.bundle import ScoringBundle
    from leadml.modeling.evaluate import model_card
    from leadml.modeling.pyfunc import BundleModel, pip_requirements, signature_for

    spec = result.spec
    if register:
        check_registration(spec.name, spec.kind)
    comparison = champion_on_latest_window(result, spec.name) if register else {}
    exp = experiment_id(settings)
    bundle = ScoringBundle.from_training(result, templates=templates, catalog=catalog)
    bundle.meta["label_cutoff"] = label_cutoff(result).isoformat()  # see batch _trained_until
    tags = {
        "leadml.kind": spec.kind,
        "leadml.feature_hash": result.feature_hash,
        "leadml.latest_window_start": result.latest_origin.isoformat(),
        "leadml.data_window": f"{result.data_window[0]:%Y-%m-%d}..{result.data_window[1]:%Y-%m-%d}",
        "leadml.label_cutoff": label_cutoff(result).isoformat(),
        **(extra_tags or {}),
    }
    with mlflow.start_run(
        experiment_id=exp,
        run_name=run_name or f"{spec.name}-{datetime.now(UTC):%Y%m%d-%H%M%S}",
        tags=tags,
    ) as run:
        mlflow.log_params(run_params(result))
        metrics = _clean_metrics(result.metrics)
        if comparison.get("roc_auc") is not None:
            metrics.update(
                _clean_metrics(
                    {
                        f"champion_latest_{k}": v
                        for k, v in comparison.items()
                        if k in ("roc_auc", "ece", "brier")
                    }
                )
            )
        mlflow.log_metrics(metrics)
        for i, fold in enumerate(result.folds):
            mlflow.log_metrics(
                _clean_metrics(
                    {
                        f"fold_{k}": fold.metrics.get(k, math.nan)
                        for k in ("roc_auc", "pr_auc", "brier", "ece", "mean_ratio_error")
                    }
                ),
                step=i,
            )
        with tempfile.TemporaryDirectory(prefix="leadml-run-") as tmp:
            tdir = Path(tmp)
            known = result.predictions[result.predictions["label"].notna()].astype({"label": int})
            plots.calibration_plot(
                known, tdir / "plots" / "calibration.png", f"{spec.name}: calibration"
            )
            plots.gain_plot(
                known, tdir / "plots" / "gain_lift.png", f"{spec.name}: cumulative gain"
            )
            plots.importance_plot(
                plots.booster_importance(result.model.booster, list(spec.features)),
                tdir / "plots" / "importance.png",
            )
            plots.score_distribution_plot(known, tdir / "plots" / "score_distribution.png")
            (tdir / "model_card.md").write_text(model_card(result, run_id=run.info.run_id))
            folds = pd.DataFrame(
                [
                    {
                        "origin": f.origin,
                        "train_rows": f.train_rows,
                        "train_positives": f.train_positives,
                        "test_rows": f.test_rows,
                        "seconds": round(f.seconds, 2),
                        **f.metrics,
                    }
                    for f in result.folds
                ]
            )
            folds.to_csv(tdir / "backtest_folds.csv", index=False)
            (tdir / "features.json").write_text(json.dumps(list(spec.features), indent=1))
            (tdir / "spec.json").write_text(spec.model_dump_json(indent=1))
            mlflow.log_artifacts(str(tdir))
            bundle_dir = bundle.save(tdir / "bundle")
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=BundleModel(),
                artifacts={"bundle": str(bundle_dir)},
                signature=signature_for(bundle),
                input_example=bundle.input_example(),
                pip_requirements=pip_requirements(),
            )
    run_id = run.info.run_id

    def card_with_version(version: str) -> None:  # the card names the version it describes
        client().log_text(
            run_id, model_card(result, version=version, run_id=run_id), "model_card.md"
        )

    version = (
        _register_version(
            spec, info, run_id, _version_tags(spec, result, comparison), card_with_version
        )
        if register
        else None
    )
    return LoggedVersion(run.info.run_id, spec.name, version, info.model_uri, metrics, comparison)


def _version_tags(spec: Any, result: Any, comparison: dict[str, Any]) -> dict[str, str]:
    """The tags a new version carries: its gate, its kind and headline metrics, and how
    the champion compared (what :func:`gate_checks` reads)."""
    tags: dict[str, Any] = {
        "leadml.kind": spec.kind,
        "leadml.gate.max_roc_auc_drop": spec.gate.max_roc_auc_drop,
        "leadml.gate.max_ece": spec.gate.max_ece,
        "leadml.gate.min_roc_auc": spec.gate.min_roc_auc,
        "leadml.gate.max_mean_ratio_error": spec.gate.max_mean_ratio_error,
        "leadml.latest_window_start": result.latest_origin.isoformat(),
        "leadml.latest_window_end": (
            result.latest_origin + pd.Timedelta(days=spec.backtest.test_days)
        ).isoformat(),
        "leadml.horizon_days": spec.target.horizon_days,
        "leadml.label_cutoff": label_cutoff(result).isoformat(),
        "leadml.feature_hash": result.feature_hash,
        "leadml.compared_champion_version": comparison.get("version", ""),
        "leadml.champion_latest_roc_auc": comparison.get("roc_auc", ""),
        "leadml.champion_comparison": comparison.get("method", ""),
        "leadml.challenger_compared_roc_auc": comparison.get("challenger_roc_auc", ""),
        "leadml.champion_comparison_detail": comparison.get("detail", ""),
        "leadml.champion_comparison_error": comparison.get("error", ""),
    }
    for k in (
        "roc_auc",
        "latest_roc_auc",
        "ece",
        "latest_ece",
        "mean_ratio_error",
        "brier",
        "roc_auc_vs_oracle",
    ):
        if k in result.metrics and not math.isnan(result.metrics[k]):
            tags[f"leadml.metric.{k}"] = round(float(result.metrics[k]), 6)
    return {k: str(v)[:4900] for k, v in tags.items()}


def _register_version(
    spec: Any,
    info: Any,
    run_id: str,
    tags: dict[str, str],
    then: Callable[[str], None] | None = None,
) -> str:
    """Create the version (tags included), call ``then(version)`` (the model card gets its
    version number) and point ``challenger`` at it; on any failure or interrupt after the
    version exists, delete it so none is left half-registered."""
    cl = client()
    try:
        cl.create_registered_model(spec.name)
    except Exception as exc:
        if getattr(exc, "error_code", "") not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    mv = None
    try:
        mv = cl.create_model_version(
            spec.name,
            source=info.model_uri,
            run_id=run_id,
            tags=tags,
            model_id=getattr(info, "model_id", None),
        )
        if then is not None:
            then(str(mv.version))
        cl.set_registered_model_alias(spec.name, CHALLENGER, str(mv.version))
    except BaseException:
        if mv is not None:
            with suppress(Exception):
                cl.delete_model_version(spec.name, str(mv.version))
        raise
    return str(mv.version)


# ------------------------------------------------------------------ registry


def _require_model(name: str) -> Any:
    """The registered model ``name``; a clear error naming the known ones when absent."""
    cl = client()
    try:
        return cl.get_registered_model(name)
    except Exception as exc:
        if not is_missing(exc):
            raise
    known = sorted(rm.name for rm in cl.search_registered_models())
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    listing = ", ".join(known) if known else "none yet (train one with `leadml train`)"
    raise RegistryError(f"no registered model {name!r}{hint}; known: {listing}")


def _version(name: str, version: str | None, alias: str = CHALLENGER) -> Any:
    rm = _require_model(name)
    cl = client()
    if version is None:
        target = (rm.aliases or {}).get(alias)
        if target is None:
            versions = sorted(
                int(mv.version) for mv in cl.search_model_versions(f"name = '{name}'")
            )
            champ = (rm.aliases or {}).get(CHAMPION)
            raise RegistryError(
                f"registered model {name!r} has no alias @{alias} (it was promoted, rolled back "
                f"past or never set); pass --version N (versions: "
                f"{', '.join(map(str, versions)) or 'none'}; champion: {champ or 'none'})"
            )
        version = str(target)
    try:
        return cl.get_model_version(name, str(version))
    except Exception as exc:
        if not is_missing(exc):
            raise
        raise RegistryError(
            f"registered model {name!r} has no version {version}; list versions with "
            "`leadml models`"
        ) from None


def _alias_version(name: str, alias: str) -> str | None:
    try:
        aliases = client().get_registered_model(name).aliases or {}
    except Exception as exc:
        if is_missing(exc):
            return None
        raise
    return str(aliases[alias]) if alias in aliases else None


@_store_call
def champion_version(name: str) -> str | None:
    """The version ``@champion`` points at, or None (no such model, no champion)."""
    return _alias_version(name, CHAMPION)


def _history(name: str) -> list[str]:
    tags = client().get_registered_model(name).tags
    try:
        return [str(v) for v in json.loads(tags.get(HISTORY_TAG, "[]"))]
    except json.JSONDecodeError:
        return []


@dataclass
class GateCheck:
    criterion: str
    ok: bool
    detail: str


# every version leadml registered has these (``leadml.gate.max_mean_ratio_error`` only
# those since that criterion: older versions are not judged on it)
GATE_TAGS = ("leadml.gate.max_ece", "leadml.gate.min_roc_auc", "leadml.gate.max_roc_auc_drop")


@_store_call
def gate_checks(name: str, version: str) -> list[GateCheck]:
    """The promotion gate of ``version`` (thresholds stored on it at registration).

    ``max_roc_auc_drop`` compares the challenger with the champion the way
    :func:`champion_on_latest_window` did at training time, and its detail says how."""
    mv = _version(name, version)
    t = mv.tags
    missing = [k for k in GATE_TAGS if k not in t]
    if missing:
        raise RegistryError(
            f"{name} version {mv.version} lacks its leadml tags ({', '.join(missing)}): its "
            "registration did not finish or it was registered outside leadml, so it has no "
            "gate; retrain, and delete the version in the MLflow UI"
        )
    metrics = client().get_run(mv.run_id).data.metrics if mv.run_id else {}
    checks: list[GateCheck] = []
    max_ece = float(t["leadml.gate.max_ece"])
    ece = metrics.get("ece", math.nan)
    checks.append(
        GateCheck("max_ece", bool(ece <= max_ece), f"backtest ECE {ece:.4f} (limit {max_ece:.4f})")
    )
    if "leadml.gate.max_mean_ratio_error" in t:  # versions registered since the criterion
        checks.append(mean_ratio_check(float(t["leadml.gate.max_mean_ratio_error"]), metrics))
    min_auc = float(t["leadml.gate.min_roc_auc"])
    auc = metrics.get("latest_roc_auc", math.nan)
    checks.append(
        GateCheck(
            "min_roc_auc",
            bool(auc >= min_auc),
            f"ROC AUC on the latest window {auc:.4f} (minimum {min_auc:.4f})",
        )
    )
    champion = _alias_version(name, CHAMPION)
    if champion is not None and champion != str(mv.version):
        checks.append(_drop_check(t, champion, str(mv.version), auc))
    return checks


def mean_ratio_check(limit: float, metrics: dict[str, float]) -> GateCheck:
    """Calibration in the large on the backtest: the mean probability within ``limit``
    (a share) of the observed positive rate."""
    error = metrics.get("mean_ratio_error", math.nan)
    mean_p = metrics.get("mean_probability", math.nan)
    rate = metrics.get("base_rate", math.nan)
    ratio = mean_p / rate if rate else math.nan
    positives = metrics.get("positives", metrics.get("test_positives", math.nan))
    return GateCheck(
        "max_mean_ratio_error",
        bool(error <= limit),
        f"backtest mean probability {mean_p:.4g} vs observed rate {rate:.4g} of "
        f"{positives:,.0f} positives (ratio {ratio:.3f}, off by {error:.1%}; limit {limit:.0%})",
    )


def _drop_check(t: dict[str, str], champion: str, version: str, auc: float) -> GateCheck:
    compared = t.get("leadml.compared_champion_version", "")
    max_drop = float(t.get("leadml.gate.max_roc_auc_drop", "0"))
    if compared != champion:
        return GateCheck(
            "max_roc_auc_drop",
            False,
            f"version {version} was compared with champion {compared or 'none'}, but the "
            f"champion is now {champion}; retrain to compare with it, or --force with a reason",
        )
    error = t.get("leadml.champion_comparison_error", "")
    if error:
        return GateCheck(
            "max_roc_auc_drop",
            False,
            f"champion v{champion} could not be compared: {error}",
        )
    champ_auc = _num(t.get("leadml.champion_latest_roc_auc"))
    method = t.get("leadml.champion_comparison", "")
    mine = _num(t.get("leadml.challenger_compared_roc_auc")) if method else auc
    if math.isnan(mine):
        mine = auc
    if math.isnan(champ_auc) or math.isnan(mine):
        return GateCheck(
            "max_roc_auc_drop",
            False,
            f"no ROC AUC to compare with champion v{champion} (challenger {mine:.4f}, champion "
            f"{champ_auc:.4f}); retrain, or --force with a reason",
        )
    drop = champ_auc - mine
    if method == "same_window":
        how = "champion's own out-of-sample backtest on the same window"
    elif method == "stored_backtest":
        how = "champion's own out-of-sample backtest on its latest window"
    elif method == "unseen_rows":
        how = "champion on the same latest-window rows it was not trained on"
    else:  # registered before the comparison was made fair
        how = "champion on the same latest window (it may have been trained on those rows)"
    detail = t.get("leadml.champion_comparison_detail", "")
    return GateCheck(
        "max_roc_auc_drop",
        bool(drop <= max_drop),
        f"ROC AUC {mine:.4f} vs {how} v{champion} {champ_auc:.4f} (drop {drop:+.4f}, allowed "
        f"{max_drop:.4f})" + (f"; {detail}" if detail else ""),
    )


# on a run trained with `--tune N` whose tuned parameters won: they were chosen on the
# same backtest folds whose metrics the run logs and the gate reads (set by
# :meth:`leadml.modeling.workflow.TuneResult.tags`)
TUNED_TAG = "leadml.tuned_on_reported_folds"


def tuning_note(mv: Any) -> str | None:
    """A caution for a version whose parameters were tuned on its own reported folds."""
    if not mv.run_id:
        return None
    try:
        tags = client().get_run(mv.run_id).data.tags
    except Exception as exc:
        if is_missing(exc):
            return None
        raise
    if tags.get(TUNED_TAG) != "true":
        return None
    return (
        f"version {mv.version} was tuned (--tune) on the same backtest folds these checks "
        "read, so its figures are slightly optimistic"
    )


@dataclass
class PromotionResult:
    name: str
    version: str
    previous: str | None
    checks: list[GateCheck]
    forced: bool
    # "promoted" | "already_champion"; force_not_needed: --force given, every check passed
    outcome: str = "promoted"
    force_not_needed: bool = False
    notes: list[str] = field(default_factory=list)  # e.g. tuned on the reported folds


_FORCE_TAGS = ("leadml.forced", "leadml.force_reason", "leadml.failed_checks")
FORCE_HISTORY_TAG = "leadml.force_history"  # JSON list, kept when later promotions pass
# set on the champion a rollback replaced (removed when it is promoted again); every
# rollback of the version stays in ROLLBACK_HISTORY_TAG (JSON list of {at, to})
ROLLED_BACK_TAG = "leadml.rolled_back_at"
ROLLBACK_HISTORY_TAG = "leadml.rollback_history"


@_store_call
def promote(
    name: str, version: str | None = None, *, force: bool = False, reason: str | None = None
) -> PromotionResult:
    """Move alias ``champion`` to ``version`` (default: the ``challenger``) if the gate holds.

    Raises :class:`GateFailed` naming each failed criterion; with ``force`` (which needs
    a ``reason``) the move happens anyway and the reason and failed checks are recorded.
    ``force`` when every check passes is not recorded as forced. A ``reason`` without
    ``force`` is recorded as ``leadml.promote_reason``. Promoting the current champion
    changes nothing (``outcome == "already_champion"``).
    """
    if force and not (reason and reason.strip()):
        raise RegistryError("--force needs --reason TEXT (it is recorded on the version)")
    mv = _version(name, version)
    v = str(mv.version)
    checks = gate_checks(name, v)
    notes = [n for n in (tuning_note(mv),) if n]
    previous = _alias_version(name, CHAMPION)
    if previous == v:
        return PromotionResult(
            name, v, previous, checks, False, outcome="already_champion", notes=notes
        )
    failed = [c for c in checks if not c.ok]
    if failed and not force:
        lines = [f"{name} version {v} does not pass the promotion gate:"]
        lines += [f"  - {c.criterion}: {c.detail}" for c in failed]
        lines += [f"  ({n})" for n in notes]
        lines.append("fix the model, or promote with --force --reason TEXT")
        raise GateFailed("\n".join(lines), checks)
    forced = bool(force and failed)
    cl = client()
    cl.set_registered_model_alias(name, CHAMPION, v)
    history = _history(name)
    if not history and previous:
        history = [previous]
    if not history or history[-1] != v:
        history.append(v)
    cl.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    now = datetime.now(UTC).isoformat(timespec="seconds")
    cl.set_model_version_tag(name, v, "leadml.promoted_at", now)
    if ROLLED_BACK_TAG in mv.tags:  # champion again: the mark would say it is not
        cl.delete_model_version_tag(name, v, ROLLED_BACK_TAG)
    if forced:
        failed_names = "; ".join(c.criterion for c in failed)
        cl.set_model_version_tag(name, v, "leadml.forced", "true")
        cl.set_model_version_tag(name, v, "leadml.force_reason", reason)
        cl.set_model_version_tag(name, v, "leadml.failed_checks", failed_names)
        # every forced promotion of this version, oldest first: a later one must not
        # erase why an earlier one was made
        earlier = json.loads(mv.tags.get(FORCE_HISTORY_TAG, "[]") or "[]")
        earlier.append({"at": now, "reason": reason, "failed_checks": failed_names})
        while len(json.dumps(earlier)) > 4900 and len(earlier) > 1:  # MLflow's tag limit
            earlier.pop(0)
        cl.set_model_version_tag(name, v, FORCE_HISTORY_TAG, json.dumps(earlier))
    else:  # through the gate: a stale forced mark from an earlier promotion would mislead
        for tag in _FORCE_TAGS:
            if tag in mv.tags:
                cl.delete_model_version_tag(name, v, tag)
        if reason and reason.strip():
            cl.set_model_version_tag(name, v, "leadml.promote_reason", reason.strip())
    if _alias_version(name, CHALLENGER) == v:
        cl.delete_registered_model_alias(name, CHALLENGER)
    return PromotionResult(
        name, v, previous, checks, forced, force_not_needed=bool(force and not failed), notes=notes
    )


@_store_call
def rollback(name: str) -> tuple[str, str]:
    """Restore the champion before the current one; returns (from, to) versions."""
    _require_model(name)
    current = _alias_version(name, CHAMPION)
    if current is None:
        raise RegistryError(f"{name} has no champion to roll back")
    history = _history(name)
    while history and history[-1] != current:
        history.pop()  # aliases moved outside leadml: trust the alias
    if len(history) < 2:
        raise RegistryError(
            f"{name} has no earlier champion than version {current} to roll back to"
        )
    history.pop()
    target = history[-1]
    cl = client()
    cl.set_registered_model_alias(name, CHAMPION, target)
    cl.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    now = datetime.now(UTC).isoformat(timespec="seconds")
    cl.set_model_version_tag(name, current, ROLLED_BACK_TAG, now)
    # every rollback of this version, oldest first (the mark above goes when it is promoted
    # again; this list stays)
    tags = cl.get_model_version(name, current).tags
    earlier = _json_list(tags.get(ROLLBACK_HISTORY_TAG))
    earlier.append({"at": now, "to": target})
    while len(json.dumps(earlier)) > 4900 and len(earlier) > 1:  # MLflow's tag limit
        earlier.pop(0)
    cl.set_model_version_tag(name, current, ROLLBACK_HISTORY_TAG, json.dumps(earlier))
    return current, target


def _json_list(text: str | None) -> list[Any]:
    try:
        value = json.loads(text or "[]")
    except json.JSONDecodeError:
        return []
    return value if isinstance(value, list) else []


# The columns of `leadml models` (one row per registered version), besides run_id.
MODEL_COLUMNS = [
    "name",
    "version",
    "aliases",
    "created",
    "horizon_days",
    "forced",
    "rolled_back",
    "roc_auc",
    "latest_roc_auc",
    "ece",
    "mean_ratio_error",
    "brier",
    "vs_oracle",
]


@_store_call
def list_versions(names: tuple[str, ...] | list[str] | None = None) -> pd.DataFrame:
    """One row per registered version: aliases, creation time, headline metrics.

    ``names=None`` lists every registered model (the built-in two and any trained
    from a table with ``leadml train --table``)."""
    cl = client()
    rows = []
    if names is None:
        names = sorted(rm.name for rm in cl.search_registered_models())
    for name in names:
        try:
            rm = cl.get_registered_model(name)
        except Exception as exc:
            if is_missing(exc):
                continue
            raise
        aliases: dict[str, list[str]] = {}
        for alias, ver in (rm.aliases or {}).items():
            aliases.setdefault(str(ver), []).append(alias)
        for mv in cl.search_model_versions(f"name = '{name}'"):
            t = mv.tags
            rows.append(
                {
                    "name": name,
                    "version": int(mv.version),
                    "aliases": ",".join(sorted(aliases.get(str(mv.version), []))),
                    "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).strftime(
                        "%Y-%m-%d %H:%M"
                    ),
                    "horizon_days": _listed_horizon(mv),
                    # promoted past a failed gate (the tag goes when it later passes one)
                    "forced": t.get("leadml.forced") == "true",
                    # replaced by `leadml rollback` (UTC; the mark goes when promoted again)
                    "rolled_back": _minutes(t.get(ROLLED_BACK_TAG)),
                    "roc_auc": _num(t.get("leadml.metric.roc_auc")),
                    "latest_roc_auc": _num(t.get("leadml.metric.latest_roc_auc")),
                    "ece": _num(t.get("leadml.metric.ece")),
                    "mean_ratio_error": _num(t.get("leadml.metric.mean_ratio_error")),
                    "brier": _num(t.get("leadml.metric.brier")),
                    "vs_oracle": _num(t.get("leadml.metric.roc_auc_vs_oracle")),
                    "run_id": mv.run_id,
                }
            )
    return pd.DataFrame(rows, columns=[*MODEL_COLUMNS, "run_id"]).sort_values(
        ["name", "version"], ignore_index=True
    )


def _minutes(iso: str | None) -> str:
    """An ISO time as ``created`` shows it (``2025-11-10 09:30``, UTC); "" when absent."""
    if not iso:
        return ""
    try:
        return pd.Timestamp(iso).tz_convert("UTC").strftime("%Y-%m-%d %H:%M")
    except (ValueError, TypeError):
        return iso


@_store_call
def compare_versions(name: str, metrics: tuple[str, ...] | list[str] = ()) -> pd.DataFrame:
    """The versions of one registered model side by side: the columns of `leadml models`
    (:func:`list_versions`) and, per name in ``metrics``, that metric of each version's
    run (e.g. ``pr_auc``, ``baseline_roc_auc``, ``oracle_roc_auc``; NaN when the run lacks
    it). An unknown model is a :class:`RegistryError` naming the known ones."""
    _require_model(name)
    table = list_versions([name])
    if metrics:
        cl = client()
        logged = {
            run_id: (cl.get_run(run_id).data.metrics if run_id else {})
            for run_id in table["run_id"]
        }
        for metric in metrics:
            table[metric] = [logged[r].get(metric, math.nan) for r in table["run_id"]]
    return table


def _listed_horizon(mv: Any) -> int | None:
    """The version's horizon: its tag, else (registered before the tag) its run's param."""
    tag = mv.tags.get("leadml.horizon_days")
    if tag:
        return int(float(tag))
    return _version_horizon(mv)


def _num(value: str | None) -> float:
    try:
        return float(value) if value not in (None, "") else math.nan
    except ValueError:
        return math.nan
