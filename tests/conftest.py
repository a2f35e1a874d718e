"""Shared fixtures: small made videos and the optional real clips in ../shared/realvideos;
and the check that the suite leaves no process behind."""
from __future__ import annotations

import ctypes
import gc
import os
import sys
import time
from fractions import Fraction
from pathlib import Path

import psutil
import pytest

from shardkin.synth import make_video

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "realvideos"
if "SHARDKIN_REALVIDEOS" in os.environ:
    REAL = Path(os.environ["SHARDKIN_REALVIDEOS"])


@pytest.fixture(scope="session")
def real_root() -> Path:
    if not (REAL / "train").is_dir():
        pytest.skip(f"real videos not found at {REAL}")
    return REAL


@pytest.fixture(scope="session")
def made_root(tmp_path_factory) -> Path:
    """train/val tree: fps 24, 29.97, 30, 60; with and without audio; every container;
    unicode and spaces in names; val lacks a class (labels must still agree)."""
    root = tmp_path_factory.mktemp("made")
    specs = [
        ("train", "archery", "a 24fps.mp4", 40, 24, 16000, 1),
        ("train", "archery", "b_2997.mkv", 45, Fraction(30000, 1001), 48000, 2),
        ("train", "bowling", "c 30fps.avi", 33, 30, None, 1),
        ("train", "bowling", "d_60.webm", 50, 60, 48000, 1),
        ("train", "café au lait", "é 30.mov", 36, 30, 22050, 2),
        ("train", "café au lait", "short.mp4", 5, 30, 16000, 1),
        ("val", "bowling", "e.mp4", 30, 30, 16000, 1),
        ("val", "café au lait", "f.mp4", 20, 25, None, 1),
    ]
    for i, (split, cls, name, frames, fps, rate, ch) in enumerate(specs):
        make_video(root / split / cls / name, frames, fps, (64, 48), rate, ch, seed=i)
    (root / "train" / "archery" / "notes.txt").write_text("not a video")
    return root


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server for the session; credentials and endpoint set in the environment
    (as users set them), so s3fs and child processes find them the usual way."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto")
    from servers import CREDENTIALS, moto_server

    with moto_server() as endpoint:
        saved = {k: os.environ.get(k) for k in [*CREDENTIALS, "AWS_ENDPOINT_URL"]}
        os.environ.update(CREDENTIALS, AWS_ENDPOINT_URL=endpoint)
        try:
            yield endpoint
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@pytest.fixture
def bucket(s3_endpoint, request) -> str:
    """A fresh, empty bucket; returns its s3:// URL."""
    import re

    import boto3

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-")
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return f"s3://{name}"


# Processes of this pytest that end with it: multiprocessing's helpers, not left behind.
_ENDS_WITH_PYTEST = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")
_PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


def pytest_configure(config):
    """Make this process the reaper of every process the tests start, also of those whose
    parent ended (Linux's child subreaper), so that none can escape the check below."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _left_behind(grace: float) -> list[psutil.Process]:
    """Descendants of this process still running after ``grace`` seconds (zombies reaped:
    their parent ended, so they are ours now)."""
    deadline = time.monotonic() + grace
    while True:
        left, reaped = [], False
        for p in psutil.Process().children(recursive=True):
            try:
                if p.status() == psutil.STATUS_ZOMBIE:
                    p.wait(0)
                    reaped = True  # its children may be on their way to us: look again
                elif not any(name in " ".join(p.cmdline()) for name in _ENDS_WITH_PYTEST):
                    left.append(p)
            except (psutil.NoSuchProcess, psutil.TimeoutExpired):
                pass
        if not (left or reaped) or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def pytest_sessionfinish(session, exitstatus):
    """Fail the run if any process a test started outlives it by 15 s (then kill them)."""
    # a loader dropped by its test but held in a reference cycle (a Lightning Trainer
    # holds its loaders so) stops its persistent workers when collected: collect first
    gc.collect()
    left = _left_behind(grace=15)
    if not left:
        return
    lines = []
    for p in left:
        try:
            lines.append(f"  pid {p.pid}: {' '.join(p.cmdline())[:200]}")
            p.kill()
        except psutil.NoSuchProcess:
            pass
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    reporter.write_line("processes left behind by the tests (killed now):\n" + "\n".join(lines),
                        red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
