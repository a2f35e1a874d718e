"""The examples run end to end on small made videos."""
from __future__ import annotations

import importlib.util
import math
import socket
import sys
from pathlib import Path

import shardkin.samplers
from shardkin.reader.kinetics import Kinetics

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as when run: its classes pickle (--cache-dataset)
    spec.loader.exec_module(module)
    return module


def test_torchvision_recipe_trains_on_its_samplers(tmp_path, monkeypatch):
    recipe = load_example("torchvision_recipe")

    class Recorded(shardkin.samplers.RandomClipSampler):
        def __iter__(self):
            self.drawn = list(super().__iter__())
            return iter(self.drawn)

    read: list[tuple[str, int]] = []
    get = Kinetics.get_clip
    monkeypatch.setattr(recipe, "RandomClipSampler", Recorded)
    monkeypatch.setattr(Kinetics, "get_clip",
                        lambda ds, i: read.append((ds.split, i)) or get(ds, i))
    with socket.socket() as s:  # torchrun's environment for one process: distributed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in dict(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                           MASTER_PORT=str(port)).items():
        monkeypatch.setenv(key, value)

    argv = ["--demo", "--data-path", str(tmp_path / "data"), "--output", str(tmp_path / "out"),
            "--steps", "3", "-b", "2", "--clip-len", "4", "-j", "0", "--device", "cpu",
            "--cache-dataset"]
    out = recipe.main(argv)
    assert len(out["losses"]) == 3 and all(math.isfinite(x) for x in out["losses"])
    train, test = out["train_sampler"], out["test_sampler"]
    assert isinstance(train, shardkin.samplers.DistributedSampler)
    assert isinstance(train.dataset, Recorded)
    assert train.dataset.counts.tolist() == [17, 21] * 3  # 40 and 48 frames at 30 -> 15 fps
    assert len(train) == len(train.dataset) == 6 * 5
    assert [i for s, i in read if s == "train"] == train.dataset.drawn[:6]
    assert [i for s, i in read if s == "val"] == list(test.dataset) == list(test)
    assert out["eval_clips"] == len(test) == 6 * 5
    assert 0 <= out["video_accuracy"] <= 1
    cached = sorted(p.name for p in (tmp_path / "out").glob("*-dataset.pt"))
    assert cached == ["train-dataset.pt", "val-dataset.pt"]
    assert all(p.stat().st_size < 10_000 for p in (tmp_path / "out").glob("*-dataset.pt"))
    again = recipe.main(argv)  # from the cache, with the transforms set again
    assert again["eval_clips"] == out["eval_clips"]


def test_pytorchvideo_lightning_example_trains(tmp_path):
    example = load_example("pytorchvideo_lightning")
    out = example.main(["--demo", "--data-path", str(tmp_path / "data"), "--output",
                        str(tmp_path / "out"), "--steps", "4", "-b", "2", "--clip-len", "4",
                        "--frame-rate", "15", "--min-size", "32", "--max-size", "40",
                        "--crop", "28", "-j", "0", "--accelerator", "cpu", "--devices", "1"])
    assert len(out["losses"]) == 4 and all(math.isfinite(x) for x in out["losses"])
    assert out["shapes"] == {(3, 8, 28, 28)}  # the tutorial's pipeline ran on the dicts
    train = out["data"].train_dataloader()
    assert len(train) == 3 and train.dataset.epoch == 1  # 6 videos, one clip each: 2 epochs
    windows = train.dataset.windows  # 40 and 48 frames at 30 fps -> 20 and 24 at 15
    assert (windows.frames, windows.step, windows.counts.tolist()) == (4, 1, [17, 21] * 3)
