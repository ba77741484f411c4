"""Feature and training-set commands: ``leadml features`` and ``leadml dataset``."""

from __future__ import annotations

import re
import time
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from leadml.cli import common


class EntityChoice(StrEnum):
    lead = "lead"
    opportunity = "opportunity"


class DatasetChoice(StrEnum):
    lead_readiness = "lead-readiness"
    deal_close = "deal-close"


def register(app: typer.Typer) -> None:
    app.command("features")(features)
    app.command("dataset")(dataset)


def _every_days(text: str) -> int:
    from leadml.errors import LeadmlError

    m = re.fullmatch(r"\s*([1-9][0-9]*)\s*([dw]?)\s*", text)
    if not m:
        raise LeadmlError(f"--every: {text!r} is not a period; use e.g. 7d, 14d or 1w")
    return int(m[1]) * (7 if m[2] == "w" else 1)


def _write(df: Any, out: Path) -> Path:
    from leadml.errors import LeadmlError
    from leadml.sources import atomic_path, write_parquet

    suffix = out.suffix.lower()
    if suffix == ".parquet":
        return write_parquet(df, out)
    if suffix == ".csv":
        with atomic_path(out) as tmp:
            df.to_csv(tmp, index=False)
        return out
    raise LeadmlError(f"--out {out}: unknown file type {suffix or '(none)'}; use .parquet or .csv")


def _read_spine(path: Path, entity: str, as_of: str | None) -> Any:
    import pandas as pd

    from leadml.errors import LeadmlError

    if not path.exists():
        raise LeadmlError(f"--spine {path} does not exist")
    spine = (
        pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path, dtype=str)
    )
    eid = f"{entity}_id"
    if eid not in spine.columns:
        raise LeadmlError(f"--spine {path}: no column {eid} (columns: {', '.join(spine.columns)})")
    if "as_of" not in spine.columns:
        if as_of is None:
            raise LeadmlError(f"--spine {path}: no as_of column; add one or pass --as-of")
        spine["as_of"] = as_of
    return spine[[eid, "as_of"]]


