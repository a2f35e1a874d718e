"""The Ray executor on a real two-node cluster (``ray.cluster_utils.Cluster``: a head and a
worker node, each its own raylet and object store, one CPU each) kept on 127.0.0.1."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

import numpy as np
import pytest

import shardkin.builder.plan as plan
import shardkin.builder.shard as shard
from shardkin.builder import BuildError, build
from shardkin.builder.executors import start_method

import helpers
from helpers import read_split, segfault, tree_bytes

# read by Ray at import: no usage reporting; bind 127.0.0.1 only (checked below)
os.environ.update(RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")
# what a test patches in runs on Ray workers, which cannot import the tests' modules
for module in (sys.modules[__name__], helpers):
    ray.cloudpickle.register_pickle_by_value(module)

KW = dict(frames_per_clip=4, step_between_clips=3, clips_per_shard=6, progress=False)


def _descendants() -> list:
    return psutil.Process().children(recursive=True)


def _listeners() -> set:
    """(address, port) of every listening socket of this process and its descendants."""
    pids = {psutil.Process().pid} | {p.pid for p in _descendants()}
    return {(c.laddr.ip, c.laddr.port) for c in psutil.net_connections("inet")
            if c.status == psutil.CONN_LISTEN and c.pid in pids}


def _ray_processes() -> list:
    """This process's descendants that are Ray's (its node services and workers)."""
    def is_ray(p) -> bool:
        try:
            return "ray" in " ".join(p.cmdline()).lower()
        except psutil.Error:
            return False

    return [p for p in _descendants() if is_ray(p)]


@pytest.fixture(scope="module")
def ray_cluster():
    """A head and a worker node; every Ray process is gone once the module's tests end."""
    from ray.cluster_utils import Cluster

    # short: Ray's socket paths under it must stay within 107 bytes
    tmp = tempfile.mkdtemp(prefix="rk-", dir="/tmp")
    saved = {k: os.environ.get(k) for k in ("HOME", "RAY_TMPDIR")}
    # Ray writes ~/.ray/auth_token, and the cluster's address to $RAY_TMPDIR (not /tmp/ray)
    os.environ.update(HOME=tmp, RAY_TMPDIR=tmp)
    node = dict(num_cpus=1, object_store_memory=80 * 2**20, node_ip_address="127.0.0.1")
    cluster = Cluster()
    try:
        cluster.add_node(**node, include_dashboard=False, temp_dir=os.path.join(tmp, "ray"))
        cluster.add_node(**node)
        ray.init(address=cluster.address, log_to_driver=False)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        listeners = _listeners()
        assert len(listeners) >= 3, "the Ray processes were not found"
        assert {ip for ip, _ in listeners} <= {"127.0.0.1", "::ffff:127.0.0.1"}, listeners
        yield cluster
    finally:
        started = _ray_processes()
        ray.shutdown()
        cluster.shutdown()
        _, alive = psutil.wait_procs(started, timeout=30)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(tmp, ignore_errors=True)
        assert started, "no Ray process was seen"
        assert not alive, f"Ray processes left running: {alive}"


def test_ray_build_equals_local_build(made_root, tmp_path, ray_cluster):
    """Also a local build in a process that joined Ray: its workers are spawned, as a
    forked one would crash freeing the Ray client it inherited."""
    assert start_method() == "spawn"
    on_ray = build(made_root, tmp_path / "ray", "train", executor="ray", **KW)
    local = build(made_root, tmp_path / "local", "train", workers=2, **KW)
    assert on_ray == local and len(local["shards"]) > 2
    assert tree_bytes(tmp_path / "ray") == tree_bytes(tmp_path / "local")


def test_killed_task_is_retried_with_same_bytes(made_root, tmp_path, ray_cluster, monkeypatch):
    marker = tmp_path / "killed-once"
    real = shard.build_shard

    def dies_mid_shard(task, progress, **kwargs):
        def dies(clips, nbytes):
            if task["name"].endswith("000001.tar") and not marker.exists():
                marker.write_text("x")
                os._exit(1)  # the worker process dies with a half-written shard
            progress(clips, nbytes)

        return real(task, progress=dies, **kwargs)

    monkeypatch.setattr(shard, "build_shard", dies_mid_shard)
    on_ray = build(made_root, tmp_path / "ray", "train", executor="ray", **KW)
    assert marker.exists()
    monkeypatch.undo()
    local = build(made_root, tmp_path / "local", "train", workers=1, **KW)
    assert on_ray == local
    assert tree_bytes(tmp_path / "ray") == tree_bytes(tmp_path / "local")


def _dies(how: str) -> None:
    """This Ray worker process dies of SIGSEGV (a crash in FFmpeg), or sleeps as a decoder
    caught in a loop would."""
    if how == "crash":
        segfault()
    time.sleep(600)


def _on_worker_with(dies_on: dict):
    """``build_shard`` whose decoding of the videos named in ``dies_on`` (a path's end ->
    how) kills or hangs its Ray worker: patched in the worker's own module as it runs."""
    def build_shard(task, **kwargs):
        from shardkin.builder import shard as on_worker

        write = on_worker._write_video

        def dies_on_one(writer, root, video, *args):
            for end, how in dies_on.items():
                if video["path"].endswith(end):
                    _dies(how)
            return write(writer, root, video, *args)

        on_worker._write_video = dies_on_one
        try:
            return on_worker.build_shard(task, **kwargs)
        finally:
            on_worker._write_video = write

    return build_shard


