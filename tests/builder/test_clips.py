"""The clip rules against torchvision 0.28's measured behaviour (shared/REFERENCE-SEMANTICS.md)."""
import pytest

from shardkin.builder.clips import ClipRule, output_size


@pytest.mark.parametrize("fps, first, second", [
    (30, list(range(0, 31, 2)), list(range(32, 63, 2))),
    (25, [0, 1, 3, 5, 6, 8, 10, 11, 13, 15, 16, 18, 20, 21, 23, 25], None),
    (24, [0, 1, 3, 4, 6, 8, 9, 11, 12, 14, 16, 17, 19, 20, 22, 24], None),
    (30000 / 1001, [0, 1, 3] + list(range(5, 30, 2)), list(range(31, 62, 2))),
])
def test_resampled_clips_match_torchvision(fps, first, second):
    rule = ClipRule(16, 16, fps, 15)
    assert rule.clip_sources(0) == first
    if second:
        assert rule.clip_sources(1) == second


def test_integer_ratio_keeps_all_frames_like_torchvision():
    rule = ClipRule(16, 16, 30, 15)
    assert rule.num_positions(101) == 51
    assert rule.num_positions(99) == 50
    assert rule.num_clips(101) == 3 and rule.num_clips(95) == 3 and rule.num_clips(93) == 2


def test_upsampling_repeats_frames():
    assert ClipRule(4, 4, 15, 30).clip_sources(0) == [0, 0, 1, 1]
    assert ClipRule(4, 4, 15, 30).num_positions(10) == 20


def test_seed_example_and_windows():
    rule = ClipRule(5, 5, 30)
    assert rule.num_clips(10) + rule.num_clips(15) == 5
    assert ClipRule(16, 1, 30).num_clips(15) == 0
    assert ClipRule(16, 1, 30).num_clips(20) == 5
    assert ClipRule(4, 10, 30).clip_sources(2) == [20, 21, 22, 23]
    overlap = ClipRule(8, 3, 30)
    assert overlap.num_clips(20) == 5 and overlap.clip_sources(4) == list(range(12, 20))


def test_in_some_clip_marks_gaps_between_windows():
    rule = ClipRule(2, 5, 30)
    assert [p for p in range(12) if rule.in_some_clip(p)] == [0, 1, 5, 6, 10, 11]


@pytest.mark.parametrize("args, expected", [
    ((340, 256, 0, 0, 128, 0), (170, 128)),
    ((256, 340, 0, 0, 128, 0), (128, 170)),
    ((1920, 1080, 0, 0, 0, 320), (320, 180)),
    ((1920, 1080, 0, 0, 112, 200), (200, 112)),
    ((320, 240, 160, 0, 0, 0), (160, 120)),
    ((320, 240, 0, 60, 0, 0), (80, 60)),
    ((320, 240, 100, 50, 0, 0), (100, 50)),
    ((426, 240, 0, 0, 128, 0), (227, 128)),  # 227.2 rounds down
    ((341, 256, 0, 0, 128, 0), (171, 128)),  # 170.5 rounds half up, like C's round()
    ((320, 240, 0, 0, 0, 0), (320, 240)),
])
def test_output_size_follows_torchvision_video_reader(args, expected):
    assert output_size(*args) == expected


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        ClipRule(0, 1, 30)
    with pytest.raises(ValueError):
        ClipRule(16, 1, 0)
