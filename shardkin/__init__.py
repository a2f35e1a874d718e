"""shardkin: pre-clipped WebDataset shards for video training.

``shardkin.build`` turns a Kinetics-style tree into shards (no torch needed);
``shardkin.ShardDataset`` and ``shardkin.make_loader`` stream them into PyTorch;
``shardkin.Kinetics`` indexes them like ``torchvision.datasets.Kinetics``.
Torch is imported only when the reader is first used. The packages, bottom to top:
``format`` (the on-disk contract), ``store`` (where builds live), ``builder`` (the
write side), ``reader`` (the read side), ``inspection`` (info, verify, show); beside
them ``transforms`` (torchvision's video presets, cheaper; torch only); see ARCHITECTURE.md.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "build": ("shardkin.builder", "build"),
    "BuildError": ("shardkin.builder", "BuildError"),
    "BuildOptions": ("shardkin.format.options", "BuildOptions"),
    "load_manifest": ("shardkin.store.split", "load_manifest"),
    "ShardError": ("shardkin.format.tar", "ShardError"),
    "ShardDataset": ("shardkin.reader.dataset", "ShardDataset"),
    "make_loader": ("shardkin.reader.loader", "make_loader"),
    "Kinetics": ("shardkin.reader.kinetics", "Kinetics"),
    "RandomClipSampler": ("shardkin.samplers", "RandomClipSampler"),
    "UniformClipSampler": ("shardkin.samplers", "UniformClipSampler"),
    "wds_decoder": ("shardkin.format.wds", "decoder"),
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'shardkin' has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value
