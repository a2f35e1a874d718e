"""ROOT, where the videos are: a local folder or any fsspec URL (``s3://``, ``gs://``, ...).

:class:`Root` lists folders and files in torchvision's order and gives each video in the
form :mod:`.decode` opens: a local path, or for a store a :class:`RemoteVideo`, a callable
giving a new file object each time it is called (the timeline's scan, the picture and
the sound are read by three demuxers). A video of up to :data:`WHOLE_BYTES` is fetched
whole into memory in one request; a larger one is copied once, in 8 MiB ranges (the next
fetched ahead), into an anonymous local file that its demuxers read, so memory stays
bounded on long videos and none is fetched twice. Every request is retried with backoff
(:func:`shardkin.store.fs.retried`); a video that still cannot be read raises
:class:`~.decode.DecodeError` naming its URL, so it is recorded like a bad local file.
Probing reads only the blocks the demuxer asks for (64 KiB), from many threads at once
(:func:`probe_chunk`), so the requests of many videos are in flight together.
"""
from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

from ..store.folder import Folder
from ..store.fs import retried
from ..store.objectfile import Blocks, ObjectFile, SharedFile
from ..store.ranges import _executor
from .decode import DecodeError, VideoPath, probe_or_reason
from .errors import BuildError

WHOLE_BYTES = 64 << 20  # videos up to this size are fetched in one request
BLOCK_BYTES = 8 << 20  # larger ones in blocks of this size, one fetched ahead
# probing reads the container's head and index (and a few packets) in blocks of this size:
# on the 39 real clips (0.52 MB on average), 3.3 requests and 190 KB a video (256 KiB:
# 1.9 requests, 360 KB; 16 KiB: 11 requests, 180 KB)
PROBE_BLOCK = 64 << 10
PROBE_THREADS = 32  # probes in flight per process
LIST_THREADS = 16  # class folders listed at once


def _pooled(url: str, storage_options: dict[str, Any] | None) -> dict[str, Any] | None:
    """s3fs keeps 10 connections by default (aiobotocore's ``max_pool_connections``): too
    few for :data:`PROBE_THREADS` requests in flight. Raised unless the caller set it."""
    if not url.startswith(("s3://", "s3a://")):
        return storage_options
    options = dict(storage_options or {})
    config = dict(options.get("config_kwargs") or {})
    config.setdefault("max_pool_connections", 2 * PROBE_THREADS)
    return {**options, "config_kwargs": config}


