"""``leadml demo``: the README's main job, the whole THE MODEL loop on the simulated company.

simulate -> validate -> funnel -> train both models -> promote -> nightly batch ->
this quarter's forecast -> HTML report. Each step is the command a user would run by
hand (the demo only chains them with defaults), so what it prints is what they print.
"""

from __future__ import annotations

import math
import time
from typing import Any

import typer

from leadml.cli import common
from leadml.errors import LeadmlError


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)


def demo_command(
    ctx: typer.Context,
    leads: int | None = typer.Option(None, "--leads", help="Size of the simulated company"),
    seed: int | None = typer.Option(None, "--seed", help="Random seed"),
) -> None:
    """Run THE MODEL loop end to end on a simulated company and say where everything is."""
    from leadml import tracking

    out = common.console()
    s = common.settings(ctx)
    timings: list[tuple[str, float]] = []
    # typer vendors its own click: look the registered commands up on the parent group.
    commands: dict[str, Any] = ctx.parent.command.commands  # type: ignore[union-attr]

    def step(title: str, *argv: str) -> None:
        """Run a registered command exactly as ``leadml <argv>`` would (its own defaults)."""
        out.rule(f"[bold]{title}")
        t0 = time.perf_counter()
        cmd = commands[argv[0]]
        with cmd.make_context(argv[0], list(argv[1:]), parent=ctx.parent) as sub:
            cmd.invoke(sub)
        timings.append((title, time.perf_counter() - t0))

    size = [*(["--leads", str(leads)] if leads else []), *(["--seed", str(seed)] if seed else [])]
    step("1. simulate the company", "simulate", *size)
    step("2. validate its tables", "validate")
    step("3. funnel: where is the bottleneck?", "funnel")
    for model in ("lead-readiness", "deal-close"):
        step(f"4. train {model}", "train", model)
    for name in ("lead_readiness", "deal_close"):
        try:
            step(f"5. promote {name}", "promote", name)
        except LeadmlError as err:
            # A demo must run end to end; the override is recorded on the version as a tag
            # and said here, exactly as a user's `--force --reason` would be.
            out.print(f"[yellow]gate failed:[/] {err}")
            reason = forced_reason(tracking.champion_version(name))
            step(f"5. promote {name} (forced)", "promote", name, "--force", "--reason", reason)
    as_of = _company_today(s)
    step(f"6. nightly batch as of {as_of}", "batch", "--as-of", as_of)
    out.rule(f"[bold]7. this quarter's forecast as of {as_of}")
    _print_forecast(s, as_of)
    step("8. the morning report", "report", "--as-of", as_of)

    out.rule("[bold]done")
    out.print(common.summary_table("Demo steps", ["step", "seconds"], timings))
    out.print(f"workspace:  {s.workspace}")
    out.print(f"report:     {s.reports_dir}")
    out.print(f"outputs:    {s.outputs_dir} (Parquet per as-of date) and the SQL tables")
    out.print(f"MLflow UI:  {tracking.ui_hint(s)}")
    out.print("scoring API: leadml serve   (then open http://127.0.0.1:3000 for the OpenAPI page)")


def forced_reason(champion: str | None) -> str:
    """The reason recorded on a version the demo promotes past a failed gate: a re-run
    replaces the champion of the run before, which is not a "first champion"."""
    what = f"replaced champion v{champion}" if champion else "first champion promoted"
    return f"leadml demo: {what} despite the gate (so that the demo runs end to end)"


def _company_today(s: Any) -> str:
    """The simulated company's "today": the end of its simulated period (exclusive), so
    the nightly run sees every record and nothing after."""
    import json

    meta = s.simulated_dir / "simulation.json"
    try:
        return str(json.loads(meta.read_text())["end"])
    except (OSError, KeyError, ValueError) as exc:
        raise LeadmlError(
            f"{meta}: cannot read the simulated period ({exc}); rerun the demo"
        ) from None


def _print_forecast(s: Any, as_of: str) -> None:
    """The batch run's forecast snapshot of the current quarter, in total and per team."""
    import datetime as dt

    from leadml.batch.outputs import ParquetOutputs

    frame = ParquetOutputs(s.outputs_dir).read("forecast", dt.date.fromisoformat(as_of))
    now = frame[(frame["kind"] == "snapshot") & (frame["quarter"] == "current")]
    now = now[now["grouping"].isin(["total", "team"])]
    cols = [
        "won",
        "open_expected",
        "new_expected",
        "expected",
        "p10",
        "p50",
        "p90",
        "target",
        "p_reach_target",
        "coverage",
    ]
    money = set(cols[:8])  # revenue columns print as whole amounts (0, not 0.000)

    def cell(c: str, v: Any) -> float | int:
        v = float(v)
        return round(v) if c in money and math.isfinite(v) else v

    rows = [(r["group"], *(cell(c, r[c]) for c in cols)) for _, r in now.iterrows()]
    period = now["period"].iloc[0] if len(now) else "?"
    source = now["probability_source"].iloc[0] if len(now) else "?"
    common.console().print(
        common.summary_table(
            f"Forecast {period} (open deals: {source}; P10/P50/P90 of revenue booked)",
            [
                "group",
                "won",
                "open (exp.)",
                "new (exp.)",
                "expected",
                "P10",
                "P50",
                "P90",
                "target",
                "P(target)",
                "coverage",
            ],
            rows,
        )
    )
