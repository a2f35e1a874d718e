"""Shared fixtures: small made videos and the optional real clips in ../shared/realvideos."""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

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