class Root:
    """A build's ROOT: ``root`` is a folder or a URL; a store is opened with
    ``storage_options`` (the same as OUT's)."""

    def __init__(self, root: str | os.PathLike, storage_options: dict[str, Any] | None = None):
        text = os.fspath(root)
        self.folder = Folder(text, _pooled(text, storage_options))
        self.remote = self.folder.remote
        self.url = self.folder.url if self.remote else os.fspath(Path(text).resolve())
        self.storage_options = storage_options
        self._ahead: dict[str, RemoteVideo] = {}  # videos being fetched ahead (prefetch)
        self._listed: dict[str, dict[str, bool]] = {}  # a store's folders listed so far

    def __repr__(self) -> str:
        return f"Root({self.url!r})"

    def _key(self, rel: str) -> str:
        return f"{self.folder._root}/{rel}".rstrip("/")

    def check(self) -> None:
        """BuildError naming ROOT if it is missing or cannot be listed."""
        if not self.remote:
            if not os.path.isdir(self.url):
                raise BuildError(f"dataset root {self.url} does not exist or is not a folder")
            return
        try:
            found = self._entries("", missing_ok=False)
        except Exception as e:  # s3fs/gcsfs/botocore raise many kinds
            raise BuildError(f"cannot list dataset root {self.url}: {type(e).__name__}: {e} "
                             "(check the URL, the credentials and the endpoint)") from None
        if not found:
            raise BuildError(f"dataset root {self.url} is empty or does not exist")

    def _entries(self, rel: str, missing_ok: bool = True) -> dict[str, bool]:
        """What folder ``rel`` of a store holds directly: {name: is a folder}, from one
        retried listing, kept (a plan lists ROOT and a split's folder several times)."""
        if rel not in self._listed:
            try:
                found = retried(lambda: self.folder._fs.ls(self._key(rel), detail=True,
                                                           refresh=True),
                                f"{self.url}/{rel}".rstrip("/"), self.folder.attempts)
            except FileNotFoundError:
                if not missing_ok:
                    raise
                found = []
            self._listed[rel] = {e["name"].rstrip("/").rsplit("/", 1)[-1]:
                                 e.get("type") == "directory" for e in found}
        return self._listed[rel]

    def dirs(self, rel: str = "") -> list[str]:
        """Sorted names of the folders in ``rel`` that are not hidden (``.name``)."""
        if not self.remote:
            folder = os.path.join(self.url, rel)
            if not os.path.isdir(folder):
                return []
            names = [d.name for d in os.scandir(folder) if d.is_dir()]
        else:
            names = [name for name, folder in self._entries(rel).items() if folder]
        return sorted(n for n in names if not n.startswith("."))

    def is_dir(self, rel: str) -> bool:
        if not self.remote:
            return os.path.isdir(os.path.join(self.url, rel))
        parent, _, name = rel.rstrip("/").rpartition("/")
        return self._entries(parent).get(name, False)

    def files(self, rel: str) -> list[tuple[str, int | None]]:
        """Every file under folder ``rel``, as (path relative to ROOT, size: None locally),
        in torchvision's order: ``sorted(os.walk(folder))``, then sorted names."""
        if not self.remote:
            folder = Path(self.url, rel)
            if not folder.is_dir():
                return []
            return [(Path(d, name).relative_to(self.url).as_posix(), None)
                    for d, _, names in sorted(os.walk(folder, followlinks=True))
                    for name in sorted(names)]
        if not self.is_dir(rel):  # no request for a class a split lacks
            return []
        fs, key = self.folder._fs, self._key(rel)
        try:
            found = retried(lambda: fs.find(key, detail=True), f"{self.url}/{rel}",
                            self.folder.attempts)
        except FileNotFoundError:
            return []
        finally:
            fs.invalidate_cache(key)  # a split's listing is large: not kept
        base = len(self.folder._root) + 1
        # (folder, name) sorts as sorted(os.walk()) then sorted names do
        entries = sorted((p[base:].rpartition("/")[::2], info.get("size"))
                         for p, info in found.items() if info.get("type") != "directory")
        return [(f"{d}/{n}", size) for (d, n), size in entries]

    def files_in(self, rels: list[str]) -> list[list[tuple[str, int | None]]]:
        """:meth:`files` of each folder, listed concurrently from a store."""
        if not self.remote or len(rels) < 2:
            return [self.files(r) for r in rels]
        with ThreadPoolExecutor(LIST_THREADS) as pool:
            return list(pool.map(self.files, rels))

    def read_text(self, path: str) -> str:
        """A text file: a local path, a URL (opened with ROOT's storage options)."""
        other = Folder(os.path.dirname(path) or ".", self.storage_options)
        return other.read_bytes(os.path.basename(path)).decode("utf-8-sig")

    def video(self, rel: str, size: int | None = None, probing: bool = False) -> VideoPath:
        """What :mod:`.decode` opens for the video at ``rel`` (``size`` bytes, if known)."""
        if not self.remote:
            return os.fspath(Path(self.url) / rel)
        if not probing and rel in self._ahead:
            return self._ahead.pop(rel)
        return RemoteVideo(self.folder, rel, size, probing)

    def prefetch(self, videos: list[dict]) -> None:
        """Start fetching ``videos`` (plan entries: ``path``, ``bytes``) from a store, so the
        next video of a shard arrives while this one is decoded (no-op locally)."""
        if not self.remote:
            return
        for v in videos:
            if v["path"] not in self._ahead:
                self._ahead[v["path"]] = RemoteVideo(self.folder, v["path"], v.get("bytes"),
                                                     False).start()
        while len(self._ahead) > 2 * max(1, len(videos)):  # never taken: dropped
            del self._ahead[next(iter(self._ahead))]


