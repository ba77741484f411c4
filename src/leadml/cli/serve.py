"""Serving commands: ``leadml serve`` (the online API) and ``leadml build`` (a bento)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from leadml.cli import common

if TYPE_CHECKING:
    from leadml.config import Settings
    from leadml.serving.store import ImportedModel


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("build")(build)


def serve(
    ctx: typer.Context,
    port: int | None = typer.Option(
        None, "--port", "-p", min=1, max=65535, help="Port (default: serving.port, 3000)"
    ),
    host: str | None = typer.Option(
        None, "--host", help="Interface to bind (default: serving.host, 127.0.0.1: loopback only)"
    ),
    no_import: bool = typer.Option(
        False,
        "--no-import",
        help="Serve what the BentoML store holds; do not import the champions first",
    ),
) -> None:
    """Start the scoring API from the MLflow champions (imported into the BentoML store first).

    A new champion is picked up on restart. Stop with Ctrl-C.
    """
    from leadml.serving.launch import check_port_free, run_server

    s = common.settings(ctx)
    check_port_free(s, host, port)  # before the import: fail fast
    if no_import:
        from leadml.serving.store import STORE_NAMES, bentoml_env, latest_stored

        bentoml_env(s)
        for name in STORE_NAMES:  # what the server would load: a clear error, not BentoML's
            latest_stored(name)
    imported = [] if no_import else _import(s)
    if imported:
        common.err_console().print(
            common.summary_table(
                "Champions in the BentoML store",
                ["model", "registry", "version", "copied"],
                [
                    (m.store_tag, m.registry_name, m.registry_version, "yes" if m.copied else "no")
                    for m in imported
                ],
            )
        )
    raise typer.Exit(run_server(s, host=host, port=port))


def build(
    ctx: typer.Context,
    version: str | None = typer.Option(
        None, "--version", help="Bento version (default: generated)"
    ),
    export: Path | None = typer.Option(
        None,
        "--export",
        help="Also write one .bento archive with the code and the models to this path",
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Build the API's bento with `bentoml build`: service code, configs, pinned packages,
    and the two champion models' tags (the models stay in the BentoML store; --export
    writes one archive with code and models for another machine)."""
    from leadml.serving.launch import build_bento

    s = common.settings(ctx)
    imported = _import(s)
    bento = build_bento(s, version=version, export=export)
    if as_json:
        common.emit_json(
            {
                "bento": bento.tag,
                "path": bento.path,
                "models": bento.models,
                "archive": bento.archive,
                "imported": [m.__dict__ for m in imported],
            }
        )
        return
    common.console().print(
        common.summary_table(
            "Bento",
            ["bento", "path", "models", "archive"],
            [(bento.tag, str(bento.path), ", ".join(bento.models), bento.archive or "-")],
        )
    )


def _import(s: Settings) -> list[ImportedModel]:
    from leadml.serving.store import import_champions

    return import_champions(s)
