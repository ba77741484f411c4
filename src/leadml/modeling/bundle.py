"""The scoring bundle: the one unit that moves between training, batch and serving.

A bundle is a folder with ``bundle.json`` (features and their categories, the
calibrator, reason label templates, the feature catalog as data, the input
schema, the training-distribution reference for percentiles and drift checks,
grade cut-offs, metadata) and ``booster.txt`` (the LightGBM model). It is
logged to MLflow as a pyfunc model (:class:`BundleModel`) with a signature and
a synthetic input example, and registered as ``lead_readiness`` /
``deal_close``.

Batch and serving can skip pyfunc: ``ScoringBundle.load("models:/lead_readiness@champion")``
returns the same object the pyfunc wraps, and ``score`` gives the same numbers.

Scores are for the rows' own as-of times: the input holds feature values as
of T (computed by :mod:`leadml.features`), the output is the calibrated
probability for ``(T, T + horizon]``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from leadml.errors import DataError, LeadmlError
from leadml.modeling.calibrate import Calibrator
from leadml.modeling.explain import top_reasons
from leadml.modeling.policy import grade
from leadml.modeling.train import (
    CategoryEncoder,
    DealCloseModel,
    ReadinessModel,
    TrainingResult,
)

FORMAT_VERSION = 1
BUNDLE_FILE = "bundle.json"
# Days of the latest training snapshots that make the score and feature reference.
REFERENCE_DAYS = 28
BOOSTER_FILE = "booster.txt"


def _reference(
    frame: pd.DataFrame,
    features: list[str],
    categorical: list[str],
    scores: np.ndarray,
    bins: int = 10,
) -> dict[str, Any]:
    """Score quantiles (percentiles) and per-feature bins with shares (drift checks)."""
    q = np.quantile(scores, np.linspace(0, 1, 101)) if len(scores) else np.zeros(101)
    feats: dict[str, Any] = {}
    for f in features:
        col = frame[f]
        if f in categorical:
            shares = col.astype("string").fillna("__missing__").value_counts(normalize=True)
            feats[f] = {
                "type": "categorical",
                "shares": {str(k): float(v) for k, v in shares.items()},
            }
        else:
            x = pd.to_numeric(col, errors="coerce").to_numpy(dtype=float)
            finite = x[np.isfinite(x)]
            edges = (
                np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)))
                if len(finite)
                else np.array([])
            )
            inner = edges[1:-1]
            counts = np.bincount(
                np.searchsorted(inner, finite, side="right"), minlength=len(inner) + 1
            )
            feats[f] = {
                "type": "numeric",
                "edges": inner.tolist(),
                "shares": (counts / max(len(x), 1)).tolist(),
                "missing_share": float(1 - len(finite) / max(len(x), 1)),
            }
    return {"score_quantiles": q.tolist(), "features": feats}


def _schema(features: list[str], categorical: list[str]) -> list[dict[str, str]]:
    return [{"name": f, "type": "string" if f in categorical else "double"} for f in features]


@dataclass
class ScoringBundle:
    """Everything needed to turn a feature row into a calibrated, explained score."""

    name: str
    kind: str
    features: list[str]
    categories: dict[str, list[str]]
    booster_text: str = field(repr=False)
    rounds: int
    calibrator: dict[str, Any]
    reference: dict[str, Any] = field(repr=False)
    templates: dict[str, str] = field(default_factory=dict)
    catalog: dict[str, Any] | None = field(default=None, repr=False)
    grade_cutoffs: dict[str, float] | None = None
    hazard: dict[str, Any] | None = None
    id_column: str = "lead_id"
    meta: dict[str, Any] = field(default_factory=dict)
    _model: Any = field(default=None, init=False, repr=False, compare=False)

    # ------------------------------------------------------------ building
    @classmethod
    def from_training(
        cls,
        result: TrainingResult,
        *,
        templates: dict[str, str] | None = None,
        catalog: dict[str, Any] | None = None,
    ) -> ScoringBundle:
        """Bundle the final model of a training run."""
        spec, model = result.spec, result.model
        categorical = model.encoder.categorical
        hazard = None
        if isinstance(model, DealCloseModel):
            hazard = {
                "week_days": model.week_days,
                "max_weeks": model.max_weeks,
                "horizon_days": model.horizon_days,
                "shift_features": model.shift_features,
                "calendar": model.calendar,
                "calibration": model.hazard_calibration,
            }
        bundle = cls(
            name=spec.name,
            kind=spec.kind,
            features=list(model.features),
            categories=dict(model.encoder.categories_),
            booster_text=model.booster.model_to_string(),
            rounds=int(model.rounds),
            calibrator=model.calibrator.to_dict(),
            reference={},
            templates=dict(templates or {}),
            catalog=catalog,
            grade_cutoffs={str(k): float(v) for k, v in spec.policy.grade_cutoffs.items()}
            if spec.kind == "lead_readiness"
            else None,
            hazard=hazard,
            id_column=spec.id_column,
            meta={
                "format_version": FORMAT_VERSION,
                "spec": spec.model_dump(mode="json"),
                "data_window": [
                    result.data_window[0].isoformat(),
                    result.data_window[1].isoformat(),
                ],
                "rows": result.rows,
                "positives": result.positives,
                "feature_hash": result.feature_hash,
                "schema": _schema(model.features, categorical),
            },
        )
        # The reference that percentiles and drift checks compare tonight with: the most
        # recent training snapshots, scored by this final model. Not the whole window
        # (cumulative features such as deal counts grow over time and would always look
        # drifted) and not the backtest folds' out-of-sample scores (other models, other
        # calibrators: a stable population would look drifted against them).
        frame = result.train_frame
        recent = frame[frame["as_of"] >= frame["as_of"].max() - pd.Timedelta(days=REFERENCE_DAYS)]
        scores = bundle.predict_proba(recent)
        bundle.reference = _reference(recent, model.features, categorical, scores)
        bundle.meta["reference_window"] = [
            recent["as_of"].min().isoformat(),
            recent["as_of"].max().isoformat(),
        ]
        return bundle

    # ------------------------------------------------------------ storage
    def save(self, path: str | Path) -> Path:
        """Write the bundle folder atomically."""
        from leadml.sources import atomic_path

        path = Path(path)
        data = {k: v for k, v in self.__dict__.items() if k not in ("booster_text", "_model")}
        with atomic_path(path) as tmp:
            tmp.mkdir(parents=True)
            (tmp / BOOSTER_FILE).write_text(self.booster_text)
            (tmp / BUNDLE_FILE).write_text(json.dumps(data, indent=1, default=str))
        return path

    @classmethod
    def load(cls, uri: str | Path) -> ScoringBundle:
        """From a bundle folder, an MLflow model folder, or any MLflow model URI
        (``models:/lead_readiness@champion``, ``runs:/<id>/model``)."""
        local = Path(str(uri))
        if not local.exists():
            import mlflow

            from leadml.tracking import ensure_configured

            ensure_configured()
            try:
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=str(uri)))
            except Exception as err:  # MLflow raises several types for a bad URI
                raise LeadmlError(
                    f"cannot load scoring bundle {uri}: {err}; check "
                    "the model name/alias with `leadml models`"
                ) from None
        folder = _find_bundle(local)
        if folder is None:
            raise LeadmlError(f"{uri} holds no leadml scoring bundle ({BUNDLE_FILE} not found)")
        data = json.loads((folder / BUNDLE_FILE).read_text())
        data["booster_text"] = (folder / BOOSTER_FILE).read_text()
        return cls(**data)

    # ------------------------------------------------------------ scoring
    @property
    def model(self) -> ReadinessModel | DealCloseModel:
        """The fitted model object rebuilt from the bundle (built once)."""
        if self._model is None:
            import lightgbm as lgb

            encoder = CategoryEncoder(self.features)
            encoder.categories_ = {k: list(v) for k, v in self.categories.items()}
            booster = lgb.Booster(model_str=self.booster_text)
            cal = Calibrator.from_dict(self.calibrator)
            if self.kind == "lead_readiness":
                self._model = ReadinessModel(self.features, encoder, booster, cal, self.rounds)
            else:
                h = self.hazard or {}
                self._model = DealCloseModel(
                    self.features,
                    encoder,
                    booster,
                    cal,
                    self.rounds,
                    int(h["week_days"]),
                    int(h["max_weeks"]),
                    int(h["horizon_days"]),
                    list(h.get("shift_features", [])),
                    calendar=bool(h.get("calendar", False)),
                    hazard_calibration=h.get("calibration"),
                )
        return self._model

    @property
    def schema(self) -> list[dict[str, str]]:
        return list(self.meta.get("schema", _schema(self.features, list(self.categories))))

    def check_input(self, frame: pd.DataFrame) -> None:
        missing = [f for f in self.features if f not in frame.columns]
        if self.hazard and self.hazard.get("calendar") and "as_of" not in frame.columns:
            missing.append("as_of")
        if missing:
            raise DataError(
                f"{self.name} scoring input lacks feature column(s) {', '.join(missing)}; "
                f"the bundle expects: {', '.join(self.features)}"
            )

    def predict_proba(
        self, frame: pd.DataFrame, horizon_days: float | np.ndarray | None = None
    ) -> np.ndarray:
        """Calibrated probabilities only (the fast path for batch scoring)."""
        self.check_input(frame)
        if self.kind == "lead_readiness":
            return self.model.predict_proba(frame)
        return self.model.predict_proba(frame, horizon_days)

    def percentile(self, p: np.ndarray) -> np.ndarray:
        """Where each probability falls among the latest training snapshots' scores (0-100)."""
        q = np.asarray(self.reference["score_quantiles"], dtype=float)
        lo = np.searchsorted(q, p, side="left")
        hi = np.searchsorted(q, p, side="right")
        return np.clip((lo + hi) / 2.0 - 0.5, 0, 100)

    def score(
        self,
        frame: pd.DataFrame,
        *,
        horizon_days: float | None = None,
        reasons: int = 0,
    ) -> pd.DataFrame:
        """Probability, percentile, grade (readiness) and optional top reasons per row,
        after the id column when ``frame`` has one.

        Deal close: ``horizon_days`` (or an input column ``horizon_days``) gives
        P(won by as_of + horizon_days); default the spec's headline horizon.
        """
        self.check_input(frame)
        h: Any = horizon_days
        if self.kind == "deal_close" and h is None and "horizon_days" in frame.columns:
            h = frame["horizon_days"].to_numpy(dtype=float)
        p = self.predict_proba(frame, h)
        out = pd.DataFrame({"probability": p, "percentile": self.percentile(p)}, index=frame.index)
        if self.id_column in frame.columns:  # rows stay identifiable (e.g. for policy.handoff)
            out.insert(0, self.id_column, frame[self.id_column].to_numpy())
        if self.grade_cutoffs:
            out["grade"] = grade(p, self.grade_cutoffs)
        if reasons > 0:
            contrib = self.model.contributions(frame)
            found = top_reasons(
                contrib, self.features, frame[self.features], self.templates, k=reasons
            )
            out["reasons_positive"] = [[r["text"] for r in row["positive"]] for row in found]
            out["reasons_negative"] = [[r["text"] for r in row["negative"]] for row in found]
        return out

    def explain(
        self, frame: pd.DataFrame, k: int = 3, quiet: Sequence[str] = ()
    ) -> list[dict[str, list[dict[str, Any]]]]:
        """Structured top-k reasons (feature, value, contribution, text) per row. A
        category the model never saw is read as missing, so, like a missing value, it is
        never a reason (the nightly batch scores recycled leads, a status readiness may not
        have been trained on: "Lead status is recycled" would cite a value it did not use).
        Features in ``quiet`` count in the score but are never reasons (e.g. one that every
        row of a list shares, which tells the rows apart no more than it explains them)."""
        self.check_input(frame)
        shown = self._as_read(frame[self.features])
        if quiet:
            shown = shown.drop(columns=[f for f in quiet if f in shown.columns])
        return top_reasons(
            self.model.contributions(frame),
            self.features,
            shown,
            self.templates,
            k=k,
        )

    def unseen_values(self, frame: pd.DataFrame) -> list[list[str]]:
        """Per row, the categorical features whose present value the model never saw in
        training (it reads them as missing, like :meth:`_as_read`): the same flag as the
        online API's ``unseen_values``."""
        flags = pd.DataFrame(index=frame.index)
        for f, cats in self.categories.items():
            if f not in frame.columns:
                continue
            col = frame[f]
            flags[f] = col.notna() & ~col.astype("string").isin([str(c) for c in cats])
        if flags.empty or not flags.to_numpy().any():
            return [[] for _ in range(len(frame))]
        names = list(flags.columns)
        return [[n for n, bad in zip(names, row, strict=True) if bad] for row in flags.to_numpy()]

    def _as_read(self, values: pd.DataFrame) -> pd.DataFrame:
        """``values`` with every category the model never saw as missing."""
        out = values
        for f, cats in self.categories.items():
            if f not in values.columns:
                continue
            col = values[f]
            seen = col.isna() | col.astype("string").isin([str(c) for c in cats])
            if not bool(seen.all()):
                out = out.copy() if out is values else out
                out[f] = col.astype(object).where(seen.to_numpy(), None)
        return out

    def input_example(self, rows: int = 3) -> pd.DataFrame:
        """Synthetic rows built from the training reference (no real record is used)."""
        data: dict[str, list[Any]] = {}
        for f in self.features:
            ref = self.reference["features"][f]
            if ref["type"] == "categorical":
                cats = [c for c in ref["shares"] if c != "__missing__"] or [""]
                data[f] = [cats[i % len(cats)] for i in range(rows)]
            else:
                edges = ref["edges"] or [0.0]
                picks = [edges[int(i * (len(edges) - 1) / max(rows - 1, 1))] for i in range(rows)]
                data[f] = [float(v) for v in picks]
        return pd.DataFrame(data)


def _find_bundle(root: Path) -> Path | None:
    if (root / BUNDLE_FILE).exists():
        return root
    for candidate in sorted(root.rglob(BUNDLE_FILE)):
        return candidate.parent
    return None
