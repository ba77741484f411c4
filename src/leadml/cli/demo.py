"""``leadml demo``: the README's main job, THE MODEL loop on the embedded simulated company.

Each step is the same command a user would run by hand; the demo only chains them
with the defaults, so what it prints is what those commands print.
"""

from __future__ import annotations

import time

import typer

from leadml.cli import common


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)


def demo_command(
    ctx: typer.Context,
    leads: int | None = typer.Option(None, "--leads", help="Size of the simulated company"),
    seed: int | None = typer.Option(None, "--seed", help="Random seed"),
) -> None:
    """Simulate a company, validate it and print its funnel."""
    from leadml.cli.analytics import funnel_command
    from leadml.cli.data import validate
    from leadml.cli.simulate import simulate_command

    out = common.console()
    s = common.settings(ctx)
    timings: list[tuple[str, float]] = []

    def step(title: str, func, **kwargs) -> None:  # type: ignore[no-untyped-def]
        out.rule(f"[bold]{title}")
        t0 = time.perf_counter()
        ctx.invoke(func, ctx, **kwargs)
        timings.append((title, time.perf_counter() - t0))

    step("1. simulate the company", simulate_command, leads=leads, seed=seed, start=None, end=None,
         out=None, as_json=False)
    step("2. validate its tables", validate, data=None, quarantine=False, as_json=False)
    step("3. funnel: where is the bottleneck?", funnel_command, data=None, start=None, end=None,
         by=None, as_json=False)
    out.rule("[bold]done")
    out.print(common.summary_table("Demo steps", ["step", "seconds"], timings))
    out.print(f"workspace: {s.workspace}")
