"""Every ```python block of docs/retraining.md runs as written, each in a fresh
interpreter, in order, on a small simulated company (audit 4: the scoring snippet used
``features`` and ``spec`` without defining them)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from leadml.cli import main

pytestmark = pytest.mark.slow


def python_blocks(doc: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", doc.read_text(), re.S | re.M)


def test_every_python_block_of_the_retraining_doc_runs_as_written(
    repo_root: Path, tmp_path: Path
) -> None:
    blocks = python_blocks(repo_root / "docs" / "retraining.md")
    assert len(blocks) >= 3
    # the workspace (LEADML_WORKSPACE, a temporary folder) gets the company's tables
    main(["simulate", "--leads", "3000"])
    for i, code in enumerate(blocks, 1):
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            env={**os.environ, "MPLBACKEND": "Agg"},
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
        )
        assert done.returncode == 0, (
            f"python block {i} of docs/retraining.md:\n{done.stderr[-3000:]}"
        )
    # the notebook read the workspace's store, not a new one in the current folder
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
