"""The read side: ``ShardDataset`` (streaming, :mod:`.dataset` over :mod:`.partition`,
:mod:`.lanes` and :mod:`.records`; clips checked as read, :mod:`.checking`), the map-style
``Kinetics``, and ``make_loader``
(:mod:`.loader`, :mod:`.maploader`; batches in reused shared memory, :mod:`.memory`,
made by :mod:`.collate`). Everything here needs torch."""
from ..format.tar import ShardError
from .collate import collate
from .dataset import ShardDataset
from .kinetics import Kinetics
from .loader import ShardLoader, make_loader
from .maploader import MapLoader

__all__ = ["Kinetics", "MapLoader", "ShardDataset", "ShardError", "ShardLoader", "collate",
           "make_loader"]
