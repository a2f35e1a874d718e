"""The read side: ``ShardDataset`` (streaming, :mod:`.dataset` over :mod:`.partition`,
:mod:`.lanes` and :mod:`.records`; clips checked as read, :mod:`.checking`), the map-style
``Kinetics``, and ``make_loader``
(:mod:`.loader`, :mod:`.maploader`; batches in reused shared memory, :mod:`.memory`,
made by :mod:`.collate`); :mod:`.device`: JPEG batches decoded on a GPU (``decode_device``).
Everything here needs torch."""
from ..format.tar import ShardError
from .collate import collate
from .dataset import ShardDataset
from .device import JpegBatch, decode_batch
from .kinetics import Kinetics
from .loader import ShardLoader, make_loader
from .maploader import MapLoader

__all__ = ["JpegBatch", "Kinetics", "MapLoader", "ShardDataset", "ShardError", "ShardLoader",
           "collate", "decode_batch", "make_loader"]
