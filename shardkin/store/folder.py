"""Where a build lives: a local folder or an fsspec URL (``s3://``, ``gs://``, ...).

Local paths need only the standard library. URLs need fsspec and the store's own
package (s3fs, gcsfs: ``pip install 'shardkin[s3]'``); credentials and endpoints
come from the usual places (environment, config files) or ``storage_options``.
Files are published atomically: a local file is renamed into place, an object is
uploaded in one PUT or one multipart upload, which S3 makes visible only when complete.
Every read from a store is retried on transient failures (:func:`.fs.retried`).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from .fs import filesystem, is_url, keep_inherited, local_path, retried


class Folder:
    """Files by name under a local folder or a URL prefix, with the same interface; reads
    from a store are tried ``attempts`` times (:func:`retried`)."""

    def __init__(self, target: str | os.PathLike, storage_options: dict[str, Any] | None = None,
                 attempts: int = 5):
        text = os.fspath(target)
        self.storage_options, self.attempts = storage_options, attempts
        self.remote = is_url(text)
        self._pid, self._fs_of_pid = 0, None
        if self.remote:
            self.url = text.rstrip("/")
            self._root = filesystem(self.url, storage_options)[1].rstrip("/")
        else:
            self.url = local_path(text)

    @property
    def _fs(self):
        """The fsspec filesystem, made again in a forked child (fsspec's are not fork-safe);
        the parent's is kept there (:func:`.fs.keep_inherited`)."""
        if self._pid != os.getpid():
            if self._fs_of_pid is not None:
                keep_inherited(self._fs_of_pid)
            self._fs_of_pid, self._pid = filesystem(self.url, self.storage_options)[0], os.getpid()
        return self._fs_of_pid

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pid": 0, "_fs_of_pid": None}

    def __repr__(self) -> str:
        return f"Folder({self.url!r})"

    def child(self, name: str) -> Folder:
        return Folder(self.path(name), self.storage_options, self.attempts)

    def path(self, name: str) -> str:
        """The URL or local path of ``name``."""
        return f"{self.url}/{name}" if self.remote else os.path.join(self.url, name)

    def _key(self, name: str) -> str:
        return f"{self._root}/{name}"

    def exists(self, name: str) -> bool:
        """Whether ``name`` exists; a store's other errors (refused certificate or credentials,
        unreachable host) are raised, not taken for a missing file (fsspec's ``exists`` would)."""
        if not self.remote:
            return os.path.exists(self.path(name))

        def exists() -> bool:
            try:
                self._fs.info(self._key(name))
                return True
            except FileNotFoundError as e:
                cause = e.__cause__  # fsspec's http reports every failure as a missing file
                if type(cause).__module__.startswith("aiohttp") and getattr(
                        cause, "status", None) not in (404, 410):
                    raise cause from None
                return False

        return retried(exists, self.path(name), self.attempts)

    def size(self, name: str) -> int | None:
        try:
            if self.remote:
                return retried(lambda: self._fs.size(self._key(name)), self.path(name),
                               self.attempts)
            return os.path.getsize(self.path(name))
        except FileNotFoundError:
            return None

    def fingerprint(self, name: str) -> str | None:
        """What identifies this version of ``name`` without reading it: its size and the
        store's checksum (S3 ETag, GCS md5 or crc32c) or, for a local file, its modification
        time. None if it is missing or the store keeps no checksum."""
        try:
            if not self.remote:
                st = os.stat(self.path(name))
                return f"{st.st_size}:{st.st_mtime_ns}"
            info = retried(lambda: self._fs.info(self._key(name)), self.path(name),
                           self.attempts)
        except FileNotFoundError:
            return None
        for key in ("ETag", "etag", "md5Hash", "crc32c", "checksum"):
            if info.get(key):
                return f"{info.get('size')}:{key}:{str(info[key]).strip(chr(34))}"
        return None

    def read_bytes(self, name: str) -> bytes:
        if self.remote:
            return retried(lambda: self._fs.cat_file(self._key(name)), self.path(name),
                           self.attempts)
        return Path(self.path(name)).read_bytes()

    def read_range(self, name: str, offset: int, length: int,
                   writable: bool = True) -> bytes | bytearray | memoryview:
        """``length`` bytes of ``name`` from ``offset``: one positioned read (``preadv``,
        safe in forked workers) or one range request, retried from its first byte. Writable
        bytes (a local file's: fresh memory, not zeroed first), or with ``writable=False``
        possibly the store's bytes (no copy)."""
        if self.remote:
            def get() -> bytes | bytearray:
                data = self._fs.cat_file(self._key(name), start=offset, end=offset + length)
                if len(data) != length:  # a cut answer, or the object changed
                    raise EOFError(f"got {len(data)} bytes")
                return bytearray(data) if writable else data

            return retried(get, f"{self.path(name)}: bytes {offset}-{offset + length - 1}",
                           self.attempts)
        # not zeroed first: a bytearray(length) is, which cost shardkin.Kinetics 5% a clip
        data = memoryview(np.empty(length, np.uint8))
        fd = os.open(self.path(name), os.O_RDONLY)
        try:
            got = os.preadv(fd, [data], offset)
        finally:
            os.close(fd)
        if got != length:
            raise EOFError(f"{self.path(name)}: wanted {length} bytes at {offset}, got {got}")
        return data

    def read_json(self, name: str) -> Any:
        return json.loads(self.read_bytes(name).decode("utf-8"))

    def names(self, prefix: str = "") -> list[str]:
        """Names of the files directly in this folder that start with ``prefix`` (none from
        a web server that does not list its folders)."""
        if self.remote:
            try:
                found = self._fs.ls(self._root, detail=False, refresh=True)
            except FileNotFoundError:
                return []
            except Exception as e:
                if urlparse(self.url).scheme in ("http", "https") and getattr(e, "status", 0):
                    return []  # an HTTP error status: no listing here
                raise
            names = [p.rstrip("/").rsplit("/", 1)[-1] for p in found]
        else:
            names = os.listdir(self.url) if os.path.isdir(self.url) else []
        return sorted(n for n in names if n.startswith(prefix))

    def make(self) -> None:
        """Create the local folder; on object storage, prove we can write there."""
        if not self.remote:
            os.makedirs(self.url, exist_ok=True)
            return
        probe = ".shardkin-write-check"
        self._fs.pipe_file(self._key(probe), b"ok")
        self._fs.rm(self._key(probe))

    def temp_path(self, name: str) -> str:
        """A local path to write ``name`` to before :meth:`publish`."""
        if self.remote:
            return os.path.join(tempfile.mkdtemp(prefix="shardkin-"), os.path.basename(name))
        os.makedirs(os.path.dirname(self.path(name)) or ".", exist_ok=True)
        head, tail = os.path.split(self.path(name))
        return os.path.join(head, f".{tail}.tmp-{os.getpid()}")

    def publish(self, local_file: str, name: str) -> None:
        """Make a finished local file visible as ``name``, atomically."""
        if self.remote:
            try:
                self._fs.put_file(local_file, self._key(name))
            finally:
                shutil.rmtree(os.path.dirname(local_file), ignore_errors=True)
        else:
            os.replace(local_file, self.path(name))

    def discard(self, local_file: str) -> None:
        """Remove a file of :meth:`temp_path` that will not be published."""
        if self.remote:
            shutil.rmtree(os.path.dirname(local_file), ignore_errors=True)
        elif os.path.exists(local_file):
            os.unlink(local_file)

    def write_bytes(self, name: str, data: bytes) -> None:
        tmp = self.temp_path(name)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        self.publish(tmp, name)

    def create(self, name: str, data: bytes) -> None:
        """Write ``name`` only if it does not exist yet, else FileExistsError: one exclusive
        create (a local ``O_EXCL`` open; on S3 a conditional write, ``If-None-Match: *``,
        so of two writers exactly one succeeds)."""
        if not self.remote:
            with open(self.path(name), "xb") as f:
                f.write(data)
            return
        try:
            self._fs.pipe_file(self._key(name), data, mode="create")
        except OSError as e:
            # s3fs reports a 412 answer without its Condition field as EINVAL
            if isinstance(e, FileExistsError) or "precondition" in str(e).lower():
                raise FileExistsError(f"{self.path(name)} exists") from None
            raise

    def sizes(self, prefix: str = "") -> dict[str, int]:
        """Sizes of the files directly in this folder whose names start with ``prefix``,
        from one listing."""
        if self.remote:
            try:
                found = self._fs.ls(self._root, detail=True, refresh=True)
            except FileNotFoundError:
                return {}
            entries = ((e["name"].rstrip("/").rsplit("/", 1)[-1], e.get("size") or 0)
                       for e in found if e.get("type") != "directory")
        else:
            entries = ((e.name, e.stat().st_size) for e in os.scandir(self.url) if e.is_file())
        return {name: size for name, size in entries if name.startswith(prefix)}

    def write_json(self, name: str, data: Any, compact: bool = False) -> None:
        """``data`` as JSON with sorted keys, one item a line, streamed into the file (a
        650k-video manifest held as one string took 1.3 GB more), or ``compact``: on one
        line, by the C encoder (faster; the indented form has only Python's)."""
        tmp = self.temp_path(name)
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            if compact:
                f.write(json.dumps(data, sort_keys=True, ensure_ascii=False,
                                   separators=(",", ":")))
            else:
                json.dump(data, f, indent=1, sort_keys=True, ensure_ascii=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        self.publish(tmp, name)

    def delete(self, name: str) -> None:
        if self.remote:
            if self._fs.exists(self._key(name)):
                self._fs.rm(self._key(name), recursive=True)
        elif os.path.isdir(self.path(name)):
            shutil.rmtree(self.path(name))
        elif os.path.exists(self.path(name)):
            os.unlink(self.path(name))