def test_videos_that_kill_or_hang_their_worker_are_skipped(made_root, tmp_path, ray_cluster,
                                                           monkeypatch):
    """As the local executor: a video whose worker dies on it twice, or spends longer than
    ``video_timeout`` on it twice, is recorded failed with how; the rest are built as
    without them, pixel for pixel, and no file is left of the runs that died."""
    kw = dict(KW, step_between_clips=4)
    bad = {"b_2997.mkv": "crash", "d_60.webm": "hang"}
    monkeypatch.setattr(shard, "build_shard", _on_worker_with(bad))
    on_ray = build(made_root, tmp_path / "ray", "train", executor="ray", video_timeout=4, **kw)
    monkeypatch.undo()
    assert on_ray["skipped"] == [
        {"path": "train/archery/b_2997.mkv", "reason": "worker process died on it twice: its "
         "Ray worker crashed or was killed; its node's Ray logs say how"},
        {"path": "train/bowling/d_60.webm",
         "reason": "worker process died on it twice: stopped after 4 s without progress"}]
    whole = build(made_root, tmp_path / "local", "train", workers=2, **kw)
    kept = [v for v in whole["videos"] if not v["path"].endswith(tuple(bad))]
    assert [(v["path"], v["clips"]) for v in on_ray["videos"]] == \
        [(v["path"], v["clips"]) for v in kept]
    files = [sorted(str(p.relative_to(d)) for p in d.rglob("*")) for d in
             (tmp_path / "local/train", tmp_path / "ray/train")]
    assert files[0] == files[1]
    got = read_split(tmp_path / "ray/train")[1]
    want = [s for s in read_split(tmp_path / "local/train")[1]
            if not s["json"]["path"].endswith(tuple(bad))]
    assert len(got) == len(want) > 0
    for g, w in zip(got, want):
        assert g["json"] == w["json"]
        np.testing.assert_array_equal(g["video.npy"], w["video.npy"])


def test_videos_that_kill_or_hang_their_probe_on_ray_are_skipped(made_root, tmp_path,
                                                                 ray_cluster, monkeypatch):
    """A chunk of videos whose probe task dies, or is stopped after ``video_timeout``, twice
    is probed again video by video; the video that crashes its worker and the one whose
    probe never ends alone are skipped, with how."""
    def probe_chunk(root, options, videos, threads=1, beat=None):
        for path, _ in videos:
            for end, how in {"b_2997.mkv": "crash", "d_60.webm": "hang"}.items():
                if path.endswith(end):
                    _dies(how)
        from shardkin.builder import source

        return source.probe_chunk(root, options, videos, threads=threads, beat=beat)

    monkeypatch.setattr(plan, "probe_chunk", probe_chunk)
    m = build(made_root, tmp_path / "ray", "train", executor="ray", video_timeout=4, **KW)
    assert m["skipped"] == [
        {"path": "train/archery/b_2997.mkv", "reason": "worker process died probing it twice: "
         "its Ray worker crashed or was killed; its node's Ray logs say how"},
        {"path": "train/bowling/d_60.webm",
         "reason": "worker process died probing it twice: stopped after 4 s without progress"}]
    assert len(m["videos"]) == 4


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


def test_two_nodes_build_from_a_bucket_to_a_bucket(made_root, tmp_path, ray_cluster,
                                                   s3_endpoint, monkeypatch):
    """ROOT and OUT on the S3 server, nothing on a file system: the probes and the shard
    tasks run on both nodes, and the shards are byte-identical to a local build's."""
    import boto3
    import s3fs

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    for name in ("ray-root", "ray-out"):
        client.create_bucket(Bucket=name)
    fs = s3fs.S3FileSystem()  # cached: shardkin keeps it alive in forked workers
    fs.put(f"{made_root}/", "ray-root/k", recursive=True)
    ran = tmp_path / "ran"  # only where each task ran: the test's own record
    ran.mkdir()
    real_shard, real_probe = shard.build_shard, plan.probe_chunk

    def build_shard(task, **kwargs):
        node = ray.get_runtime_context().get_node_id()
        (ran / f"shard-{node}-{task['name']}").touch()
        # holds its node's one CPU until a shard has started on the other node too, so the
        # tasks are spread whatever the timing (a busy machine starts Ray workers slowly)
        until = time.monotonic() + 60
        while len({p.name.split("-", 2)[1] for p in ran.glob("shard-*")}) < 2 \
                and time.monotonic() < until:
            time.sleep(0.05)
        return real_shard(task, **kwargs)

    def probe_chunk(*args, **kwargs):
        (ran / f"probe-{ray.get_runtime_context().get_node_id()}-{os.getpid()}").touch()
        return real_probe(*args, **kwargs)

    monkeypatch.setattr(shard, "build_shard", build_shard)
    monkeypatch.setattr(plan, "probe_chunk", probe_chunk)
    options = {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"}
    on_ray = build("s3://ray-root/k", "s3://ray-out/k", "train", executor="ray",
                   storage_options=options, **KW)
    monkeypatch.undo()
    local = build(made_root, tmp_path / "local", "train", workers=2, **KW)
    assert on_ray == local and len(local["shards"]) > 2
    root = "ray-out/k/train"
    fs.invalidate_cache()
    assert {p[len(root) + 1:]: fs.cat_file(p) for p in fs.find(root)} == tree_bytes(
        tmp_path / "local" / "train")
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    shards = [p.name.split("-", 2) for p in ran.glob("shard-*")]
    assert {node for _, node, _ in shards} == nodes  # both nodes built shards
    assert sorted(name for _, _, name in shards) == sorted(s["name"] for s in local["shards"])
    probes = [p.name.split("-") for p in ran.glob("probe-*")]
    assert probes and all(int(pid) != os.getpid() for *_, pid in probes)  # Ray tasks probed
