"""A build whose shard tasks hang in C code that holds the GIL, for test_lifecycle.py.

    python stalled_build.py ROOT OUT START_METHOD

Each task marks ``OUT/train/stalled-<pid>`` and then sleeps in libc's ``sleep`` called
through ``ctypes.PyDLL``, which keeps the GIL: no Python code can run in that worker
(no signal handler, no other thread) until the call returns.
"""
from __future__ import annotations

import ctypes
import os
import sys

import shardkin.builder.processes as processes
import shardkin.builder.shard as shard
from shardkin.builder import build


def stall(task: dict, root: str, out: str, options, **kwargs) -> dict:
    open(os.path.join(out, f"stalled-{os.getpid()}"), "w").close()
    ctypes.PyDLL(None).sleep(600)
    raise AssertionError("not stopped")


if __name__ == "__main__":
    processes.start_method = lambda: sys.argv[3]
    shard.build_shard = stall  # looked up by the pipeline when it runs the tasks
    build(sys.argv[1], sys.argv[2], "train", frames_per_clip=2, clips_per_shard=1, workers=2,
          progress=False)
