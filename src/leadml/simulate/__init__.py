"""THE MODEL company in a box: a deterministic, vectorised simulator with ground truth.

:func:`simulate` writes every canonical table (see :mod:`leadml.contracts`) as Parquet
into a folder (the event log as ``events/part-NNNNN.parquet``) plus ``truth/``:

* ``truth/lead_truth.parquet`` (lead_id, as_of, p_opportunity_30d): for every weekly
  as-of Monday 00:00 UTC whose 30-day window ends inside the simulated period, every
  lead that is open at as_of (created before it; latest status lead / nurturing / mql,
  i.e. not SQL and not disqualified-and-not-yet-recycled) and its exact probability of
  becoming SQL / an opportunity in ``(as_of, as_of + 30 days]`` given its hidden state;
* ``truth/deal_truth.parquet`` (opportunity_id, as_of, period_end, p_won_by): for every
  weekly as-of, every deal open at as_of (created before it, not yet closed) and its
  exact probability of being won at a time < period_end, for the next four quarter
  boundaries after as_of (period_end is the first instant of the next quarter, the
  same convention as ``targets.period_end``) and for as_of + 13 weeks (won within 90
  days, the deal-close model's headline horizon);
* ``truth/hidden.parquet`` (per lead: fit, engagement, tier) and
  ``truth/deal_hidden.parquet`` (per deal: quality);
* ``truth/README.md``: how the truth is computed (from :mod:`leadml.simulate.truth`).

Feature and model code must never read ``truth/``; evaluation code compares with it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

import numpy as np

from leadml.config import SimulatorConfig, Vocabulary
from leadml.errors import ConfigError

__all__ = ["SimulationSummary", "simulate"]


@dataclass
class SimulationSummary:
    """What :func:`simulate` produced: rows per table, run time, realism figures."""

    out_dir: Path
    leads: int
    start: str
    end: str
    seed: int
    seconds: float
    rows: dict[str, int]
    truth_rows: dict[str, int]
    realism: dict[str, float] = field(default_factory=dict)
    reps: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["out_dir"] = str(self.out_dir)
        return out


def _parse_day(value: str, name: str) -> date:
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(
            f"simulator.{name}: {value!r} is not an ISO date (YYYY-MM-DD); "
            "fix the flag or configs/leadml.yaml"
        ) from None


def simulate(
    cfg: SimulatorConfig,
    vocab: Vocabulary,
    out_dir: Path,
    *,
    progress: Callable[[str, float], None] | None = None,
) -> SimulationSummary:
    """Simulate ``cfg.leads`` leads of one company from ``cfg.start`` to ``cfg.end``.

    The simulation runs in whole weeks from the Monday on or before ``start``; the
    last week is the last one that ends by ``end + 1 day``. Leads arrive over the
    whole period (a fifth imported in the first week). ``out_dir`` is replaced
    atomically: the tables are built in a temporary folder beside it and renamed.
    Same ``cfg`` (seed included) -> the same bytes in every file.
    """
    from leadml.simulate import engine, stats
    from leadml.simulate.truth import __doc__ as truth_doc
    from leadml.sources import atomic_path

    _check_vocabulary(vocab)
    start, end = _parse_day(cfg.start, "start"), _parse_day(cfg.end, "end")
    monday = start.toordinal() - start.weekday()
    n_weeks = (end.toordinal() + 1 - monday) // 7
    if n_weeks < 8:
        raise ConfigError(
            f"simulator: the period {cfg.start}..{cfg.end} covers {max(n_weeks, 0)} whole weeks; "
            "give at least 8 weeks (end after start)"
        )
    _check_target(Path(out_dir))
    t0 = time.perf_counter()
    start_us = (monday - date(1970, 1, 1).toordinal()) * engine.DAY_US
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0]))
    company = engine.build_company(cfg.leads, start_us, n_weeks, rng, cfg.is_reps, cfg.fs_reps)
    with atomic_path(Path(out_dir)) as tmp:
        tmp.mkdir(parents=True)
        (tmp / "truth").mkdir()
        sim = engine.Simulation(company, tmp, cfg.seed, cfg.weekly_slots, progress)
        sim.run()
        if progress:
            progress("writing tables", 0.0)
        rows = sim.write_tables()
        truth_rows = sim.write_truth_extras(truth_doc or "")
        realism = stats.realism(sim)
        summary = SimulationSummary(
            out_dir=Path(out_dir),
            leads=cfg.leads,
            start=str(np.datetime64(int(start_us), "us").astype("datetime64[D]")),
            end=str(np.datetime64(int(sim.end_us), "us").astype("datetime64[D]")),
            seed=cfg.seed,
            seconds=0.0,
            rows=rows,
            truth_rows=truth_rows,
            realism=realism,
            reps={"IS": int(company.is_reps.sum()), "FS": int(company.fs_reps.sum())},
        )
        meta = summary.to_dict()
        meta.pop("seconds")
        meta.pop("out_dir")  # the same company must be the same bytes wherever it is written
        (tmp / "simulation.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        if progress:
            progress("writing tables", 1.0)
    summary.seconds = time.perf_counter() - t0
    return summary


def _check_target(out_dir: Path) -> None:
    """The output folder is replaced whole, so only a new or empty folder or an earlier
    simulator output (it has ``simulation.json``) may be given."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"simulate output {out_dir} is a file; pass --out with a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "simulation.json").exists():
        raise ConfigError(
            f"simulate output {out_dir} is a non-empty folder that is not an earlier simulation "
            "and would be replaced whole; pass --out with a new or empty folder"
        )


def _check_vocabulary(vocab: Vocabulary) -> None:
    """The simulator speaks THE MODEL's default words; a renamed vocabulary would
    make its output fail the contracts, so say so up front."""
    from leadml.simulate import engine

    default = Vocabulary()
    wanted = {
        "event_types": engine.EVENT_TYPES,
        "lead_statuses": engine.LEAD_STATUSES,
        "activity_types": engine.ACTIVITY_TYPES,
        "stages": engine.STAGES,
        "segments": engine.mdl.SEGMENTS,
        "page_categories": engine.mdl.PAGE_CATEGORIES,
    }
    for name, words in wanted.items():
        have = getattr(vocab, name)
        missing = [w for w in words if w not in have]
        if missing:
            raise ConfigError(
                f"vocabulary.{name} lacks {', '.join(missing)}, which the simulator writes; "
                f"keep the defaults ({', '.join(getattr(default, name))}) "
                "in configs/leadml.yaml to simulate"
            )