class RemoteVideo:
    """A video in a store, opened as file objects, as often as asked, from one fetch of
    the whole object: into memory (small ones), or into an anonymous local file (larger
    ones: the timeline's scan reads a video to its end before the picture and the sound
    are decoded, so blocks kept in memory would be fetched twice); when probing, from
    blocks fetched as the demuxer asks for them."""

    def __init__(self, folder: Folder, name: str, size: int | None, probing: bool) -> None:
        self.folder, self.name, self.size, self.probing = folder, name, size, probing
        self._data: bytes | None = None
        self._blocks: Blocks | None = None
        self._spool: BinaryIO | None = None
        self._fetching: Future | None = None

    def __repr__(self) -> str:
        return self.folder.path(self.name)

    def _whole(self, size: int) -> bytes:
        """The whole object, ``size`` bytes, in one ranged GET (s3fs's plain ``cat_file``
        asks for the size first: a second request)."""
        return self.folder.read_range(self.name, 0, size, writable=False) if size else b""

    def start(self) -> RemoteVideo:
        """Fetch a small video (known to be at most :data:`WHOLE_BYTES`) in the background."""
        if self.size is not None and self.size <= WHOLE_BYTES:
            self._fetching = _executor().submit(self._whole, self.size)
        return self

    def _failed(self, e: OSError) -> DecodeError:
        return DecodeError(f"cannot read {self.folder.path(self.name)}: "
                           f"{type(e).__name__}: {e}")

    def __call__(self) -> BinaryIO:
        large = None
        try:
            if self._fetching is not None:
                self._data, self._fetching = self._fetching.result(), None
            if self._data is None and self._blocks is None and self._spool is None:
                if self.probing:
                    self._blocks = Blocks(self.folder, self.name, self.size, block=PROBE_BLOCK,
                                          ahead=0)
                else:
                    size = self.size if self.size is not None else self.folder.size(self.name)
                    if size is None:
                        raise FileNotFoundError("no such object")
                    if size <= WHOLE_BYTES:
                        self._data = self._whole(size)
                    else:
                        large = Blocks(self.folder, self.name, size, block=BLOCK_BYTES)
        except OSError as e:
            raise self._failed(e) from None
        if large is not None:
            self._spool = self._spooled(large)
        if self._data is not None:
            return io.BytesIO(self._data)  # shares the bytes, copies none
        if self._spool is not None:
            return SharedFile(self._spool)
        return _Guarded(ObjectFile(self._blocks), self.folder.path(self.name))

    def _spooled(self, blocks: Blocks) -> BinaryIO:
        """The object copied block by block (the next fetched ahead) into an anonymous local
        file (in TMPDIR; gone once no reader holds it). A block that cannot be fetched is
        the video's DecodeError; a local write that fails, the disk's OSError."""
        spool = tempfile.TemporaryFile()
        try:
            for k in range(-(-blocks.size // blocks.block)):
                try:
                    data = blocks.get(k)
                except OSError as e:
                    raise self._failed(e) from None
                spool.write(data)
            spool.flush()
        except BaseException:
            spool.close()
            raise
        return spool


class _Guarded(io.RawIOBase):
    """A file whose failed reads raise :class:`DecodeError` naming the URL: the build
    records the video (with the clips made before) instead of failing its shard, which
    a plain OSError, taken for the output disk, would."""

    def __init__(self, file: ObjectFile, url: str) -> None:
        super().__init__()
        self._file, self._url = file, url

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._file.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        try:
            return self._file.seek(offset, whence)
        except OSError as e:
            raise DecodeError(f"cannot read {self._url}: {type(e).__name__}: {e}") from None

    def readinto(self, b) -> int:
        try:
            return self._file.readinto(b)
        except OSError as e:
            raise DecodeError(f"cannot read {self._url}: {type(e).__name__}: {e}") from None


def probe_chunk(root: str, storage_options: dict[str, Any] | None,
                videos: list[tuple[str, int | None]], threads: int = PROBE_THREADS,
                beat: Callable[[], None] | None = None) -> list[dict]:
    """:func:`~.decode.probe_or_reason` of each (path, size) of ``videos`` under ``root``,
    ``threads`` at once, calling ``beat()`` after each; one task of a local or Ray probe."""
    source = Root(root, storage_options)

    def one(video: tuple[str, int | None]) -> dict:
        probe = probe_or_reason(source.video(*video, probing=True))
        if beat is not None:
            beat()
        return probe

    if threads <= 1 or len(videos) < 2:
        return [one(v) for v in videos]
    with ThreadPoolExecutor(min(threads, len(videos))) as pool:
        return list(pool.map(one, videos))


def as_root(root: Root | str | os.PathLike,
            storage_options: dict[str, Any] | None = None) -> Root:
    """``root`` as a :class:`Root` (opened with ``storage_options``)."""
    return root if isinstance(root, Root) else Root(root, storage_options)
