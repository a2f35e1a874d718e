"""Build one shard: decode its videos, write their clips, record what happened."""
from __future__ import annotations

import os
from collections.abc import Callable

import av

from ..format.options import BuildOptions
from ..format.sample import clip_metadata, encode_sample, sample_key
from ..format.tarwrite import ShardWriter
from ..store.folder import Folder
from .decode import DecodeError, VideoCutter
from .lifecycle import builder_alive
from .source import Root
from .tasks import Progress, heartbeat


def _record(video: dict, shard: str | None, reason: str | None = None) -> dict:
    """A video's record before any clip: failed for ``reason`` when given."""
    return {"path": video["path"], "class": video["class"], "label": video["label"],
            "video_index": video["video_index"], "shard": None if reason else shard,
            "clips": 0, "frames": 0, "tail": 0, "status": "failed" if reason else "ok",
            "reason": reason, "samples": []}


def _write_video(writer: ShardWriter, root: Root, video: dict, shard: str,
                 options: BuildOptions, decode_threads: int,
                 beat: Callable[[], None] | None = None) -> dict:
    record = _record(video, shard)
    try:
        cutter = VideoCutter(root.video(video["path"], video.get("bytes")), options,
                             decode_threads)
    except DecodeError as e:
        return _record(video, shard, str(e))
    stats, codec = cutter.stats, options.storage
    try:
        for clip in cutter:
            meta = clip_metadata(
                path=video["path"], class_name=video["class"], label=video["label"],
                video_index=video["video_index"], clip_index=clip.index,
                source_frames=clip.source_frames, start_sec=float(clip.start),
                end_sec=float(clip.end), fps=cutter.rule.output_fps, source_fps=stats.fps,
                audio_rate=stats.audio_rate, audio_codec=options.audio.audio_codec,
                video_codec=codec.video_codec,
                audio_marks=clip.audio_marks, rest=clip.rest_marks,
            )
            key = sample_key(video["video_index"], clip.index)
            start = writer.size
            members = encode_sample(clip.video, clip.audio, video["label"], meta,
                                    codec.video_codec, codec.zstd_level, codec.jpeg_quality,
                                    codec.jpeg_psnr, options.audio.audio_codec,
                                    clip.rest_video, clip.rest_audio)
            for ext, data in members:
                writer.add(f"{key}.{ext}", data)
            record["samples"].append([start, writer.size - start, writer.end_sample()])
            if beat:
                beat()
    except OSError as e:
        if not isinstance(e, av.FFmpegError):
            raise  # the disk, not the video: fail the shard
        stats.error = f"{type(e).__name__}: {e}"
    except Exception as e:  # an odd file must not take the other videos down
        stats.error = f"{type(e).__name__}: {e}"
        cutter.close()
    record.update(clips=stats.clips, frames=stats.frames, tail=stats.tail, fps=stats.fps,
                  held=stats.held, reason=stats.error)
    if cutter.audio_error:  # the frames are whole; the sound stopped early
        record["audio_error"] = cutter.audio_error
    if stats.error:
        record["status"] = "partial" if stats.clips else "failed"
        if not stats.clips:
            record["shard"] = None
    elif stats.clips == 0:
        need, clips = cutter.rule.num_positions(stats.frames), options.clips
        at_rate = f" ({need} at frame_rate={clips.frame_rate})" if clips.frame_rate else ""
        record.update(status="too_short", shard=None,
                      reason=f"too short: {stats.frames} frames{at_rate}, "
                             f"fewer than frames_per_clip={clips.frames_per_clip}")
    return record


def record_name(shard: str) -> str:
    """Where a finished shard's record is kept until the manifest is written."""
    return f".build/shards/{shard}.json"


def build_shard(task: dict, root: str, out: str, options: BuildOptions,
                decode_threads: int = 1, progress: Progress | None = None,
                skip: dict[int, str] | None = None) -> dict:
    """Write shard ``out/<task name>`` (a folder or URL) of videos under ``root`` (a folder or
    URL), then its record; returns the record. ``skip``: the positions in the task of
    videos the executor saw its worker process die on twice, with how it died:
    they are recorded failed, not opened."""
    folder = Folder(out, options.execution.storage_options)
    source = Root(root, options.execution.storage_options)
    videos = []
    beat = heartbeat(progress, options.execution.video_timeout)  # a long video is alive
    with ShardWriter(folder.temp_path(task["name"])) as writer:
        for i, video in enumerate(task["videos"]):
            source.prefetch(task["videos"][i + 1 : i + 2])  # arrives while this one decodes
            before = writer.size
            if skip and i in skip:
                videos.append(_record(video, task["name"],
                                      f"worker process died on it twice: {skip[i]}"))
            else:
                videos.append(_write_video(writer, source, video, task["name"], options,
                                           decode_threads, beat))
            if progress:
                progress(videos[-1]["clips"], writer.size - before)
        size, sha = writer.commit()
    if not builder_alive():  # the worker of a builder that died publishes nothing, and ends
        folder.discard(writer.path)
        os._exit(1)
    folder.publish(writer.path, task["name"])
    record = {"name": task["name"], "clips": sum(v["clips"] for v in videos), "bytes": size,
              "sha256": sha, "fingerprint": folder.fingerprint(task["name"]), "videos": videos}
    folder.write_json(record_name(task["name"]), record)
    return record
