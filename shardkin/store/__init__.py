"""Where builds live: local folders and fsspec URLs (:mod:`.folder`), retried range
requests streamed ahead (:mod:`.ranges`), the local shard cache (:mod:`.cache`), the
one way to open a split and its shards (:mod:`.split`) and the one way to read their
samples, checked (:mod:`.fetch`)."""
from .cache import ShardCache
from .fetch import fetch, fetch_samples, walk
from .folder import Folder
from .fs import FetchError, is_url, local_path, retried
from .locate import locate
from .ranges import RangeStream
from .split import Opened, Split, load_manifest, open_split

__all__ = ["FetchError", "Folder", "Opened", "RangeStream", "ShardCache", "Split", "fetch",
           "fetch_samples", "is_url", "load_manifest", "local_path", "locate", "open_split",
           "retried", "walk"]
