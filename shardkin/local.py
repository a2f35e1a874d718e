"""Run shard tasks on local worker processes, with progress reported back live."""
from __future__ import annotations

import multiprocessing as mp
import queue
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, Iterator

# fork starts a worker in milliseconds with av and numpy already imported; the build
# itself starts no threads and never imports torch, so forking it is safe
_START = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
_progress_queue: Any = None


def _init(q: Any) -> None:
    global _progress_queue
    _progress_queue = q


def _report(clips: int, nbytes: int) -> None:
    _progress_queue.put((clips, nbytes))


def _call(fn: Callable, task: Any, kwargs: dict) -> Any:
    return fn(task, progress=_report, **kwargs)


def map_processes(fn: Callable, items: Iterable, workers: int, chunksize: int = 8) -> Iterator:
    """``map(fn, items)`` over worker processes, in order."""
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    with ProcessPoolExecutor(workers, mp_context=mp.get_context(_START)) as pool:
        yield from pool.map(fn, items, chunksize=chunksize)


def run_tasks(
    fn: Callable, tasks: list, workers: int, on_progress: Callable[[int, int], None],
    retries: int = 2, **kwargs: Any,
) -> Iterator[tuple[Any, Any, BaseException | None]]:
    """Run ``fn(task, progress=..., **kwargs)`` for each task; yield (task, result, error).

    A task that raises, or whose process dies, is retried ``retries`` times
    on a fresh pool before its error is yielded.
    """
    ctx = mp.get_context(_START)
    q = ctx.Queue()
    attempts = {id(t): 0 for t in tasks}
    todo = list(tasks)
    while todo:
        pool = ProcessPoolExecutor(max(1, min(workers, len(todo))), mp_context=ctx,
                                   initializer=_init, initargs=(q,))
        running: dict[Future, Any] = {pool.submit(_call, fn, t, kwargs): t for t in todo}
        todo = []
        try:
            while running:
                done, _ = wait(running, timeout=0.2, return_when=FIRST_COMPLETED)
                _drain(q, on_progress)
                for fut in done:
                    task = running.pop(fut)
                    try:
                        yield task, fut.result(), None
                    except BaseException as e:  # noqa: BLE001 - reported to the caller
                        attempts[id(task)] += 1
                        if attempts[id(task)] <= retries:
                            todo.append(task)
                        else:
                            yield task, None, e
                        if isinstance(e, BrokenProcessPool):
                            todo += [running.pop(f) for f in list(running)]
        finally:
            pool.shutdown(cancel_futures=True)
            _drain(q, on_progress)


def _drain(q: Any, on_progress: Callable[[int, int], None]) -> None:
    while True:
        try:
            on_progress(*q.get_nowait())
        except queue.Empty:
            return
