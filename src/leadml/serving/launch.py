"""Start the API server and build bentos (what ``leadml serve`` / ``leadml build`` call).

The server is ``bentoml serve leadml.serving.service:LeadmlAPI`` in a child
process. Its environment carries what a fresh process needs to load the same
settings: the workspace, the config directory and the BentoML home.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leadml.config import Settings
from leadml.serving.store import STORE_NAMES, ServingError, bentoml_env

SERVICE = "leadml.serving.service:LeadmlAPI"
# Not "leadml": `bentoml serve leadml:<version>` first tries the tag as "module:attribute",
# importing an installed leadml package before the bento's own code, which is then never
# read (its pinned models neither).
BENTO_NAME = "leadml-api"


def server_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a server process that sees the same settings as this one."""
    env = dict(os.environ if base is None else base)
    env.update(bentoml_env(settings))
    env["LEADML_WORKSPACE"] = str(settings.workspace)
    env["LEADML_CONFIG_DIR"] = str(settings.config_dir)
    # serving.workers -> BentoML's per-service worker count (each loads the models)
    options = env.get("BENTOML_CONFIG_OPTIONS", "")
    env["BENTOML_CONFIG_OPTIONS"] = (
        f"{options} services.leadml.workers={settings.serving.workers}".strip()
    )
    # bentoml prints a usage-tracking notice and phones home unless told not to
    env.setdefault("BENTOML_DO_NOT_TRACK", "True")
    return env


def server_command(
    settings: Settings, host: str | None = None, port: int | None = None
) -> list[str]:
    cfg = settings.serving
    return [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        SERVICE,
        "--host",
        host or cfg.host,
        "--port",
        str(port or cfg.port),
    ]


def start_server(
    settings: Settings, host: str | None = None, port: int | None = None, **popen: Any
) -> subprocess.Popen[bytes]:
    """Start the server in a new process group (so that stopping it stops its workers)."""
    return subprocess.Popen(
        server_command(settings, host, port),
        env=server_env(settings),
        start_new_session=True,
        **popen,
    )


def stop_server(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """Stop a server started by :func:`start_server` (its process group, by PID)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def check_port_free(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """A clear error when the address is taken (before: BentoML's traceback, exit 1)."""
    address = (host or settings.serving.host, port or settings.serving.port)
    with socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                raise ServingError(
                    f"cannot listen on {address[0]}:{address[1]}: {address[0]} is not an "
                    "address of this machine; use one of its interfaces with --host "
                    "(serving.host), or 0.0.0.0 for all"
                ) from None
            raise ServingError(
                f"cannot listen on {address[0]}:{address[1]} ({exc.strerror}): another "
                "server holds the port; stop it or choose another with --port "
                "(serving.port, LEADML_SERVING__PORT)"
            ) from None


def run_server(settings: Settings, host: str | None = None, port: int | None = None) -> int:
    """Run the server in the foreground until it exits, Ctrl-C or SIGTERM (which stop
    the server's whole process group); returns its exit code."""

    def _terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    check_port_free(settings, host, port)
    proc = start_server(settings, host, port)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        stop_server(proc)
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------- bento


@dataclass(frozen=True)
class BuiltBento:
    tag: str
    path: Path
    models: list[str]
    archive: Path | None = None


def _requirements() -> list[str]:
    """leadml's runtime dependencies pinned to the installed versions."""
    from importlib.metadata import PackageNotFoundError, requires, version

    from packaging.requirements import Requirement

    pins = []
    for text in requires("leadml") or []:
        req = Requirement(text)
        if req.marker is not None and "extra" in str(req.marker):
            continue
        try:
            pins.append(f"{req.name}=={version(req.name)}")
        except PackageNotFoundError:
            pins.append(str(req))
    return sorted(pins)


def build_bento(
    settings: Settings, version: str | None = None, export: Path | None = None
) -> BuiltBento:
    """``bentoml build`` of the API: the leadml package, the config directory, pinned
    packages and the two champion models (recorded from the service's class-scope
    ``BentoModel`` declarations). The store must already hold the champions.

    BentoML keeps a built bento's models in the model store; ``export`` writes one
    ``.bento`` archive with the code AND the models (``bentoml import`` on another
    machine, or ``bentoml containerize``)."""
    bentoml_env(settings)
    import bentoml

    import leadml

    if version is not None:
        from bentoml.exceptions import NotFound

        try:
            bentoml.bentos.get(f"{BENTO_NAME}:{version}")
        except NotFound:
            pass
        else:
            raise ServingError(
                f"bento {BENTO_NAME}:{version} already exists in the BentoML store "
                f"({os.environ['BENTOML_HOME']}); choose another --version, or delete it "
                f"first with `bentoml delete {BENTO_NAME}:{version}`"
            )
    package = Path(leadml.__file__).resolve().parent
    with tempfile.TemporaryDirectory(prefix="leadml-bento-") as tmp:
        ctx = Path(tmp)
        shutil.copytree(
            package, ctx / "leadml", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
        shutil.copytree(
            settings.config_dir, ctx / "configs", ignore=shutil.ignore_patterns("__pycache__")
        )
        pinned = {kind: str(bentoml.models.get(f"{kind}:latest").tag) for kind in STORE_NAMES}
        (ctx / "leadml" / "serving" / "pinned.py").write_text(
            '"""The exact model tags this bento serves (written by leadml build)."""\n\n'
            f"PINNED: dict[str, str] = {pinned!r}\n"
        )
        bento = bentoml.bentos.build(
            SERVICE,
            name=BENTO_NAME,
            description="leadml online scoring API: lead readiness, hand-off, deals, forecast",
            labels={"project": "leadml"},
            include=["leadml/**", "configs/**"],
            python={"packages": _requirements(), "lock_packages": False},
            version=version,
            build_ctx=str(ctx),
        )
    models = [str(m.tag) for m in bento.info.all_models]
    archive = None
    if export is not None:
        export.parent.mkdir(parents=True, exist_ok=True)
        archive = Path(bentoml.bentos.export_bento(bento.tag, str(export)))
    return BuiltBento(str(bento.tag), Path(bento.path), models, archive)
