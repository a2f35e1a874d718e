"""PyTorchVideo's Kinetics tutorial ("Training a PyTorchVideo classification model") on
shardkin with Lightning: the transforms, dict batches and LightningModule are the
tutorial's; only the dataset lines differ.

PyTorchVideo::

    train = pytorchvideo.data.Kinetics(data_path=os.path.join(DATA, "train"),
        clip_sampler=pytorchvideo.data.make_clip_sampler("random", 2), decode_audio=False,
        transform=train_transform)
    DataLoader(train, batch_size=8, num_workers=8)  # the same for "val" with "uniform"

shardkin (after a one-off ``shardkin build DATA OUT --split train --frames-per-clip 16
--frame-rate 8``, 2 s clips, and the same for val; this script runs it when needed)::

    ShardDataModule(OUT, batch_size=8, num_workers=8, return_dict=True, decode_audio=False,
                    train_kwargs={"transform": train_transform, "clips_per_video": 1,
                                  "step_between_clips": 1},
                    val_kwargs={"transform": val_transform})

Training reads one random 2 s clip of each video an epoch, starting at any frame (the
tutorial's "random" sampler starts it at any time): a window cut at read time from the
stored clips. Validation reads every stored clip, the video's 2 s clips end to end (its
"uniform"). Items are the dicts PyTorchVideo's
Kinetics yields (``video`` float32 ``[C, T, H, W]``, 0..255), so its transforms run
unchanged; they are written here with torch ops (pytorchvideo and torchvision need not be
installed). The model is a tiny 3D convnet instead of the tutorial's 3D ResNet.

    python examples/pytorchvideo_lightning.py --demo --data-path /tmp/kin --output /tmp/kin-shards
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

import shardkin
from shardkin.lightning import ShardDataModule


class ApplyTransformToKey:
    """pytorchvideo.transforms.ApplyTransformToKey."""

    def __init__(self, key: str, transform: Callable) -> None:
        self._key, self._transform = key, transform

    def __call__(self, x: dict) -> dict:
        x[self._key] = self._transform(x[self._key])
        return x


class Compose:
    """torchvision.transforms.Compose."""

    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = transforms

    def __call__(self, x: Any) -> Any:
        for t in self.transforms:
            x = t(x)
        return x


class UniformTemporalSubsample:
    """pytorchvideo.transforms.UniformTemporalSubsample on ``[C, T, H, W]``."""

    def __init__(self, num_samples: int) -> None:
        self.num_samples = num_samples

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[-3]
        indices = torch.linspace(0, t - 1, self.num_samples).clamp(0, t - 1).long()
        return torch.index_select(x, -3, indices)


class Div255:
    """The tutorial's ``Lambda(lambda x: x / 255.0)`` (a class: workers may be spawned)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x / 255.0


class Normalize:
    """pytorchvideo.transforms.Normalize: torchvision's Normalize over the channels."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean).view(-1, 1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ShortSideScale:
    """pytorchvideo.transforms.(Random)ShortSideScale: bilinear, size drawn in
    ``[size, max_size]`` with ``torch.randint`` when ``max_size`` is given."""

    def __init__(self, size: int, max_size: int | None = None) -> None:
        self.size, self.max_size = size, max_size

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        size = self.size
        if self.max_size is not None:
            size = int(torch.randint(self.size, self.max_size + 1, (1,)).item())
        assert x.dtype == torch.float32
        _, _, h, w = x.shape
        new_h, new_w = (math.floor(h / w * size), size) if w < h else \
            (size, math.floor(w / h * size))
        return F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)


class Crop:
    """torchvision.transforms.RandomCrop (``torch.randint``) or CenterCrop, on ``[..., H, W]``."""

    def __init__(self, size: int, random: bool) -> None:
        self.size, self.random = size, random

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h, w, s = x.shape[-2], x.shape[-1], self.size
        if not self.random:
            i, j = int(round((h - s) / 2.0)), int(round((w - s) / 2.0))
        elif (h, w) == (s, s):
            i = j = 0
        else:
            i = int(torch.randint(0, h - s + 1, size=(1,)).item())
            j = int(torch.randint(0, w - s + 1, size=(1,)).item())
        return x[..., i:i + s, j:j + s]


class RandomHorizontalFlip:
    """torchvision.transforms.RandomHorizontalFlip."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(-1) if torch.rand(1) < self.p else x


