"""Runtime configuration, parsed once at the entry point.

Precedence (highest first): explicit overrides (CLI flags) > environment
variables ``LEADML_*`` (nested fields with ``__``, e.g.
``LEADML_SIMULATOR__LEADS=5000``) > ``configs/leadml.yaml`` > defaults here.

Nothing in this module touches the file system at import time; call
:func:`load_settings` from an entry point and pass the result down.
"""

from __future__ import annotations

import contextvars
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from leadml.errors import ConfigError

CONFIG_FILE = "leadml.yaml"
_yaml_path: contextvars.ContextVar[Path | None] = contextvars.ContextVar("_yaml_path", default=None)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Vocabulary(_Section):
    """THE MODEL's vocabularies; every table contract checks against these."""

    lead_statuses: list[str] = ["lead", "nurturing", "mql", "sql", "disqualified", "recycled"]
    # Open field-sales stages in funnel order (THE_MODEL.md, "Opportunity stages").
    open_stages: list[str] = [
        "follow_up",
        "problem_recognised",
        "evaluation",
        "negotiation",
        "approval",
    ]
    won_stage: str = "closed_won"
    lost_stage: str = "closed_lost"
    event_types: list[str] = [
        "web_visit",
        "page_view",
        "email_open",
        "email_click",
        "form_submit",
        "content_download",
        "seminar_registered",
        "seminar_attended",
        "webinar_registered",
        "webinar_attended",
    ]
    page_categories: list[str] = ["pricing", "case_study", "docs", "blog", "product", "careers"]
    activity_types: list[str] = ["call", "connect", "email", "meeting", "demo"]
    rep_roles: list[str] = ["IS", "FS", "CS"]
    segments: list[str] = ["enterprise", "mid_market", "smb"]

    @property
    def stages(self) -> list[str]:
        """All opportunity stages: open ones in order, then won, then lost."""
        return [*self.open_stages, self.won_stage, self.lost_stage]

    @property
    def closed_stages(self) -> list[str]:
        return [self.won_stage, self.lost_stage]


class DataConfig(_Section):
    """How input tables are read and checked."""

    # Where tables are read from when --data is not given: None means the
    # workspace's simulated company (<workspace>/data).
    path: Path | None = None
    # Bad rows: "reject" stops with a clear message; "quarantine" writes them
    # with reasons to <workspace>/quarantine and continues with the good rows.
    bad_rows: str = Field("reject", pattern="^(reject|quarantine)$")
    example_rows: int = Field(5, ge=1, le=50)


class SimulatorConfig(_Section):
    """Defaults for ``leadml simulate``; flags override them."""

    leads: int = Field(20_000, ge=50)
    start: str = "2023-11-13"
    end: str = "2025-11-09"
    seed: int = 7
    is_reps: int = Field(0, ge=0, description="0 = sized from the lead volume")
    fs_reps: int = Field(0, ge=0, description="0 = sized from the lead volume")
    weekly_slots: int = Field(80, ge=1)


class BatchConfig(_Section):
    """The nightly run (``leadml batch``): where outputs go, drift thresholds, the call list."""

    # Any SQLAlchemy URL (e.g. postgresql+psycopg://user@host/db); None = a DuckDB
    # file in the workspace (<workspace>/outputs/leadml.duckdb).
    sql_url: str | None = None
    # PostgreSQL: how long the publishing transaction waits for a lock another session
    # holds on an output table (a BI tool's LOCK TABLE, a long transaction) before the
    # run stops with an error naming the table; 0 = wait as long as it takes.
    sql_lock_timeout_seconds: float = Field(300, ge=0)
    # Also write Parquet partitions under <workspace>/outputs/<table>/as_of=YYYY-MM-DD/.
    parquet: bool = True
    # Bad input rows: "reject" stops the run naming table, column and rows;
    # "quarantine" sets them aside with reasons and scores the rest.
    bad_rows: str = Field("reject", pattern="^(reject|quarantine)$")
    # Population stability index: >= warn is reported, >= alert marks a feature drifted.
    psi_warn: float = Field(0.1, gt=0)
    psi_alert: float = Field(0.25, gt=0)
    # The IS call list covers this many working days from the as-of date, bounded by
    # the slots left in the as-of week (weekly_slots minus activities already booked).
    call_list_days: int = Field(5, ge=1, le=5)
    # Lead statuses (as of D) IS may call; recycled leads come round again.
    call_list_statuses: list[str] = ["mql", "recycled"]
    # Route leads to IS reps of the lead's "segment" or, when leads carry one, "team".
    assign_by: str = Field("segment", pattern="^(segment|team)$")
    # Top reasons (TreeSHAP) for every open deal, every lead on the call list and this
    # many of the best-scored other leads (reasons cost several predictions each).
    reasons_top_leads: int = Field(5000, ge=0)
    # The forecast's P(won) of open deals: "empirical" close rates, as `leadml forecast`
    # by default (the same numbers; in backtests the more accurate: MAPE 0.054 against
    # the deal champion's 0.119 on the demo company), or the deal champion ("model").
    # The deal scores carry the champion's P(won this / next quarter) either way.
    forecast_source: str = Field("empirical", pattern="^(empirical|model)$")

    @model_validator(mode="after")
    def _psi_order(self) -> BatchConfig:
        if self.psi_warn >= self.psi_alert:
            raise ValueError(
                f"psi_warn ({self.psi_warn}) must be below psi_alert ({self.psi_alert}): a "
                "feature is reported at psi_warn and named as drifted at psi_alert"
            )
        return self


