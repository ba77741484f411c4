"""The ``leadml`` command line: a thin layer that parses flags, loads the
settings once and calls library functions.

Each area registers its commands from its own module (``data``, ...); this
module holds the app, the global options and the shared output helpers.
User errors (:class:`leadml.errors.LeadmlError`) end with a message and a
non-zero exit code, never a traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich.markup import escape

from leadml.cli import analytics as analytics_commands
from leadml.cli import batch as batch_commands
from leadml.cli import common
from leadml.cli import data as data_commands
from leadml.cli import demo as demo_commands
from leadml.cli import features as features_commands
from leadml.cli import forecast as forecast_commands
from leadml.cli import importing as importing_commands
from leadml.cli import models as models_commands
from leadml.cli import scoring as scoring_commands
from leadml.cli import serve as serve_commands
from leadml.cli import simulate as simulate_commands
from leadml.errors import LeadmlError

app = typer.Typer(
    name="leadml",
    help="Lead scoring, deal close probability and revenue forecasting for THE MODEL companies.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _global(
    ctx: typer.Context,
    workspace: Path | None = typer.Option(
        None,
        "--workspace",
        "-w",
        help="Folder for all generated state [env LEADML_WORKSPACE; default ./workspace]",
    ),
    config_dir: Path | None = typer.Option(
        None,
        "--config-dir",
        help="Folder with leadml.yaml and features.yaml [env LEADML_CONFIG_DIR]",
    ),
) -> None:
    ctx.obj = common.Context(workspace=workspace, config_dir=config_dir)
    # MLflow prints "View run ... at: <url>" to stdout after every run against a server,
    # which broke --json output; leadml prints the run id and the UI itself
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


for _module in (
    demo_commands,
    data_commands,
    analytics_commands,
    importing_commands,
    features_commands,
    serve_commands,
    batch_commands,
    simulate_commands,
    forecast_commands,
    models_commands,
    scoring_commands,
):
    _module.register(app)


def _one_line_summaries(typer_app: typer.Typer) -> None:
    """The command list shows each docstring's first paragraph as one reflowed line
    (typer keeps the source's line breaks there, splitting sentences mid-line)."""
    for info in typer_app.registered_commands:
        doc = info.callback.__doc__ if info.callback else None
        if info.short_help is None and doc:
            info.short_help = " ".join(doc.strip().split("\n\n")[0].split())


_one_line_summaries(app)


# the help objects _literal_help has escaped, by id (kept here, so no id is reused; typer
# copies these objects' attributes into constructors, so they cannot carry a mark)
_ESCAPED: dict[int, object] = {}


def _first_time(obj: object) -> bool:
    """Whether ``obj``'s help is not escaped yet (and remember that it now is)."""
    if id(obj) in _ESCAPED:
        return False
    _ESCAPED[id(obj)] = obj
    return True


def _escape_params(callback: object) -> None:
    import inspect

    from typer.models import ParameterInfo

    if not callable(callback):
        return
    for param in inspect.signature(callback).parameters.values():
        infos = [param.default, *getattr(param.annotation, "__metadata__", ())]
        for info in infos:
            if isinstance(info, ParameterInfo) and info.help and _first_time(info):
                info.help = escape(info.help)


def _literal_help(typer_app: typer.Typer) -> None:
    """Help texts are plain text: ``[env LEADML_WORKSPACE; default ./workspace]`` or
    ``[default: ...]`` must show as written, but typer renders help as Rich markup, where
    a bracketed word starting in lower case is a style tag and vanishes. Escape every
    help text once (options, arguments, command docstrings and summaries, sub-groups):
    each object escaped is marked, so a second call (or a callback registered twice)
    does not escape it again."""
    import inspect

    def escape_command(info: typer.models.CommandInfo | typer.models.TyperInfo) -> None:
        if not _first_time(info):
            return
        doc = inspect.getdoc(info.callback) if info.callback else None
        if isinstance(info.help, str):
            info.help = escape(info.help)
        elif doc and escape(doc) != doc:
            info.help = escape(doc)
        if isinstance(info, typer.models.CommandInfo) and isinstance(info.short_help, str):
            info.short_help = escape(info.short_help)
        _escape_params(info.callback)

    for command in typer_app.registered_commands:
        escape_command(command)
    if typer_app.registered_callback is not None:
        escape_command(typer_app.registered_callback)
    for group in typer_app.registered_groups:
        escape_command(group)
        if group.typer_instance is not None:
            _literal_help(group.typer_instance)


_literal_help(app)


INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C


def _interrupted() -> None:
    common.err_console().print("[bold red]interrupted[/]", highlight=False, markup=True)
    sys.exit(INTERRUPTED)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        # with standalone_mode=False typer turns Ctrl-C into a *returned* 130
        code = app(args=argv, standalone_mode=False)
        if code == INTERRUPTED:
            _interrupted()
        if isinstance(code, int) and code:
            sys.exit(code)
    except LeadmlError as err:
        common.err_console().print(
            f"[bold red]error:[/] {escape(str(err))}", highlight=False, markup=True
        )
        sys.exit(err.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        _interrupted()
    except SystemExit:
        raise
    except Exception as err:  # usage errors (unknown option, bad value) carry their exit code
        import click

        # typer >= 0.23 raises its own vendored click's exceptions (TyperException subclasses)
        if isinstance(err, click.ClickException | typer.TyperException) and hasattr(err, "show"):
            err.show()
            sys.exit(getattr(err, "exit_code", 2))
        if type(err).__module__.startswith("mlflow"):  # a store failure outside leadml.tracking
            from leadml.tracking import store_errors

            try:
                with store_errors():
                    raise err
            except LeadmlError as clear:
                common.err_console().print(
                    f"[bold red]error:[/] {escape(str(clear))}", highlight=False, markup=True
                )
                sys.exit(clear.exit_code)
        raise


if __name__ == "__main__":
    main()
