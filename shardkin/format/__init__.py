"""The on-disk contract: what a shardkin build is, byte for byte. Read this first.

A build of a split is a folder of plain tar shards, ``index.npy`` and ``manifest.json``:

- :mod:`.sample`: one clip is one sample, members sharing a key (``KEY.video.npy`` or
  another codec's video member, ``KEY.audio.npy`` or ``KEY.audio.flac`` or no audio
  member, ``KEY.cls``, ``KEY.json``); keys are made and parsed there.
- :mod:`.codecs`: the video member of each codec (raw, zstd, jpeg: the clip as one JPEG,
  :mod:`.jpeg`); :mod:`.audio`: the audio member of each audio codec; :mod:`.npy`: npy
  payloads without pickle; :mod:`.wds`: a decoder for webdataset pipelines.
- :mod:`.tar`, :mod:`.tarread`, :mod:`.tarwrite`: the tar layer (one block size), which
  knows nothing of samples; :mod:`.samples`: members grouped into samples, the one
  grouping every reader and ``verify`` use.
- :mod:`.manifest`: the manifest as typed records, ``FORMAT_VERSION`` and the index layout;
  :mod:`.options`: the build options the manifest records; :mod:`.flags`: ``shardkin
  build``'s flags, made from them.
- :mod:`.checks`: the format's checks, each in one place: what a clip's frames and sound
  must be, and a sample's bytes against the checksum its index row keeps (``SampleHash``).
"""
from .checks import SampleHash, audio_problem, video_problem
from .codecs import JPEG, MEMBER, RAW, VIDEO_MEMBERS, ZSTD, decode_video, encode_video
from .manifest import INDEX, MANIFEST, IndexInfo, Manifest, ShardInfo, VideoRecord
from .npy import decode_npy, encode_npy
from .sample import (
                     AUDIO,
                     FORMAT_VERSION,
                     LABEL,
                     META,
                     VIDEO,
                     clip_metadata,
                     encode_sample,
                     parse_key,
                     sample_key,
)
from .samples import Deferred, TarSample, iter_samples, missing_members
from .tar import BLOCK, ShardError
from .tarread import BlobReader, TarReader
from .tarwrite import ShardWriter

__all__ = ["AUDIO", "BLOCK", "FORMAT_VERSION", "INDEX", "JPEG", "LABEL", "MANIFEST", "MEMBER",
           "META", "RAW", "VIDEO", "VIDEO_MEMBERS", "ZSTD", "BlobReader", "Deferred", "IndexInfo",
           "Manifest", "SampleHash", "ShardError", "ShardInfo", "ShardWriter", "TarReader",
           "TarSample", "VideoRecord", "audio_problem", "clip_metadata", "decode_npy",
           "decode_video", "encode_npy", "encode_sample", "encode_video", "iter_samples",
           "missing_members", "parse_key", "sample_key", "video_problem"]