class BatchingConfig(_Section):
    """Adaptive batching of the per-lead/per-deal scoring work in the API server.

    Off by default: on a 2-core machine with one lead of 200 events per request the
    work per request is dominated by HTTP and parsing, which batching cannot share;
    what it shares (the online features computed together, the model call) is ~15% of
    the server's CPU per request, so it raised the throughput at saturation by
    1.07-1.28x and cost 0.5-0.8 ms at concurrency 1 in three of four runs
    (bench/bench_serving.py).
    Turn it on for throughput under load; it adds no waiting when idle.
    """

    enabled: bool = False
    max_batch_size: int = Field(64, ge=2, le=4096)
    # Latency budget of one request in the batch queue: requests that waited longer
    # are shed (503), so keep it well above the scoring time.
    max_latency_ms: int = Field(10_000, ge=1, le=60_000)


class ServingConfig(_Section):
    """The online scoring API (``leadml serve`` / ``leadml build``)."""

    host: str = "127.0.0.1"
    port: int = Field(3000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64)
    # Registered model names served (MLflow registry alias ``champion``).
    readiness_model: str = "lead_readiness"
    deal_model: str = "deal_close"
    # Request limits: over them the API answers 413 naming the field.
    max_leads_per_request: int = Field(100, ge=1)
    max_events_per_lead: int = Field(2000, ge=1)
    max_deals_per_request: int = Field(500, ge=1)
    max_records_per_deal: int = Field(2000, ge=1)
    # Request bodies larger than this are answered 413 before they are read or parsed.
    # 16 MiB: the largest request the count limits are meant for, 100 leads x 2000 events
    # of the usual size, is ~11 MB; more bytes only buy parsing time on the one worker.
    # (A request at every count limit at once, e.g. 500 deals x 2000 records, would be
    # larger: this limit then binds first, and the 413 says to send fewer per request.)
    max_request_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    # Event types outside the vocabulary: "reject" answers 422 naming each one;
    # "ignore" drops them and reports how many were dropped per lead.
    unknown_event_types: str = Field("reject", pattern="^(reject|ignore)$")
    # IS slots left this week when a /handoff request does not say.
    is_capacity: int = Field(80, ge=0)
    # A request without as_of is scored as of its arrival, moved just after its newest
    # record when that is at most this many seconds ahead (a sender's clock running
    # fast: the webhook's own event); 0 = records must be before the arrival.
    clock_skew_seconds: float = Field(300, ge=0, le=86400)
    # Name of the environment variable holding the API key (never a file in the
    # repository). Unset or empty = no key required.
    api_key_env: str = Field("LEADML_API_KEY", pattern="^[A-Za-z_][A-Za-z0-9_]*$")
    batching: BatchingConfig = BatchingConfig()


class AlertsConfig(_Section):
    """Deal-hygiene alert thresholds (``leadml alerts``)."""

    # A deal with no change in opportunity_history for this many days is stale ...
    stale_days: int = Field(30, ge=1)
    # ... unless a logged activity on it (call, e-mail, meeting, demo) is more recent:
    # a deal someone works on is not going stale. false: history changes only.
    stale_counts_activities: bool = True
    # Alert when the expected close date was moved later this many times or more.
    close_date_pushes: int = Field(3, ge=1)
    # Time in the current stage beyond this quantile of the historical stage durations
    # (completed stage spells before the as-of date) ...
    stage_duration_quantile: float = Field(0.9, gt=0, lt=1)
    # ... when the stage has at least this many completed spells to measure.
    min_stage_samples: int = Field(20, ge=1)
    # Late stages whose score drop is watched (needs a scores history input).
    late_stages: list[str] = ["negotiation", "approval"]
    # Alert when the latest score is this much (absolute) below the highest score
    # of the previous score_window_days.
    score_drop: float = Field(0.2, gt=0, le=1)
    score_window_days: int = Field(28, ge=1)


