"""The frame timeline: torchvision 0.28's count and fps (TorchCodec's scan), held frames."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest

from shardkin.builder.decode import VideoCutter
from shardkin.builder.timeline import place
from shardkin.format.options import BuildOptions

import reference
from helpers import decode_frames, make_not_coded_avi


def frames(*pts):
    return [SimpleNamespace(pts=p, n=i) for i, p in enumerate(pts)]


def shown(placed) -> list[tuple[int, int, bool]]:
    return [(p.slot, p.frame.n, p.held) for p in placed]


def test_place_without_slots_is_the_decode_order():
    assert shown(place(frames(3, 1, 2), None)) == [(0, 0, False), (1, 1, False), (2, 2, False)]


def test_frames_carrying_reordered_timestamps_fill_the_slots_in_decode_order():
    # MPEG-4 AVIs with packed B-frames: pictures come out in presentation order, each with
    # the timestamp of the packet it was decoded from
    got = shown(place(frames(1, 2, 4, 3, 6, 5), [1, 2, 3, 4, 5, 6]))
    assert got == [(i, i, False) for i in range(6)]


def test_a_slot_whose_packet_gives_no_picture_holds_the_previous_one():
    got = shown(place(frames(1, 3, 4, 5), [1, 2, 3, 4, 5], lookahead=2))
    assert got == [(0, 0, False), (1, 0, True), (2, 1, False), (3, 2, False), (4, 3, False)]


def test_a_slot_is_called_empty_only_past_the_lookahead():
    # the picture of pts 2 comes two pictures after slot 1's turn: lookahead 2 waits for it,
    # lookahead 1 calls the slot empty (and the late picture is one too many at the end)
    slots = [1, 2, 3, 4, 5]
    assert [p.held for p in place(frames(1, 3, 4, 2, 5), slots, lookahead=2)] == [False] * 5
    assert [p.held for p in place(frames(1, 3, 4, 2, 5), slots, lookahead=1)] == [
        False, True, False, False, False]


def test_missing_pictures_at_the_end_hold_the_last_and_extra_ones_are_dropped():
    assert shown(place(frames(1, 2), [1, 2, 3])) == [(0, 0, False), (1, 1, False), (2, 1, True)]
    assert shown(place(frames(1, 2, 3), [1, 2])) == [(0, 0, False), (1, 1, False)]


def test_frames_without_usable_timestamps_fill_slots_in_order():
    got = shown(place(frames(None, None, 7), [1, 2, 3, 4]))
    assert got == [(0, 0, False), (1, 1, False), (2, 2, False), (3, 2, True)]


def test_a_first_slot_without_its_picture_shows_the_first_picture():
    assert shown(place(frames(2, 3), [1, 2, 3], lookahead=0)) == [
        (0, 0, False), (1, 1, False), (2, 1, True)]


def test_a_decode_error_places_what_was_decoded_then_raises():
    def broken():
        yield from frames(1, 3)
        raise av.InvalidDataError(1094995529, "Invalid data")

    got = []
    with pytest.raises(av.FFmpegError):
        for p in place(broken(), [1, 2, 3, 4], lookahead=8):
            got.append((p.slot, p.frame.n, p.held))
    assert got == [(0, 0, False), (1, 1, False)]


@pytest.fixture(scope="module")
def not_coded(tmp_path_factory) -> tuple[Path, list[int]]:
    path = tmp_path_factory.mktemp("notcoded") / "waving.avi"
    return path, make_not_coded_avi(path, 30, after=(6, 20))


def test_not_coded_frames_hold_the_previous_picture(not_coded):
    path, held = not_coded
    pictures = decode_frames(path)
    cutter = VideoCutter(str(path), BuildOptions.from_kwargs(frames_per_clip=4))
    clips = list(cutter)
    assert held == [7, 22]
    assert cutter.stats.held == held
    assert cutter.stats.frames == len(pictures) + 2 == 32
    video = np.concatenate([c.video for c in clips])
    for slot in range(32):  # every picture in decoding order, a held slot shows the one before
        picture = sum(s not in held for s in range(slot + 1)) - 1
        np.testing.assert_array_equal(video[slot], pictures[picture])


def test_pyav_timeline_counts_decoded_pictures(not_coded):
    path, _ = not_coded
    cutter = VideoCutter(str(path), BuildOptions.from_kwargs(frames_per_clip=4,
                                                             timeline="pyav"))
    list(cutter)
    assert cutter.stats.frames == 30 and cutter.stats.held == [] and cutter.stats.fps == 30.0


TORCHCODEC = """
import json, sys, warnings
warnings.filterwarnings("ignore")
from torchcodec.decoders import VideoDecoder
out = {}
for path in sys.argv[1:]:
    md = VideoDecoder(path).metadata
    out[path] = [md.num_frames, md.average_fps]
print(json.dumps(out))
"""


def _timelines(paths: list[Path]) -> dict[str, list]:
    got = {}
    for path in paths:
        cutter = VideoCutter(str(path), BuildOptions.from_kwargs(audio_codec="none"))
        list(cutter)
        got[str(path)] = [cutter.stats.frames, cutter.stats.fps]
    return got


def test_frame_counts_and_fps_are_torchcodecs_on_made_videos(made_root, not_coded):
    paths = sorted(p for p in made_root.rglob("*") if p.suffix in (".mp4", ".mkv", ".avi",
                                                                    ".webm", ".mov"))
    paths.append(not_coded[0])
    want = reference.run(TORCHCODEC, *paths)
    assert json.loads(json.dumps(_timelines(paths))) == want  # exact floats


def test_frame_counts_and_fps_are_torchcodecs_on_real_videos(real_root):
    paths = sorted(p for p in real_root.glob("*/*/*")
                   if p.suffix.lower() in (".mp4", ".mkv", ".avi", ".webm", ".mov")
                   and "truncated" not in p.parts and "audio_only" not in p.parts)
    want = reference.run(TORCHCODEC, *paths)
    got = _timelines(paths)
    assert {p: v for p, v in got.items() if v != want[p]} == {}