def features(
    ctx: typer.Context,
    entity: EntityChoice = typer.Argument(..., help="lead or opportunity"),
    out: Path = typer.Option(..., "--out", help="Output file (.parquet or .csv)"),
    as_of: str | None = typer.Option(
        None, "--as-of", help="ISO date/time (UTC); reads only records before it"
    ),
    data: Path | None = typer.Option(
        None, "--data", help="Folder of CSV/Parquet tables or a DuckDB file"
    ),
    spine: Path | None = typer.Option(
        None,
        "--spine",
        help="CSV/Parquet of <entity>_id[, as_of]; default: every entity created before --as-of",
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable summary"),
) -> None:
    """Compute every catalog feature of leads or opportunities as of a date (point in time)."""
    import pandas as pd

    from leadml.errors import LeadmlError
    from leadml.features.catalog import load_catalog
    from leadml.features.labels import to_timestamp
    from leadml.features.offline import compute_features

    s = common.settings(ctx)
    catalog = load_catalog(
        s.config_file("features.yaml"), s.vocabulary
    )  # fails before reading data
    if as_of is None and spine is None:
        raise LeadmlError("give --as-of (a date) or --spine (a file of ids and as_of times)")
    if as_of is not None:
        to_timestamp(as_of, "--as-of")  # ISO only, checked before reading any data
    t0 = time.perf_counter()
    with common.progress() as bar:
        task = bar.add_task("reading tables", total=3)
        con = common.open_data(s, data)
        bar.update(task, advance=1, description="building the spine")
        entity_name = entity.value
        if spine is not None:
            frame = _read_spine(spine, entity_name, as_of)
        else:
            t = to_timestamp(as_of or "", "--as-of")
            table = "leads" if entity_name == "lead" else "opportunities"
            frame = con.execute(
                f"SELECT {entity_name}_id FROM {table} WHERE created_at < ? "
                f"ORDER BY {entity_name}_id",
                [t],
            ).df()
            frame["as_of"] = pd.Series([t] * len(frame), dtype="datetime64[us, UTC]")
        bar.update(
            task, advance=1, description=f"computing {len(catalog.names(entity_name))} features"
        )
        df = compute_features(con, catalog, entity_name, frame)
        _write(df, out)
        bar.update(task, advance=1)
        con.close()
    summary = {
        "entity": entity_name,
        "rows": len(df),
        "features": len(catalog.names(entity_name)),
        "as_of": as_of,
        "out": str(out),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if as_json:
        common.emit_json(summary)
        return
    common.console().print(
        common.summary_table(f"{entity_name} features", ["what", "value"], list(summary.items()))
    )


def dataset(
    ctx: typer.Context,
    kind: DatasetChoice = typer.Argument(..., help="lead-readiness or deal-close"),
    out: Path = typer.Option(..., "--out", help="Output file (.parquet or .csv)"),
    start: str | None = typer.Option(
        None, "--start", help="First as-of date (ISO); default: first lead"
    ),
    end: str | None = typer.Option(None, "--end", help="Last as-of date (ISO); default: data end"),
    every: str = typer.Option(
        "7d", "--every", help="Spacing of as-of dates (Mondays 00:00 UTC), e.g. 7d"
    ),
    horizon: int = typer.Option(30, "--horizon", help="lead-readiness: label window in days"),
    data: Path | None = typer.Option(
        None, "--data", help="Folder of CSV/Parquet tables or a DuckDB file"
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable summary"),
) -> None:
    """Build a point-in-time training set of weekly snapshots with labels."""
    from leadml.features.catalog import load_catalog
    from leadml.features.datasets import deal_close_dataset, lead_readiness_dataset
    from leadml.modeling.workflow import DATASET_HORIZON, DATASET_KIND
    from leadml.sources import frame_writer

    s = common.settings(ctx)
    catalog = load_catalog(s.config_file("features.yaml"), s.vocabulary)
    every_days = _every_days(every)
    if out.suffix.lower() not in (".parquet", ".csv"):
        _write(None, out)  # raises the clear error before any work
    with common.progress() as bar:
        task = bar.add_task("reading tables", total=None)
        con = common.open_data(s, data)

        def report(done: int, total: int, message: str) -> None:
            bar.update(task, completed=done, total=total, description=message)

        made = {DATASET_KIND: kind.value.replace("-", "_")}
        if kind is DatasetChoice.lead_readiness:
            made[DATASET_HORIZON] = str(horizon)
        with frame_writer(out, metadata=made) as sink:
            if kind is DatasetChoice.lead_readiness:
                _, summary = lead_readiness_dataset(
                    con,
                    catalog,
                    start=start,
                    end=end,
                    every_days=every_days,
                    horizon_days=horizon,
                    progress=report,
                    sink=sink,
                )
            else:
                _, summary = deal_close_dataset(
                    con,
                    catalog,
                    start=start,
                    end=end,
                    every_days=every_days,
                    progress=report,
                    sink=sink,
                )
        con.close()
    payload = {**summary.as_dict(), "out": str(out)}
    if as_json:
        common.emit_json(payload)
        return
    rows: list[tuple[str, Any]] = [
        ("rows", summary.rows),
        ("features", summary.features),
        ("as-of dates written", summary.as_of_dates),
        ("first / last as-of written", f"{summary.start} / {summary.end}"),
        ("data end", summary.data_end),
    ]
    if summary.dropped_as_of_dates:
        rows.append(
            (
                "as-of dates without rows",
                f"{summary.dropped_as_of_dates} ({summary.dropped_start} .. "
                f"{summary.dropped_end}; see excluded)",
            )
        )
    if summary.outcomes:
        rows += [(f"outcome {k}", v) for k, v in summary.outcomes.items()]
    else:
        rows.append(("positives", summary.positives))
    rows += [(f"excluded: {k}", v) for k, v in summary.excluded.items()]
    rows += [("seconds", summary.seconds), ("written to", str(out))]
    common.console().print(
        common.summary_table(f"{summary.name} training set", ["what", "value"], rows)
    )
