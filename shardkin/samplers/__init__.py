"""Clip samplers with torchvision's signatures and exact indices (torchcodec style: pure
index functions, keyword-only, over per-video clip counts; samplers on top).

``RandomClipSampler(dataset.video_clips, 5)`` and ``UniformClipSampler(...)`` take a
``shardkin.Kinetics`` or its ``video_clips`` (:class:`ClipCounts`); ``DistributedSampler``
is torchvision's wrapper that shares a sampler's clips among ranks. Needs torch only.
"""
from .clip_sampler import DistributedSampler, RandomClipSampler, UniformClipSampler, clip_counts
from .indices import random_clip_indices, uniform_clip_indices
from .video_clips import ClipCounts

__all__ = ["ClipCounts", "DistributedSampler", "RandomClipSampler", "UniformClipSampler",
           "clip_counts", "random_clip_indices", "uniform_clip_indices"]
