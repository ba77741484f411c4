"""Reasons behind a score, from LightGBM's exact TreeSHAP contributions.

``pred_contrib=True`` gives, per row, each feature's additive contribution to
the log-odds plus a bias; the largest positive ones are the reasons a score is
high, the most negative ones why it is not higher. Each reason is rendered with
the feature catalog's label template (``{value}`` is replaced by the row's
value), falling back to ``<feature> = <value>``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from leadml.features.catalog import NEGATIVE

# "{value} times" / "{value} seminars or webinars": the plural word(s) after the value,
# made singular when the value is 1 ("Engaged 1 time"); words in -ss are left alone.
_PLURAL_AFTER_VALUE = re.compile(r"\{value\} (\w*[^s\W])s\b(?: or (\w*[^s\W])s\b)?")


def template_for(templates: Mapping[str, str], feature: str, value: Any) -> tuple[Any, str | None]:
    """The value to show and its template (the arguments of :func:`render_reason` after
    the feature): for a negative number, its size with the feature's negative template
    (key ``<name><0``), when it has one."""
    negative = templates.get(f"{feature}{NEGATIVE}")
    if negative and isinstance(value, int | float | np.number) and value < 0:
        return -value, negative
    return value, templates.get(feature)


def render_reason(feature: str, value: Any, template: str | None) -> str:
    """A readable sentence for one feature value (days in whole days from one day on:
    "In the current status for 580 days", not 580.43)."""
    shown = _show(value, days=bool(template) and "day" in str(template))
    if not template:
        return f"{feature} = {shown}"
    if "{value}" in template:
        if shown == "1":
            template = _PLURAL_AFTER_VALUE.sub(
                lambda m: "{value} " + m[1] + (f" or {m[2]}" if m[2] else ""), template
            )
        return template.replace("{value}", shown)
    return f"{template}: {shown}"


def _show(value: Any, *, days: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "unknown"
    if isinstance(value, float | np.floating):
        if float(value).is_integer() or (days and abs(float(value)) >= 1):
            return f"{value:,.0f}"
        return f"{value:,.1f}" if days else f"{value:,.2f}"
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
    feature values shown in the text. A feature whose value is missing is not a
    reason ("the lead status is unknown" gives a rep nothing to act on, and is
    often only what the caller did not send); its contribution stays in the score.
    """
    contributions = np.asarray(contributions, dtype=float)
    if contributions.shape[1] != len(features) + 1:
        raise ValueError(
            f"expected {len(features) + 1} contribution columns, got {contributions.shape[1]}"
        )
    templates = templates or {}
    out = []
    raw = values.reset_index(drop=True)
    present = (
        np.column_stack(
            [
                raw[f].notna().to_numpy() if f in raw.columns else np.zeros(len(raw), dtype=bool)
                for f in features
            ]
        )
        if features
        else np.zeros((len(raw), 0), dtype=bool)
    )
    for i, row in enumerate(contributions[:, :-1]):
        order = np.argsort(-row, kind="stable")
        order = order[present[i, order]]
        pos = [j for j in order if row[j] > min_abs][:k]
        neg = [j for j in order[::-1] if row[j] < -min_abs][:k]

        def item(j: int, i: int = i, row: np.ndarray = row) -> dict[str, Any]:
            f = features[j]
            v = raw.at[i, f] if f in raw.columns else None
            return {
                "feature": f,
                "value": _plain(v),
                "contribution": float(row[j]),
                "text": render_reason(f, *template_for(templates, f, v)),
            }

        out.append({"positive": [item(j) for j in pos], "negative": [item(j) for j in neg]})
    return out


def _plain(value: Any) -> Any:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if hasattr(value, "item"):
        return value.item()
    return value
