"""Usage mistakes on the command line: a clear message and exit code 2, no traceback."""

from __future__ import annotations

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