class ForecastConfig(_Section):
    """Revenue forecast, its backtest and the deal-hygiene alerts."""

    # Earlier periods whose same moment trains the empirical close rates.
    lookback_periods: int = Field(8, ge=1)
    # Earlier periods averaged by the new-deals run-rate model.
    new_deals_lookback_periods: int = Field(4, ge=1)
    # The new-deals count scaled by the deal-creation velocity of the last this many days
    # against the same before each earlier period's window (growth); 0 = off.
    new_deals_velocity_days: int = Field(182, ge=0)
    # Earlier periods on which the spread (shared shock of open deals) is measured:
    # the most recent ones describe today's probability source best.
    shock_lookback_periods: int = Field(8, ge=2)
    # Pseudo-deals pulling a sparse stage x segment x due x age cell to its coarser level.
    prior_strength: float = Field(30.0, ge=0)
    # Deal-age bucket edges in days (age = time since the deal's first history row).
    age_buckets_days: list[int] = [30, 90, 180]
    # Grid resolution of the exact distribution: step = (pipeline + new-deals tail) / cells;
    # error bound = n_deals * step / 2. Only the reachable part (up to mean + 8 sd) is computed.
    max_grid_cells: int = Field(1 << 19, ge=256)
    # Monte Carlo cross-check (fixed seed).
    monte_carlo_draws: int = Field(20_000, ge=100)
    seed: int = 7
    # Quarters ending before the data's end that `leadml forecast backtest` replays.
    backtest_quarters: int = Field(4, ge=1)
    # Weeks before quarter end at which the backtest forecasts (1..13).
    backtest_weeks: int = Field(13, ge=1, le=13)
    # Weeks before month end at which `leadml forecast backtest --months N` forecasts (1..5).
    backtest_month_weeks: int = Field(4, ge=1, le=5)
    # Grid cells per backtest forecast (coarser is faster; MAPE is insensitive to it).
    backtest_grid_cells: int = Field(1 << 16, ge=256)
    alerts: AlertsConfig = AlertsConfig()


class FunnelConfig(_Section):
    """How `leadml funnel` reads the lead funnel and names the bottleneck stage."""

    # Lead statuses that form the marketing/IS funnel, in order: acquired -> ... -> SQL.
    lead_stages: list[str] = ["lead", "nurturing", "mql", "sql"]
    disqualified_status: str = "disqualified"
    recycled_status: str = "recycled"
    # Conversion-rate benchmark per stage (to the next stage): the bottleneck is the
    # stage furthest below its benchmark. Starting points for a THE MODEL B2B company;
    # replace them with your targets or last year's rates.
    benchmarks: dict[str, float] = {
        "lead": 0.90,
        "nurturing": 0.25,
        "mql": 0.35,
        "follow_up": 0.70,
        "problem_recognised": 0.65,
        "evaluation": 0.60,
        "negotiation": 0.75,
        "approval": 0.85,
    }
    # A stage with fewer entries in the range is too noisy to be named the bottleneck.
    min_entries: int = Field(30, ge=1)


class TrackingConfig(_Section):
    """MLflow tracking and registry (``leadml train / promote / rollback / models``)."""

    # None = MLFLOW_TRACKING_URI if set, else sqlite:///<workspace>/mlflow/mlflow.db
    # (artifacts in <workspace>/mlflow/artifacts). An http(s):// server works unchanged.
    uri: str | None = None
    experiment: str = "leadml"


