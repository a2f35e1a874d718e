"""The Ray executor on a local 2-CPU cluster kept on 127.0.0.1."""
from __future__ import annotations

import os

import pytest

import shardkin.builder.shard as shard
from shardkin.builder import BuildError, build

from helpers import tree_bytes

# read by Ray at import: no usage reporting; bind 127.0.0.1 only (checked below)
os.environ.update(RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

KW = dict(frames_per_clip=4, step_between_clips=3, clips_per_shard=6, progress=False)


def _listeners() -> set:
    """(address, port) of every listening socket of this process and its descendants."""
    me = psutil.Process()
    pids = {me.pid} | {p.pid for p in me.children(recursive=True)}
    return {(c.laddr.ip, c.laddr.port) for c in psutil.net_connections("inet")
            if c.status == psutil.CONN_LISTEN and c.pid in pids}


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ray")
    saved = {"HOME": os.environ.get("HOME")}
    os.environ["HOME"] = str(tmp)  # Ray writes ~/.ray/auth_token
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 2**20,
             _temp_dir=str(tmp / "r"), _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        listeners = _listeners()
        assert len(listeners) >= 3, "the Ray processes were not found"
        assert {ip for ip, _ in listeners} <= {"127.0.0.1", "::ffff:127.0.0.1"}, listeners
        yield
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v



def test_ray_build_equals_local_build(made_root, tmp_path, ray_cluster):
    on_ray = build(made_root, tmp_path / "ray", "train", executor="ray", **KW)
    local = build(made_root, tmp_path / "local", "train", workers=2, **KW)
    assert on_ray == local and len(local["shards"]) > 2
    assert tree_bytes(tmp_path / "ray") == tree_bytes(tmp_path / "local")


def test_killed_task_is_retried_with_same_bytes(made_root, tmp_path, ray_cluster, monkeypatch):
    marker = tmp_path / "killed-once"
    real = shard.build_shard

    def dies_mid_shard(task, **kwargs):
        def progress(clips, nbytes):
            if task["name"].endswith("000001.tar") and not marker.exists():
                marker.write_text("x")
                os._exit(1)  # the worker process dies with a half-written shard

        return real(task, progress=progress, **kwargs)

    monkeypatch.setattr(shard, "build_shard", dies_mid_shard)
    on_ray = build(made_root, tmp_path / "ray", "train", executor="ray", **KW)
    assert marker.exists()
    monkeypatch.undo()
    local = build(made_root, tmp_path / "local", "train", workers=1, **KW)
    assert on_ray == local
    assert tree_bytes(tmp_path / "ray") == tree_bytes(tmp_path / "local")


def test_task_that_keeps_failing_is_reported(made_root, tmp_path, ray_cluster, monkeypatch):
    real = shard.build_shard

    def always_fails(task, **kwargs):
        if task["name"].endswith("000000.tar"):
            raise RuntimeError("disk on fire")
        return real(task, **kwargs)

    monkeypatch.setattr(shard, "build_shard", always_fails)
    with pytest.raises(BuildError, match="train-000000.tar.*disk on fire"):
        build(made_root, tmp_path / "o", "train", executor="ray", **KW)
    split = tmp_path / "o" / "train"
    assert not (split / "manifest.json").exists()
    assert (split / "train-000001.tar").exists()  # the rest finished and are kept
