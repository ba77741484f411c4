"""Champions from the MLflow registry into the BentoML model store.

The service declares its models at class scope as ``BentoModel("lead_readiness:latest")``
and ``BentoModel("deal_close:latest")`` (a built bento: the exact tags it was built
with, :mod:`leadml.serving.pinned`; see :mod:`leadml.serving.service`), so the
store must hold them before ``bentoml serve`` / ``bentoml build``. This module
copies the MLflow model that holds the registry alias ``champion`` of each
configured name into the store with ``bentoml.mlflow.import_model``. Importing is
idempotent: when the store's latest model already is the champion version
(same registry name, version and run) nothing is copied, so a new champion is picked up by the next
``leadml serve`` (which imports, then starts the server) and nothing else changes.

The BentoML home is ``$BENTOML_HOME`` when set, else ``<workspace>/bentoml``;
:func:`bentoml_env` sets it before BentoML is imported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from leadml.config import Settings
from leadml.errors import LeadmlError

CHAMPION = "champion"
# Store names of the two served models (the service's BentoModel tags use them).
STORE_NAMES = {"lead_readiness": "readiness_model", "deal_close": "deal_model"}


class ServingError(LeadmlError):
    """The champions cannot be served (missing registry alias, empty store, ...)."""


@dataclass(frozen=True)
class ImportedModel:
    store_tag: str
    registry_name: str
    registry_version: str
    run_id: str | None
    copied: bool


def bentoml_env(settings: Settings) -> dict[str, str]:
    """Environment for BentoML: ``BENTOML_HOME`` (kept when already set)."""
    home = os.environ.get("BENTOML_HOME") or str(settings.bentoml_home)
    os.environ["BENTOML_HOME"] = home
    return {"BENTOML_HOME": home}


def _latest_if_version(store_name: str, mv: Any) -> Any:
    """The store's latest model of that name when it is the registry version ``mv``: same
    registered name, version and run (another registry name, or another workspace's
    store with the same version number, is not the same model)."""
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        latest = bentoml.models.get(f"{store_name}:latest")
    except NotFound:
        return None
    labels, meta = latest.info.labels, latest.info.metadata
    same = (
        labels.get("registry_name") == mv.name
        and labels.get("registry_version") == str(mv.version)
        and meta.get("run_id") == (mv.run_id or "")
    )
    return latest if same else None


def import_champion(settings: Settings, store_name: str) -> ImportedModel:
    """Copy the champion of the registry name configured for ``store_name``
    (``lead_readiness`` or ``deal_close``) into the BentoML store; returns what was
    imported (``copied=False`` when that version was already there)."""
    import bentoml
    import mlflow
    from mlflow.exceptions import MlflowException

    from leadml import tracking

    registry_name = getattr(settings.serving, STORE_NAMES[store_name])
    uri = tracking.readable_store(settings)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        mv = client.get_model_version_by_alias(registry_name, CHAMPION)
    except MlflowException as exc:
        if not tracking.is_missing(exc):
            raise tracking.store_error(exc, uri) from None
        raise ServingError(
            f"no model '{registry_name}' with alias '{CHAMPION}' in the MLflow registry at {uri}; "
            "train and promote one first (leadml train ...), "
            f"or set serving.{STORE_NAMES[store_name]}"
        ) from None
    # "latest" is what the service serves: copy unless it already is this version
    # (so that re-promoting an older version, a rollback, is served too).
    stored = _latest_if_version(store_name, mv)
    if stored is not None:
        return ImportedModel(str(stored.tag), registry_name, str(mv.version), mv.run_id, False)
    # The version's artifact location (file://, s3://, ...): downloading it needs no
    # process-wide MLflow URI, so importing leaves MLflow's global state alone.
    location = client.get_model_version_download_uri(registry_name, str(mv.version))
    model = bentoml.mlflow.import_model(
        store_name,
        model_uri=location,
        labels={
            "registry_name": registry_name,
            "registry_version": str(mv.version),
            "alias": CHAMPION,
        },
        metadata={
            "registry_name": registry_name,
            "registry_version": str(mv.version),
            "run_id": mv.run_id or "",
            "source": mv.source or "",
        },
    )
    return ImportedModel(str(model.tag), registry_name, str(mv.version), mv.run_id, True)


def import_champions(settings: Settings) -> list[ImportedModel]:
    """Import both champions (lead readiness and deal close)."""
    bentoml_env(settings)
    return [import_champion(settings, name) for name in STORE_NAMES]


def latest_stored(store_name: str) -> Any:
    """The store's latest model of that name, or a :class:`ServingError` saying how to get one."""
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        return bentoml.models.get(f"{store_name}:latest")
    except NotFound:
        raise ServingError(
            f"no '{store_name}' model in the BentoML store ($BENTOML_HOME); "
            "run `leadml serve` or `leadml build`, which import the MLflow champions first"
        ) from None
