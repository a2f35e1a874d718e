"""The build side: a video tree becomes shards, ``index.npy`` and a manifest.

:mod:`.pipeline` (``build``) runs the steps: :mod:`.scan` finds the videos, :mod:`.plan`
probes them and packs them into shards, :mod:`.executors` runs the shard tasks of
:mod:`.shard` (local processes or Ray), which cut clips with :mod:`.decode` and
:mod:`.clips`. The options are :class:`shardkin.format.options.BuildOptions`; nothing
here imports the reader or torch.
"""
from .errors import BuildError
from .pipeline import build, build_split

__all__ = ["BuildError", "build", "build_split"]