def video_transform(train: bool, args: argparse.Namespace) -> ApplyTransformToKey:
    """The tutorial's pipeline: subsample 8 frames, /255, normalize, then for training
    random short-side scale, random crop and flip; for validation scale and center crop."""
    steps: list[Callable] = [UniformTemporalSubsample(8), Div255(),
                             Normalize((0.45, 0.45, 0.45), (0.225, 0.225, 0.225))]
    if train:
        steps += [ShortSideScale(args.min_size, args.max_size), Crop(args.crop, True),
                  RandomHorizontalFlip(0.5)]
    else:
        steps += [ShortSideScale(args.min_size), Crop(args.crop, False)]
    return ApplyTransformToKey("video", Compose(steps))


class TinyVideoNet(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv3d(3, 8, 3, padding=1), nn.ReLU(),
                                      nn.AdaptiveAvgPool3d(1), nn.Flatten())
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class VideoClassificationLightningModule(pl.LightningModule):
    """The tutorial's module: cross entropy on ``batch["video"]`` and ``batch["label"]``."""

    def __init__(self, num_classes: int, lr: float) -> None:
        super().__init__()
        self.model, self.lr = TinyVideoNet(num_classes), lr
        self.losses: list[float] = []
        self.shapes: set[tuple[int, ...]] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.shapes.add(tuple(batch["video"].shape[1:]))
        loss = F.cross_entropy(self.model(batch["video"]), batch["label"])
        self.log("train_loss", loss.item(), batch_size=len(batch["label"]))
        self.losses.append(loss.item())
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        y_hat = self.model(batch["video"])
        acc = (y_hat.argmax(1) == batch["label"]).float().mean()
        self.log("val_acc", acc, batch_size=len(batch["label"]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def prepare(args: argparse.Namespace) -> None:
    """Make the demo videos (``--demo``) and build both splits' shards (once)."""
    if args.demo and not (args.data_path / "train").is_dir():
        from shardkin.synth import make_dataset

        make_dataset(args.data_path, classes=3, videos_per_class=2, frames=40, size=(48, 32))
    for split in ("train", "val"):
        shardkin.build(args.data_path, args.output, split, frames_per_clip=args.clip_len,
                       frame_rate=args.frame_rate, workers=max(1, args.workers), progress=False)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train ``--steps`` steps with validation each epoch; returns the losses and more."""
    args = parse_args(argv)
    pl.seed_everything(args.seed, verbose=False)
    prepare(args)
    data = ShardDataModule(
        args.output, batch_size=args.batch_size, num_workers=args.workers, return_dict=True,
        decode_audio=False,  # as the tutorial: the sound is not read
        train_kwargs={"transform": video_transform(True, args), "clips_per_video": 1,
                      "step_between_clips": 1},  # a random window: starts at any frame
        val_kwargs={"transform": video_transform(False, args)})
    classes = shardkin.load_manifest(args.output, "train")["classes"]
    module = VideoClassificationLightningModule(len(classes), args.lr)
    trainer = pl.Trainer(max_steps=args.steps, accelerator=args.accelerator,
                         devices=args.devices, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, data)
    print(f"{len(module.losses)} steps, last loss {module.losses[-1]:.4f}, "
          f"val_acc {float(trainer.callback_metrics.get('val_acc', float('nan'))):.3f}")
    return {"losses": module.losses, "shapes": module.shapes, "trainer": trainer,
            "data": data}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-path", type=Path, required=True,
                        help="Kinetics-style tree: DATA/train/<class>/<video>, DATA/val/...")
    parser.add_argument("--output", type=Path, required=True,
                        help="where the shards are (or are built)")
    parser.add_argument("--demo", action="store_true",
                        help="make a tiny synthetic dataset at --data-path first")
    parser.add_argument("--steps", type=int, default=20, help="training steps")
    parser.add_argument("-b", "--batch-size", type=int, default=8)
    parser.add_argument("-j", "--workers", type=int, default=2, help="data loading workers")
    parser.add_argument("--clip-len", type=int, default=16, help="frames per stored clip")
    parser.add_argument("--frame-rate", type=float, default=8, help="16 frames at 8 fps: 2 s")
    parser.add_argument("--min-size", type=int, default=256, help="short side scale, low")
    parser.add_argument("--max-size", type=int, default=320, help="short side scale, high")
    parser.add_argument("--crop", type=int, default=244, help="crop size (the tutorial's)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--devices", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    main()
