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
    columns of :meth:`ScoringBundle.score`; reasons come back as JSON strings
    so that the output is a plain table.
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
        for col in ("reasons_positive", "reasons_negative"):
            if col in out.columns:
                out[col] = [json.dumps(v) for v in out[col]]
        return out.reset_index(drop=True)


def signature_for(bundle: ScoringBundle) -> Any:
    """Input schema (all features optional), output schema and params."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    inputs = Schema([ColSpec(c["type"], c["name"], required=False) for c in bundle.schema])
    out_cols: list[ColSpec | TensorSpec] = [
        ColSpec("double", "probability"),
        ColSpec("double", "percentile"),
    ]
    if bundle.grade_cutoffs:
        out_cols.append(ColSpec("string", "grade"))
    out_cols += [
        ColSpec("string", "reasons_positive", required=False),
        ColSpec("string", "reasons_negative", required=False),
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
