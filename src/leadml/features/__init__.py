"""Point-in-time features and training sets.

- :mod:`~leadml.features.catalog`: the YAML catalog, validated before any data is read.
- :mod:`~leadml.features.offline`: the catalog compiled to DuckDB SQL for a spine of
  ``(entity_id, as_of)`` pairs (training sets, batch).
- :mod:`~leadml.features.online`: the same catalog for one entity from its raw records
  (the API), parity-tested against the offline engine.
- :mod:`~leadml.features.labels` / :mod:`~leadml.features.datasets`: spines, labels and
  the lead-readiness and deal-close training sets.

Every value as of T reads only records with ``ts < T``; labels read only ``(T, T + H]``.
Nothing is imported at package import time beyond these names' modules on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Catalog",
    "DatasetSummary",
    "compute_features",
    "compute_lead_features_online",
    "compute_opportunity_features_online",
    "deal_close_dataset",
    "lead_readiness_dataset",
    "load_catalog",
]

_WHERE = {
    "Catalog": "catalog",
    "load_catalog": "catalog",
    "compute_features": "offline",
    "compute_lead_features_online": "online",
    "compute_opportunity_features_online": "online",
    "DatasetSummary": "datasets",
    "deal_close_dataset": "datasets",
    "lead_readiness_dataset": "datasets",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"leadml.features.{_WHERE[name]}"), name)
    raise AttributeError(name)
