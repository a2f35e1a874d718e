"""The real torchvision 0.28, torchcodec 0.13 and PyTorchVideo 0.1.5, in the virtual environment
that ``.ci/reference-env.sh`` builds (``SHARDKIN_REF_VENV``, default ``/tmp/ref-venv``).

shardkin's own environment never has torchvision: tests that compare with it run a script in
the reference environment's Python, with shardkin imported from this source tree, and read
back what it prints as JSON. Without the environment they skip (under CI they fail: CI
builds it).
"""
from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

PROJECT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("SHARDKIN_REF_VENV", "/tmp/ref-venv"))
PYTHON = VENV / "bin" / "python"
SETUP = "bash .ci/reference-env.sh"


def available() -> bool:
    return PYTHON.is_file()


def require() -> None:
    """Skip the test (fail under CI) when the reference environment is missing."""
    if available():
        return
    why = f"the reference environment (real torchvision 0.28) is not at {VENV}: run `{SETUP}`"
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


def run(code: str, *args: Any, timeout: float = 600) -> Any:
    """Run ``code`` (a script's text) in the reference Python with ``args`` as ``sys.argv[1:]``
    and shardkin importable from this tree; returns the JSON its last line of output holds.
    A failing script fails the test with its output."""
    require()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(PROJECT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run([str(PYTHON), "-c", textwrap.dedent(code), *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=timeout, cwd=PROJECT)
    if done.returncode != 0:
        pytest.fail(f"reference script failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                    f"{done.stderr[-6000:]}")
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else None
