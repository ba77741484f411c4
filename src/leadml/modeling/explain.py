"""Reasons behind a score, from LightGBM's exact TreeSHAP contributions.

``pred_contrib=True`` gives, per row, each feature's additive contribution to
the log-odds plus a bias; the largest positive ones are the reasons a score is
high, the most negative ones why it is not higher. Each reason is rendered with
the feature catalog's label template (``{value}`` is replaced by the row's
value), falling back to ``<feature> = <value>``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd


def render_reason(feature: str, value: Any, template: str | None) -> str:
    """A readable sentence for one feature value."""
    shown = _show(value)
    if not template:
        return f"{feature} = {shown}"
    if "{value}" in template:
        return template.replace("{value}", shown)
    return f"{template}: {shown}"


def _show(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "unknown"
    if isinstance(value, float | np.floating):
        return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"
    return str(value)


def top_reasons(
    contributions: np.ndarray,
    features: list[str],
    values: pd.DataFrame,
    templates: Mapping[str, str] | None = None,
    k: int = 3,
    min_abs: float = 1e-6,
) -> list[dict[str, list[dict[str, Any]]]]:
    """Per row: the ``k`` largest positive and ``k`` most negative contributions.

    ``contributions`` is (rows, len(features) + 1) with the bias last (LightGBM's
    layout); contributions are on the log-odds scale. ``values`` holds the raw
    feature values shown in the text.
    """
    contributions = np.asarray(contributions, dtype=float)
    if contributions.shape[1] != len(features) + 1:
        raise ValueError(
            f"expected {len(features) + 1} contribution columns, got {contributions.shape[1]}"
        )
    templates = templates or {}
    out = []
    raw = values.reset_index(drop=True)
    for i, row in enumerate(contributions[:, :-1]):
        order = np.argsort(-row, kind="stable")
        pos = [j for j in order if row[j] > min_abs][:k]
        neg = [j for j in order[::-1] if row[j] < -min_abs][:k]

        def item(j: int, i: int = i, row: np.ndarray = row) -> dict[str, Any]:
            f = features[j]
            v = raw.at[i, f] if f in raw.columns else None
            return {
                "feature": f,
                "value": _plain(v),
                "contribution": float(row[j]),
                "text": render_reason(f, v, templates.get(f)),
            }

        out.append({"positive": [item(j) for j in pos], "negative": [item(j) for j in neg]})
    return out


def _plain(value: Any) -> Any:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if hasattr(value, "item"):
        return value.item()
    return value
