"""Usage mistakes on the command line: a clear message and exit code 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from leadml.cli import main


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["demo", "--no-such-flag"], "No such option: --no-such-flag"),
        (["simulate", "--leads", "many"], "Invalid value for '--leads'"),
        (["no-such-command"], "No such command 'no-such-command'"),
    ],
)
def test_usage_errors_are_explained_without_a_traceback(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


def test_tables_never_cut_figures() -> None:
    from rich.console import Console

    from leadml.cli.common import fmt, summary_table

    assert [fmt(v, compact=True) for v in (999_999, 999_400, 11_980_922, -1_702_451, 9_999)] == [
        "1.00M",
        "999k",
        "12.0M",
        "-1.70M",
        "9,999",
    ]
    cols = ["group", "won", "open deals", "new deals", "expected", "P10", "P50", "P90"]
    row = ("fs_enterprise", *[12_345_678] * 7)
    for width, shown in ((200, "12,345,678"), (80, "12.3M")):
        out = Console(width=width, record=True)
        out.print(summary_table("Forecast", cols, [row], width=width))
        text = out.export_text()
        assert shown in text and "…" not in text
        assert ("figures rounded" in text) == (width == 80)


def test_command_list_reflows_each_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """`leadml --help` shows each command's first docstring paragraph as one flowing text,
    not cut where the source wraps (e.g. 'too long in stage,' then a new line)."""
    main(["--help"])
    lines = capsys.readouterr().out.splitlines()
    assert any("too long in stage, score drop" in line for line in lines)
    assert any("@challenger. With --table:" in line for line in lines)


def test_serve_on_a_taken_port_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    monkeypatch.setenv("LEADML_WORKSPACE", str(tmp_path))
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as exc:
            main(["serve", "--port", str(port), "--no-import"])
    assert exc.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--help"], "[env LEADML_WORKSPACE; default ./workspace]"),
        (["batch", "--help"], "[env LEADML_BATCH__SQL_URL]"),
        (["report", "--help"], "[default: those the run read]"),
        (["funnel", "--help"], "[default: first day in the data]"),
        (["train", "--help"], "[default models/<model>.yaml]"),
    ],
)
def test_help_shows_bracketed_text_as_written(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """typer renders help as Rich markup, where "[env ...]" or "[default: ...]" is a style
    tag and vanished from the help."""
    monkeypatch.setenv("COLUMNS", "300")
    main(argv)
    assert says in capsys.readouterr().out


def test_every_bracket_in_every_help_text_survives(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import inspect
    import re

    import typer
    from rich.markup import render

    from leadml.cli import app

    monkeypatch.setenv("COLUMNS", "400")
    command = typer.main.get_command(app)

    def walk(cmd: object, path: list[str]):  # type: ignore[no-untyped-def]
        yield path, cmd
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, [*path, name])

    checked = 0
    for path, cmd in walk(command, []):
        texts = [getattr(p, "help", None) for p in getattr(cmd, "params", [])]
        texts.append(inspect.cleandoc(getattr(cmd, "help", None) or ""))
        wanted = [render(t).plain for t in texts if t and re.search(r"\[[a-z#/@]", render(t).plain)]
        if not wanted:
            continue
        main([*path, "--help"])
        shown = " ".join(capsys.readouterr().out.replace("│", " ").split())
        for text in wanted:
            for bracket in re.findall(r"\[[a-z#/@][^\]]*\]", text):
                assert " ".join(bracket.split()) in shown, (path, bracket)
                checked += 1
    assert checked >= 10


def test_escaping_the_help_twice_changes_nothing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second ``_literal_help`` escaped the escapes: ``\\[default: ...]`` in the help."""
    from leadml.cli import _literal_help, app

    monkeypatch.setenv("COLUMNS", "300")
    before = [(c.help, c.short_help) for c in app.registered_commands]
    _literal_help(app)
    assert [(c.help, c.short_help) for c in app.registered_commands] == before
    main(["report", "--help"])
    out = capsys.readouterr().out
    assert "[default: those the run read]" in out and "\\[default" not in out
