"""No process outlives its builder: a build stopped by SIGKILL, SIGTERM or SIGINT while its
workers decode long videos, workers started by fork or spawn and stuck in C code that holds
the GIL, the local Ray cluster shardkin starts; and no shard published for a dead builder."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import psutil
import pytest

from shardkin.synth import make_video

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parents[1]
GONE_WITHIN = 10.0  # "a few seconds", with room for a loaded machine
BUILD = ["--split", "train", "--frames-per-clip", "2", "--min-dimension", "32",
         "--clips-per-shard", "1", "--quiet"]


def repeat_video(src: Path, dst: Path, times: int) -> Path:
    """``src``'s packets ``times`` over, one after the other (no encoding: a long video made
    in a moment; ``src`` must be one closed group of pictures)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = inp.streams.video[0]
        packets = [p for p in inp.demux(stream) if p.size]
        span = max(p.pts + p.duration for p in packets) - min(p.pts for p in packets)
        copy = out.add_stream_from_template(stream)
        for k in range(times):
            for p in packets:
                q = av.Packet(bytes(p))
                q.pts, q.dts, q.duration = p.pts + k * span, p.dts + k * span, p.duration
                q.is_keyframe, q.time_base, q.stream = p.is_keyframe, stream.time_base, copy
                out.mux(q)
    return dst


@pytest.fixture(scope="module")
def long_root(tmp_path_factory) -> Path:
    """Two videos of 3000 frames at 480x360 (several seconds of decoding each, every frame
    converted), one per shard, so that each of two workers is decoding one."""
    root = tmp_path_factory.mktemp("long")
    gop = make_video(root / "gop.mp4", 30, 30, (480, 360), None)  # x264, one GOP of 30
    for i in range(2):
        repeat_video(gop, root / "train" / f"c{i}" / f"v{i}.mp4", 100)
    gop.unlink()
    return root


def session(sid: int) -> list[psutil.Process]:
    """The live processes of session ``sid`` (zombies have ended: only their parent's
    bookkeeping is left)."""
    found = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return found


def left_after(sids: set[int], seconds: float) -> list[str]:
    """The processes of sessions ``sids`` still running ``seconds`` from now, if any."""
    deadline = time.monotonic() + seconds
    while True:
        left = [p for sid in sids for p in session(sid)]
        if not left or time.monotonic() > deadline:
            out = []
            for p in left:
                try:
                    out.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
                except psutil.NoSuchProcess:
                    pass
            return out
        time.sleep(0.1)


def kill_sessions(sids: set[int]) -> None:
    """Clean up after a failed test."""
    for sid in sids:
        for p in session(sid):
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass


def wait_for(pattern: str, folder: Path, count: int, proc: subprocess.Popen,
             seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while len(list(folder.glob(pattern))) < count:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{count} x {pattern} never appeared in {folder}"
        time.sleep(0.01)


def start(command: list[str], **kw) -> subprocess.Popen:
    """``command`` in a session of its own: all it starts is found by the session id."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT), str(HERE)])}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**env, **kw})


def stop(proc: subprocess.Popen, sig: int) -> tuple[str, list[str]]:
    """Send ``sig``; (the builder's stderr, its processes left after GONE_WITHIN s)."""
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    return err, left_after({proc.pid}, GONE_WITHIN)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT],
                         ids=lambda s: signal.Signals(s).name)
def test_a_stopped_build_leaves_no_process(long_root, tmp_path, sig):
    split = tmp_path / "out" / "train"
    proc = start([sys.executable, "-m", "shardkin", "build", str(long_root),
                  str(tmp_path / "out"), "--workers", "2", *BUILD])
    try:
        wait_for(".train-*.tmp-*", split, 2, proc)  # both workers are decoding a video
        workers = psutil.Process(proc.pid).children()
        assert len(workers) == 2
        err, left = stop(proc, sig)
        assert not left, f"still running {GONE_WITHIN} s after {sig!r}: {left}"
    finally:
        kill_sessions({proc.pid})
    names = sorted(p.name for p in split.iterdir())
    assert not [n for n in names if n.endswith(".tar")], names  # nothing was published
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
        return
    assert proc.returncode == 128 + sig, err
    assert f"stopped by {signal.Signals(sig).name}" in err and "run the same command" in err
    assert names == [".build"], names  # no lock, no half-written shard
    resumed = subprocess.run([sys.executable, "-m", "shardkin", "build", str(long_root),
                              str(tmp_path / "out"), "--workers", "2", *BUILD],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_workers_stuck_in_c_code_holding_the_gil_end_with_their_builder(long_root, tmp_path,
                                                                        method):
    out = tmp_path / "out"
    proc = start([sys.executable, str(HERE / "stalled_build.py"), str(long_root), str(out),
                  method])
    try:
        wait_for("stalled-*", out / "train", 2, proc)
        _, left = stop(proc, signal.SIGKILL)
        assert not left, f"still running {GONE_WITHIN} s after SIGKILL: {left}"
    finally:
        kill_sessions({proc.pid})


def test_a_worker_whose_builder_died_publishes_nothing(made_root, tmp_path):
    """The check before the rename: a worker whose parent is not its builder any more
    removes its finished shard and ends, publishing nothing."""
    code = f"""
import os
from shardkin.builder import lifecycle, shard
from shardkin.format.options import BuildOptions
lifecycle._builder_pid = os.getppid() + 100000  # as if the builder had died
video = dict(path="train/archery/a 24fps.mp4", video_index=0, label=0, **{{"class": "archery"}})
shard.build_shard({{"name": "train-000000.tar", "videos": [video]}}, {str(made_root)!r},
                  {str(tmp_path)!r}, BuildOptions.from_kwargs(frames_per_clip=4))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(PROJECT)})
    assert r.returncode == 1, r.stderr
    assert os.listdir(tmp_path) == [], os.listdir(tmp_path)  # no shard, no temporary file


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM],
                         ids=lambda s: signal.Signals(s).name)
def test_the_local_ray_cluster_ends_with_its_builder(long_root, tmp_path, sig):
    pytest.importorskip("ray")
    split = tmp_path / "out" / "train"
    proc = start([sys.executable, "-m", "shardkin", "build", str(long_root),
                  str(tmp_path / "out"), "--executor", "ray", "--workers", "2", *BUILD],
                 HOME=str(tmp_path),  # Ray keeps its token in ~/.ray
                 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")  # Ray on 127.0.0.1 only (checked)
    sids = {proc.pid}
    try:
        wait_for(".train-*.tmp-*", split, 2, proc, seconds=180)  # two Ray tasks decoding
        keeper = [p for p in psutil.Process(proc.pid).children()
                  if "localray" in " ".join(p.cmdline())]
        assert len(keeper) == 1
        sids.add(keeper[0].pid)
        ray = session(keeper[0].pid)
        assert {"gcs_server", "raylet"} <= {p.name() for p in ray}
        listening = {c.laddr.ip for c in psutil.net_connections("inet")
                     if c.status == psutil.CONN_LISTEN and c.pid in {p.pid for p in ray}}
        assert listening and listening <= {"127.0.0.1", "::ffff:127.0.0.1"}, listening
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        left = left_after(sids, GONE_WITHIN)
        assert not left, f"still running {GONE_WITHIN} s after {sig!r}: {left}"
    finally:
        kill_sessions(sids)
    assert not list(split.glob("*.tar"))  # nothing was published
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + sig, err
        assert "stopped by SIGTERM" in err and not (split / ".build.lock").exists()
