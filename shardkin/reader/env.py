"""Where this process stands: its DataLoader worker and its distributed rank."""
from __future__ import annotations

from torch.utils.data import get_worker_info


def worker_id() -> tuple[int, int]:
    """(worker, num_workers) of the current DataLoader worker; (0, 1) outside workers."""
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def dist_rank() -> tuple[int, int]:
    """(rank, world_size) of ``torch.distributed`` when initialised, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
