from __future__ import annotations

from pathlib import Path

import pytest

from leadml.config import load_settings
from leadml.errors import ConfigError


def test_yaml_env_and_flags_layer_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "leadml.yaml").write_text(
        "simulator:\n  leads: 1234\n  seed: 3\ndata:\n  bad_rows: quarantine\n"
    )
    s = load_settings(tmp_path)
    assert s.simulator.leads == 1234 and s.data.bad_rows == "quarantine"
    monkeypatch.setenv("LEADML_SIMULATOR__LEADS", "999")
    s = load_settings(tmp_path)
    assert s.simulator.leads == 999 and s.simulator.seed == 3
    s = load_settings(tmp_path, workspace=tmp_path / "ws")
    assert s.workspace == (tmp_path / "ws").resolve()
    assert s.mlflow_dir == s.workspace / "mlflow"


def test_workspace_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADML_WORKSPACE", str(tmp_path / "elsewhere"))
    assert load_settings().workspace == (tmp_path / "elsewhere").resolve()


def test_bad_value_names_the_field(tmp_path: Path) -> None:
    (tmp_path / "leadml.yaml").write_text("data:\n  bad_rows: explode\n")
    with pytest.raises(ConfigError, match=r"data\.bad_rows"):
        load_settings(tmp_path)


def test_unknown_section_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "leadml.yaml").write_text("simulatr:\n  leads: 5\n")
    with pytest.raises(ConfigError, match="simulatr"):
        load_settings(tmp_path)


def test_shipped_config_parses(repo_root: Path) -> None:
    s = load_settings(repo_root / "configs")
    assert s.vocabulary.stages[-2:] == ["closed_won", "closed_lost"]
    assert "pricing" in s.vocabulary.page_categories


@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_named_config_dir_must_exist_and_hold_leadml_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """A typo in LEADML_CONFIG_DIR (cron) must not silently run on the defaults (e.g.
    the workspace DuckDB instead of the configured PostgreSQL)."""

    def load(folder: Path) -> object:
        if how == "flag":
            return load_settings(folder)
        monkeypatch.setenv("LEADML_CONFIG_DIR", str(folder))
        return load_settings()

    name = "--config-dir" if how == "flag" else "LEADML_CONFIG_DIR"
    with pytest.raises(ConfigError, match=f"does not exist.*{name}|{name}.*does not exist"):
        load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=f"{name}.*has no leadml.yaml"):
        load(tmp_path / "empty")
    (tmp_path / "empty" / "leadml.yaml").write_text("simulator:\n  leads: 77\n")
    s = load(tmp_path / "empty")
    assert s.simulator.leads == 77  # type: ignore[attr-defined]


def test_rules_over_several_settings_are_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nightly review: a typo in call_list_statuses emptied the call list with exit 0, and
    psi_warn above psi_alert was accepted."""
    (tmp_path / "leadml.yaml").write_text("batch:\n  psi_warn: 0.5\n")
    with pytest.raises(ConfigError) as err:
        load_settings(tmp_path)
    assert "batch: psi_warn (0.5) must be below psi_alert (0.25)" in str(err.value)
    assert "got {" not in str(err.value)
    (tmp_path / "leadml.yaml").write_text("batch:\n  call_list_statuses: [mql, recyled]\n")
    with pytest.raises(ConfigError, match="'recyled' not among the lead statuses"):
        load_settings(tmp_path)
    monkeypatch.setenv("LEADML_VOCABULARY__LEAD_STATUSES", '["lead", "mql", "recyled"]')
    assert load_settings(tmp_path).batch.call_list_statuses == ["mql", "recyled"]
