"""URLs and their filesystems: which targets are URLs, fsspec filesystems that survive
forked DataLoader workers, and :func:`retried`, the retry policy of every read from a store.
"""
from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

T = TypeVar("T")
# not worth retrying: the object or the permission is missing, or the request is wrong
PERMANENT = (FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError,
             ValueError, TypeError, ImportError)


class FetchError(OSError):
    """A read from a store that failed on every attempt."""


def retried(call: Callable[[], T], what: str, attempts: int = 5, backoff: float = 0.2) -> T:
    """``call()``, tried again on a transient failure (connection reset, 5xx, timeout, short
    read) after ``backoff`` seconds, doubled each time, with jitter; after ``attempts``
    tries a :class:`FetchError` names ``what``. Permanent failures are raised at once."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except PERMANENT:
            raise
        except Exception as e:
            if attempt == attempts:
                raise FetchError(f"{what} could not be read in {attempts} attempts; last "
                                 f"error: {type(e).__name__}: {e}") from e
            time.sleep(backoff * 2 ** (attempt - 1) * (0.5 + random.random()))
    raise AssertionError("unreachable")


_INHERITED: list = []  # filesystems a forked child inherited, never to be collected there


def _hold_filesystems() -> None:
    """Before a fork: hold every fsspec filesystem, so that the child keeps them alive.

    Collecting one in the child closes its pooled connections, which unregisters their
    sockets from the epoll instance the child shares with the parent's event loop: the
    parent's next request on such a connection would then wait forever for its answer.
    (Taken before the fork: fsspec empties its instance caches in the child.)
    """
    spec = sys.modules.get("fsspec.spec")
    classes = [spec.AbstractFileSystem] if spec else []
    while classes:
        cls = classes.pop()
        classes.extend(cls.__subclasses__())
        _INHERITED.extend(cls.__dict__.get("_cache", {}).values())


os.register_at_fork(before=_hold_filesystems, after_in_parent=_INHERITED.clear)


def keep_inherited(fs: Any) -> None:
    """Keep a filesystem this forked process inherited alive (see :func:`_hold_filesystems`)."""
    _INHERITED.append(fs)
INSTALL_HINT = ("install object-storage support with: pip install 'shardkin[s3]' "
                "(or shardkin[gcs] for gs://, shardkin[http] for http(s)://)")


def local_path(target: str | os.PathLike) -> str:
    """The path of a plain path or ``file://`` URL."""
    text = os.fspath(target)
    return unquote(urlparse(text).path) if text.startswith("file://") else text


def is_url(target: str | os.PathLike) -> bool:
    """True for ``scheme://`` targets other than ``file://``."""
    text = os.fspath(target)
    return "://" in text and urlparse(text).scheme not in ("", "file")


def filesystem(url: str, storage_options: dict[str, Any] | None = None):
    """(fsspec filesystem, path inside it) for ``url``.

    http(s): a server silent for 30 s (connecting, or mid-answer) is given up on, so the
    request is retried, where aiohttp would wait 5 minutes; ``client_kwargs={"timeout":
    aiohttp.ClientTimeout(...)}`` in ``storage_options`` sets another. (s3fs's own
    defaults are 5 s to connect, 15 s to read.)"""
    try:
        import fsspec
    except ImportError:
        raise ImportError(f"{url} is a URL: {INSTALL_HINT}") from None
    options = dict(storage_options or {})
    if urlparse(url).scheme in ("http", "https"):
        try:
            import aiohttp
        except ImportError:
            raise ImportError(f"{url} is a URL: {INSTALL_HINT}") from None

        client = dict(options.get("client_kwargs") or {})
        client.setdefault("timeout", aiohttp.ClientTimeout(total=None, sock_connect=30,
                                                           sock_read=30))
        options["client_kwargs"] = client
    try:
        return fsspec.core.url_to_fs(url, **options)
    except ImportError as e:
        raise ImportError(f"{url}: {e}; {INSTALL_HINT}") from None
