"""``leadml simulate``: generate the simulated THE MODEL company (tables + truth)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from leadml.cli import common

if TYPE_CHECKING:
    from rich.progress import TaskID

    from leadml.config import SimulatorConfig

REALISM_LABELS = {
    "mql_rate": "leads ever MQL",
    "mql_to_sql": "MQL -> SQL (per MQL)",
    "sql_per_lead": "leads ever SQL",
    "win_rate": "win rate (closed deals)",
    "median_cycle_days": "median cycle, won (days)",
    "recycled_share": "leads recycled",
    "recycled_mql_share": "MQLs from recycled leads",
    "is_utilisation": "IS utilisation (slots)",
    "slippage_share": "closed deals with pushed close date",
    "quarter_end_win_share": "wins in last 2 weeks of quarter",
    "quarter_end_week_share": "(share of weeks that are such)",
}


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate_command)


def simulate_command(
    ctx: typer.Context,
    leads: int | None = typer.Option(
        None, "--leads", help="Number of leads (default: simulator.leads in configs/leadml.yaml)"
    ),
    start: str | None = typer.Option(
        None, "--start", help="First day, ISO date (default: simulator.start)"
    ),
    end: str | None = typer.Option(
        None, "--end", help="Last day, ISO date (default: simulator.end)"
    ),
    seed: int | None = typer.Option(None, "--seed", help="Random seed (default: simulator.seed)"),
    out: Path | None = typer.Option(
        None, "--out", help="Output folder (default: <workspace>/data)"
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable summary on stdout"),
) -> None:
    """Simulate a THE MODEL company: every canonical table plus ground truth in truth/."""
    from leadml.simulate import simulate

    s = common.settings(ctx)
    given = {
        k: v
        for k, v in {"leads": leads, "start": start, "end": end, "seed": seed}.items()
        if v is not None
    }
    cfg = _with_overrides(s.simulator, given)
    target = out.expanduser().resolve() if out else s.simulated_dir
    with common.progress() as bar:
        tasks: dict[str, TaskID] = {}

        def report(stage: str, fraction: float) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=100)
            bar.update(tasks[stage], completed=round(100 * fraction))

        summary = simulate(cfg, s.vocabulary, target, progress=report)
    if as_json:
        common.emit_json(summary.to_dict())
        return
    con = common.console()
    con.print(
        common.summary_table(
            f"Simulated company in {summary.out_dir} "
            f"({summary.start} .. {summary.end}, seed {summary.seed})",
            ["table", "rows"],
            [*summary.rows.items(), *((f"truth/{k}", v) for k, v in summary.truth_rows.items())],
        )
    )
    con.print(
        common.summary_table(
            "Realism",
            ["figure", "value"],
            [
                (label, summary.realism.get(key, float("nan")))
                for key, label in REALISM_LABELS.items()
            ],
        )
    )
    con.print(
        f"{summary.reps.get('IS', 0)} IS and {summary.reps.get('FS', 0)} FS reps; "
        f"done in {summary.seconds:.1f} s. "
        f"Truth (never for features/models) in {summary.out_dir / 'truth'}"
    )


def _with_overrides(cfg: SimulatorConfig, given: Mapping[str, object]) -> SimulatorConfig:
    """A validated copy of the simulator section with the flags applied."""
    from pydantic import ValidationError

    from leadml.errors import ConfigError

    try:
        return type(cfg).model_validate({**cfg.model_dump(), **given})
    except ValidationError as exc:
        details = "; ".join(
            f"--{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid simulate option(s): {details}") from None