class Settings(BaseSettings):
    """All of leadml's runtime configuration."""

    model_config = SettingsConfigDict(
        env_prefix="LEADML_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    workspace: Path = Path("workspace")
    config_dir: Path = Path("configs")
    vocabulary: Vocabulary = Vocabulary()
    data: DataConfig = DataConfig()
    simulator: SimulatorConfig = SimulatorConfig()
    tracking: TrackingConfig = TrackingConfig()
    serving: ServingConfig = ServingConfig()
    batch: BatchConfig = BatchConfig()
    forecast: ForecastConfig = ForecastConfig()
    funnel: FunnelConfig = FunnelConfig()

    @field_validator("workspace", "config_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _known_statuses(self) -> Settings:
        known = self.vocabulary.lead_statuses
        unknown = [x for x in self.batch.call_list_statuses if x not in known]
        if unknown:
            raise ValueError(
                f"batch.call_list_statuses: {', '.join(map(repr, unknown))} not among the "
                f"lead statuses ({', '.join(known)}); no lead would ever have it, so the call "
                "list would stay empty"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls))

    # ---- paths inside the workspace (all generated state lives here) ----
    @property
    def data_dir(self) -> Path:
        """Tables read by default: the given --data, else the simulated company."""
        return self.data.path.expanduser().resolve() if self.data.path else self.simulated_dir

    @property
    def simulated_dir(self) -> Path:
        return self.workspace / "data"

    @property
    def quarantine_dir(self) -> Path:
        return self.workspace / "quarantine"

    @property
    def mlflow_dir(self) -> Path:
        return self.workspace / "mlflow"

    @property
    def bentoml_home(self) -> Path:
        return self.workspace / "bentoml"

    @property
    def outputs_dir(self) -> Path:
        return self.workspace / "outputs"

    @property
    def reports_dir(self) -> Path:
        return self.workspace / "reports"

    def config_file(self, name: str) -> Path:
        """A file in the configuration directory, e.g. ``features.yaml``."""
        return self.config_dir / name


class _YamlSource(PydanticBaseSettingsSource):
    """Reads the YAML file chosen by :func:`load_settings`."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ returns the whole mapping

    def __call__(self) -> dict[str, Any]:
        path = _yaml_path.get()
        if path is None or not path.exists():
            return {}
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
        return data


def default_config_dir() -> Path:
    """Where configs are looked for when neither a flag nor LEADML_CONFIG_DIR names one.

    ``./configs`` when the current directory has one (a checkout), else the copy
    shipped inside the package (wheel install), else the source tree's.
    """
    cwd = Path.cwd() / "configs"
    if (cwd / CONFIG_FILE).exists():
        return cwd
    packaged = Path(__file__).resolve().parent / "_configs"
    if packaged.exists():
        return packaged
    return Path(__file__).resolve().parents[2] / "configs"


def default_models_dir(config_dir: Path) -> Path:
    """Model specs live in ``models/`` beside ``configs/`` (or ``_models`` in a wheel)."""
    for candidate in (config_dir.parent / "models", config_dir.parent / "_models"):
        if candidate.exists():
            return candidate
    return config_dir.parent / "models"


def load_settings(config_dir: Path | None = None, **overrides: Any) -> Settings:
    """Parse the configuration once; ``overrides`` are CLI flags (None = not given)."""
    import os

    named = config_dir or (
        Path(os.environ["LEADML_CONFIG_DIR"]) if os.environ.get("LEADML_CONFIG_DIR") else None
    )
    chosen = (named or default_config_dir()).expanduser().resolve()
    if named is not None:  # a directory the user named must be the one read, never a default
        how = "--config-dir" if config_dir is not None else "LEADML_CONFIG_DIR"
        if not chosen.is_dir():
            raise ConfigError(
                f"config directory {chosen} ({how}) does not exist; name an existing folder "
                f"holding {CONFIG_FILE} and features.yaml"
            )
        if not (chosen / CONFIG_FILE).is_file():
            raise ConfigError(
                f"config directory {chosen} ({how}) has no {CONFIG_FILE}; copy the project's "
                f"configs/{CONFIG_FILE} there (every setting would silently be the default)"
            )
    token = _yaml_path.set(chosen / CONFIG_FILE)
    try:
        given = {k: v for k, v in overrides.items() if v is not None}
        given["config_dir"] = chosen
        return Settings(**given)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, chosen / CONFIG_FILE)) from None
    finally:
        _yaml_path.reset(token)


def _describe(exc: ValidationError, path: Path) -> str:
    lines = [f"invalid configuration (from {path}, LEADML_* variables or flags):"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        got = err.get("input")
        msg = str(err["msg"]).removeprefix("Value error, ")
        if isinstance(got, dict | BaseModel):  # a rule over several fields: msg names them
            lines.append(f"  {where + ': ' if where else ''}{msg}")
        else:
            lines.append(f"  {where}: {msg} (got {got!r})")
    return "\n".join(lines)
