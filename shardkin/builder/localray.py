"""A local Ray cluster that ends with the builder that started it, however it ends.

``ray.init()`` starts a cluster's processes (GCS, raylet, the agents, ...) as children of
the driver, and some outlive a driver killed by SIGKILL: with Ray 2.60 the dashboard and
runtime-env agents were still running minutes later, waiting on the dead GCS. So the
cluster shardkin starts runs in a session of its own: a small keeper process, started in
a new session, runs ``ray start --head`` (every process Ray starts stays in that session)
and then reads its standard input, whose only writer is the builder. When the builder
ends, whether it returns, is interrupted or is killed, the kernel closes that pipe, and the
keeper ends every process of its session: the whole cluster and nothing else. Never
``ray stop``: it stops every Ray cluster on the machine.

The cluster is what ``ray.init()`` would start (the same addresses, token authentication),
with its files in a temporary folder removed at the end.
"""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

_keeper: subprocess.Popen | None = None


def start(num_cpus: int) -> str:
    """Start a local cluster of ``num_cpus`` CPUs for this process; returns its temporary
    folder, where ``ray.init(_temp_dir=...)`` finds it (and with it the same token
    authentication as ``ray start``)."""
    from .errors import BuildError

    global _keeper
    stop()  # a cluster started earlier, whose driver was shut down since
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="shardkin-ray-")
    # run as a script in isolated mode (-I): it needs only the standard library
    _keeper = subprocess.Popen(
        [sys.executable, "-I", __file__, str(port), str(num_cpus), temp],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True, text=True)
    atexit.register(stop)
    answer = _keeper.stdout.readline().strip()
    if answer != "ready":
        stop()
        raise BuildError(f"could not start a local Ray cluster: {answer or 'no answer'} "
                         "(or pass --ray-address to use a running one)")
    return temp


def stop() -> None:
    """Disconnect and end the cluster started by :func:`start` (at exit, or earlier)."""
    global _keeper
    if _keeper is None:
        return
    if "ray" in sys.modules:
        sys.modules["ray"].shutdown()  # before its cluster goes
    _keeper.stdin.close()  # the keeper ends the cluster, then itself
    _keeper.wait(30)
    _keeper = None


def _session_members(sid: int) -> list[int]:
    """Live processes of session ``sid`` other than this one (Linux's /proc)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # after "pid (command)"
        except OSError:  # ended meanwhile
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:
            found.append(int(name))
    return found


def _end_session(temp: str) -> None:
    """SIGKILL every other process of this session (a throwaway cluster: nothing to save)
    until none is left, then remove the cluster's folder ``temp``."""
    if not os.path.isdir("/proc"):  # not Linux: this process group, the keeper with it
        shutil.rmtree(temp, ignore_errors=True)
        os.killpg(0, signal.SIGKILL)
    while members := _session_members(os.getsid(0)):
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    shutil.rmtree(temp, ignore_errors=True)


def _keep(port: int, num_cpus: int, temp: str) -> None:
    """The keeper: start the head node, say "ready", wait for the builder to end, end all."""
    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    command = [ray] if os.access(ray, os.X_OK) else [
        sys.executable, "-c", "from ray.scripts.scripts import main; main()"]
    log = os.path.join(temp, "ray-start.log")
    try:
        with open(log, "w") as out:  # a file, not a pipe: the daemons may keep it open
            if not os.path.exists(os.path.expanduser("~/.ray/auth_token")):
                # token authentication, as ray.init() sets up for the clusters it starts
                subprocess.run([*command, "get-auth-token", "--generate"],
                               stdin=subprocess.DEVNULL, stdout=out, stderr=out)
            started = subprocess.run(
                [*command, "start", "--head", f"--port={port}", f"--num-cpus={num_cpus}",
                 "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        if started.returncode:
            with open(log) as f:
                print(" ".join(f.read().split()[-60:]), flush=True)
            return
        print("ready", flush=True)
        sys.stdin.read()  # until the builder's end of the pipe closes
    finally:
        _end_session(temp)


if __name__ == "__main__":
    _keep(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
