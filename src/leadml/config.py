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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
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
    start: str = "2024-01-01"
    end: str = "2025-12-31"
    seed: int = 7
    is_reps: int = Field(0, ge=0, description="0 = sized from the lead volume")
    fs_reps: int = Field(0, ge=0, description="0 = sized from the lead volume")
    weekly_slots: int = Field(80, ge=1)


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

    @field_validator("workspace", "config_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

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

    chosen = config_dir or (
        Path(os.environ["LEADML_CONFIG_DIR"]) if os.environ.get("LEADML_CONFIG_DIR") else None
    )
    chosen = (chosen or default_config_dir()).expanduser().resolve()
    if config_dir is not None and not chosen.is_dir():
        raise ConfigError(f"config directory {chosen} does not exist; pass an existing --config-dir")
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
        lines.append(f"  {where}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)
