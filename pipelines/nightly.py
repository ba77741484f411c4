#!/usr/bin/env python
"""The nightly batch as a script for cron or any scheduler.

    python pipelines/nightly.py --as-of 2025-06-02 [--workspace W] [--data D]
        [--sql-url URL] [--quarantine] [--report]

is ``leadml batch --as-of D`` (same options; with ``--report`` the run also writes
the report, as ``leadml report --as-of D``).
Without ``--as-of`` it runs for today (UTC), reading only what was recorded before
midnight. Exit code 0 on success, 2 on a user error (bad data, no champion), so a
scheduler can alert on failure; a failed run leaves yesterday's outputs intact.
Example crontab line (02:00 UTC every night):

    0 2 * * * cd /srv/leadml && .venv/bin/python pipelines/nightly.py --report
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--as-of", default=datetime.now(UTC).date().isoformat(), help="run date (ISO)"
    )
    parser.add_argument("--workspace", help="workspace folder [env LEADML_WORKSPACE]")
    parser.add_argument("--config-dir", help="folder with leadml.yaml [env LEADML_CONFIG_DIR]")
    parser.add_argument("--data", help="input tables (folder or DuckDB file)")
    parser.add_argument(
        "--sql-url", help="SQLAlchemy URL for the output tables [env LEADML_BATCH__SQL_URL]"
    )
    parser.add_argument(
        "--quarantine",
        action="store_true",
        help="set bad input rows aside (with reasons) instead of stopping",
    )
    parser.add_argument("--report", action="store_true", help="also write the HTML report")
    args = parser.parse_args(argv)

    from leadml.cli import main as leadml

    common = []
    if args.workspace:
        common += ["--workspace", args.workspace]
    if args.config_dir:
        common += ["--config-dir", args.config_dir]
    data = ["--data", args.data] if args.data else []
    options = ["--sql-url", args.sql_url] if args.sql_url else []
    if args.quarantine:
        options.append("--quarantine")
    if args.report:
        options.append("--report")
    try:
        leadml([*common, "batch", "--as-of", args.as_of, *data, *options])
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            raise
    sys.exit(0)


if __name__ == "__main__":
    main()
