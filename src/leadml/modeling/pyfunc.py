"""The MLflow pyfunc face of a :class:`~leadml.modeling.bundle.ScoringBundle`.

Kept apart from :mod:`leadml.modeling.bundle` so that batch and serving code that
uses the plain loader does not import MLflow's model machinery.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
from mlflow.pyfunc.model import PythonModel

from leadml.modeling.bundle import ScoringBundle


class BundleModel(PythonModel):
    """The MLflow pyfunc wrapper around a :class:`ScoringBundle`.

    ``predict(frame, params={"reasons": 3, "horizon_days": 60})`` returns the
    columns of :meth:`ScoringBundle.score` (the id column first when the input has one,
    so rows are matched by id, not position), then ``unseen_values``: per row, the
    categorical features whose value the model never saw in training (a misspelling such
    as ``nurturng``, a status outside its training data), which it reads as missing, as
    the online API's ``unseen_values`` says. Reasons and ``unseen_values`` come back as
    JSON lists in strings so that the output is a plain table.
    """

    def load_context(self, context: Any) -> None:
        self.bundle = ScoringBundle.load(context.artifacts["bundle"])

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        params = params or {}
        horizon = params.get("horizon_days")
        horizon = (
            None
            if horizon is None or (isinstance(horizon, float) and horizon <= 0)
            else float(horizon)
        )
        out = self.bundle.score(
            model_input, horizon_days=horizon, reasons=int(params.get("reasons", 0) or 0)
        )
        out["unseen_values"] = self.bundle.unseen_values(model_input)
        for col in ("reasons_positive", "reasons_negative", "unseen_values"):
            if col in out.columns:
                out[col] = [json.dumps(v) for v in out[col]]
        return out.reset_index(drop=True)


def signature_for(bundle: ScoringBundle) -> Any:
    """Input schema, output schema and params.

    Every feature column is required, as :meth:`ScoringBundle.score` (and so the batch
    and the API, which compute every feature) requires it; a missing *value* is fine
    (numbers are doubles, so NaN fits; a category may be null). The id column is optional
    and comes back first in the output; deal close also takes an optional per-row
    ``horizon_days``. (MLflow drops input columns the signature does not name.)"""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    in_cols: list[ColSpec | TensorSpec] = [
        ColSpec(c["type"], c["name"], required=True) for c in bundle.schema
    ]
    in_cols.append(ColSpec("string", bundle.id_column, required=False))
    if bundle.kind == "deal_close":
        in_cols.append(ColSpec("double", "horizon_days", required=False))
    inputs = Schema(in_cols)
    out_cols: list[ColSpec | TensorSpec] = [
        ColSpec("string", bundle.id_column, required=False),
        ColSpec("double", "probability"),
        ColSpec("double", "percentile"),
    ]
    if bundle.grade_cutoffs:
        out_cols.append(ColSpec("string", "grade"))
    out_cols += [
        ColSpec("string", "reasons_positive", required=False),
        ColSpec("string", "reasons_negative", required=False),
        ColSpec("string", "unseen_values"),
    ]
    params = ParamSchema(
        [ParamSpec("reasons", "long", 0), ParamSpec("horizon_days", "double", 0.0)]
    )
    return ModelSignature(inputs=inputs, outputs=Schema(out_cols), params=params)


def pip_requirements() -> list[str]:
    """The packages the pyfunc needs at load time (pinned to what trained it)."""
    from importlib.metadata import version

    return [
        f"{p}=={version(p)}"
        for p in ("mlflow", "lightgbm", "scikit-learn", "pandas", "numpy", "pyarrow")
    ]
