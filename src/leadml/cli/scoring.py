"""``leadml score-table``: score the rows of an attribute-only lead table (this month's
new leads) with a model trained on such a table by ``leadml train --table``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from leadml.cli import common
from leadml.errors import LeadmlError

DEFAULT_MODEL = "lead_readiness_table"
OUT_SUFFIXES = (".csv", ".parquet", ".pq")
# Run tags `leadml train --table` records: how the training table was read.
TARGET_TAG = "leadml.table.target"
MISSING_TAG = "leadml.table.missing_values"
TOP_ROWS = 5


def register(app: typer.Typer) -> None:
    app.command("score-table")(score_table)


@dataclass
class Resolved:
    """The registered version to score with and how its training table was read."""

    name: str
    version: str
    alias: str | None
    target: str | None = None
    missing_values: str | None = None
    recorded: bool = False  # the run carries the table tags
    aliases: list[str] = field(default_factory=list)


def resolve_version(name: str, version: str | None) -> Resolved:
    """``version``: a number, an alias (``challenger`` or ``@challenger``) or None for
    ``@champion``; a clear error when the model, the version or the alias is absent."""
    from leadml import tracking

    with tracking.store_errors():
        cl = tracking.client()
        try:
            rm = cl.get_registered_model(name)
        except Exception as exc:
            if not tracking.is_missing(exc):
                raise
            known = sorted(m.name for m in cl.search_registered_models())
            import difflib

            close = difflib.get_close_matches(name, known, n=1)
            raise LeadmlError(
                f"no registered model {name!r}"
                + (f" (did you mean {close[0]!r}?)" if close else "")
                + f"; known: {', '.join(known) or 'none'}. Train and promote one first: "
                f"`leadml train --table FILE --target COL --name {name}`, then "
                f"`leadml promote {name}`"
            ) from None
        aliases = dict(rm.aliases or {})
        alias: str | None = None
        if version is None or not version.lstrip("@").isdigit():
            alias = (version or "champion").lstrip("@")
            if alias not in aliases:
                versions = sorted(
                    int(mv.version) for mv in cl.search_model_versions(f"name = '{name}'")
                )
                held = ", ".join(f"@{a} = v{v}" for a, v in sorted(aliases.items())) or "none"
                how = (
                    f"promote a version first: `leadml promote {name}` (gate-checked; it "
                    "promotes @challenger), or score one with --version N"
                    if alias == "champion"
                    else "pass --version N"
                )
                raise LeadmlError(
                    f"registered model {name!r} has no @{alias}; {how} (versions: "
                    f"{', '.join(map(str, versions)) or 'none'}; aliases: {held})"
                )
            version = str(aliases[alias])
        try:
            mv = cl.get_model_version(name, version)
        except Exception as exc:
            if not tracking.is_missing(exc):
                raise
            raise LeadmlError(
                f"registered model {name!r} has no version {version}; list versions with "
                "`leadml models`"
            ) from None
        tags: dict[str, str] = {}
        if mv.run_id:
            try:
                tags = dict(cl.get_run(mv.run_id).data.tags)
            except Exception as exc:
                if not tracking.is_missing(exc):
                    raise
    return Resolved(
        name,
        str(mv.version),
        alias,
        target=tags.get(TARGET_TAG) or None,
        missing_values=tags.get(MISSING_TAG) or None,
        recorded=TARGET_TAG in tags,
        aliases=sorted(a for a, v in aliases.items() if str(v) == str(mv.version)),
    )


def _out_path(s: Any, file: Path, out: Path | None) -> Path:
    target = out if out is not None else s.workspace / "scores" / f"{file.stem}_scores.csv"
    target = target.expanduser()
    if target.suffix.lower() not in OUT_SUFFIXES:
        raise LeadmlError(
            f"--out {target}: write scores to a .csv or .parquet file (the extension picks "
            "the format)"
        )
    if target.resolve() == file.expanduser().resolve():
        raise LeadmlError(f"--out {target} is the input file; write the scores to another file")
    if target.is_dir():
        raise LeadmlError(f"--out {target} is a folder; give a file name ending .csv or .parquet")
    return target


def _write(scores: Any, target: Path) -> None:
    """CSV or Parquet by extension, atomically (a temporary file renamed into place)."""
    from leadml.sources import atomic_path

    try:
        with atomic_path(target) as tmp:
            if target.suffix.lower() == ".csv":
                scores.to_csv(tmp, index=False)
            else:
                scores.to_parquet(tmp, index=False)
    except OSError as exc:
        raise LeadmlError(
            f"--out {target}: cannot write there ({exc.strerror or exc}); choose a folder "
            "that exists and that you can write to"
        ) from None


def score_table(
    ctx: typer.Context,
    file: Path = typer.Argument(
        ..., help="CSV (delimiter sniffed) or Parquet, one lead a row; no outcome needed"
    ),
    model: str = typer.Option(
        DEFAULT_MODEL, "--model", help="Registered model trained by `leadml train --table`"
    ),
    version: str | None = typer.Option(
        None,
        "--version",
        help="Version number or alias, e.g. challenger (default: @champion)",
    ),
    id_column: str | None = typer.Option(
        None, "--id-column", help="Column echoed with each score (default: row numbers 1..n as row)"
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Scores file, .csv or .parquet (default: <workspace>/scores/<FILE>_scores.csv)",
    ),
    missing_values: str | None = typer.Option(
        None,
        "--missing-values",
        help='Values meaning "missing", as for train --table (default: those the model was '
        "trained with)",
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable summary"),
) -> None:
    """Score a lead table (e.g. this month's new leads) with a model trained by `leadml
    train --table`: probability, grade, percentile and top reasons per row, to CSV/Parquet."""
    from leadml import tracking
    from leadml.cli.models import _quiet_mlflow
    from leadml.importing.tabular import read_lead_table
    from leadml.importing.tabular import score_table as score_rows
    from leadml.modeling.bundle import ScoringBundle

    s = common.settings(ctx)
    _quiet_mlflow()
    name = model.replace("-", "_")
    target = _out_path(s, file, out)  # before any work
    df = read_lead_table(file)
    tracking.readable_store(s)  # a missing store is an error, not a new empty one
    tracking.configure(s)
    found = resolve_version(name, version)
    bundle = ScoringBundle.load(f"models:/{name}/{found.version}")
    notes: list[str] = []
    sentinels = missing_values
    if missing_values is None and found.missing_values:
        sentinels = found.missing_values
        notes.append(f"missing values as at training: --missing-values {found.missing_values!r}")
    elif (
        missing_values is not None
        and found.recorded
        and missing_values != (found.missing_values or "")
    ):
        notes.append(
            f"the model was trained with --missing-values {found.missing_values or '(none)'!r}; "
            f"this run reads {missing_values!r}"
        )
    elif missing_values is None and not found.recorded:
        notes.append(
            f"{name} v{found.version} does not record how its training table was read (trained "
            "before leadml recorded it): give the same --missing-values as at training"
        )
    result = score_rows(
        df,
        bundle,
        id_column=id_column,
        missing_values=sentinels,
        target=found.target,
        source=str(file),
    )
    notes += result.notes
    scores = result.scores
    _write(scores, target)
    grades = (
        {str(k): int(v) for k, v in scores["grade"].value_counts().sort_index().items()}
        if "grade" in scores.columns
        else {}
    )
    top = scores.sort_values("probability", ascending=False, kind="stable").head(TOP_ROWS)
    which = f"v{found.version}" + (f" (@{found.alias})" if found.alias else "")
    if as_json:
        common.emit_json(
            {
                "file": str(file),
                "out": str(target),
                "model": name,
                "version": found.version,
                "alias": found.alias,
                "aliases": found.aliases,
                "rows": len(scores),
                "mean_probability": float(scores["probability"].mean()),
                "grades": grades,
                "id_column": result.id_column,
                "features": list(bundle.features),
                "notes": notes,
                "top": top.to_dict(orient="records"),
            }
        )
        return
    err = common.err_console()
    for note in notes:
        err.print(f"[yellow]note:[/] {note}", highlight=False, markup=True)
    con = common.console()
    summary = [
        ("rows scored", len(scores)),
        ("mean probability", float(scores["probability"].mean())),
        *((f"grade {g}", n) for g, n in grades.items()),
    ]
    con.print(f"{file.name}: scored by {name} {which}", highlight=False, markup=False)
    con.print(common.summary_table("", ["summary", "value"], summary))
    cols = [
        c for c in (result.id_column, "probability", "grade", "percentile", "reasons") if c in top
    ]
    con.print(
        common.summary_table(
            f"Top {len(top)} by probability",
            cols,
            top[cols].itertuples(index=False, name=None),
        )
    )
    con.print(f"scores: {target}")
