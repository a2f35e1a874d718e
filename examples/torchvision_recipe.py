"""torchvision's reference video-classification recipe (references/video_classification) on
shardkin: only the dataset lines differ.

torchvision::

    dataset = torchvision.datasets.Kinetics400(traindir, frames_per_clip=16,
        step_between_clips=1, transform=transform_train, frame_rate=15, extensions=("avi", "mp4"))

shardkin (after a one-off ``shardkin build ROOT OUT --split train --frames-per-clip 16
--frame-rate 15``, which this script runs when needed)::

    dataset = shardkin.Kinetics(out, split="train", frames_per_clip=16, step_between_clips=1,
                                transform=transform_train, frame_rate=15)

The build stores each video's frames once (clips of 16 that do not overlap, and each
video's tail); ``step_between_clips=1`` then cuts torchvision's clips from them at read
time, the same clips in the same order, so the shards are 16 times smaller than a build
of the overlapping clips themselves.

The samplers (``RandomClipSampler(dataset.video_clips, 5)`` for training,
``UniformClipSampler`` for evaluation, both in torchvision's ``DistributedSampler`` when run
under torchrun), the collate that drops audio, the train and eval presets and the SGD loop
are the recipe's; the presets are written with torch ops (torchvision need not be
installed) and the model is a tiny 3D convnet instead of R(2+1)D-18.

    python examples/torchvision_recipe.py --demo --data-path /tmp/kin --output /tmp/kin-shards
"""
from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data.dataloader import default_collate

import shardkin
from shardkin.samplers import DistributedSampler, RandomClipSampler, UniformClipSampler

MEAN = (0.43216, 0.394666, 0.37645)
STD = (0.22803, 0.22145, 0.216989)


class VideoClassificationPreset:
    """The recipe's presets on a uint8 ``[T, C, H, W]`` clip: ConvertImageDtype(float32),
    Resize((128, 171), antialias=False), [train: RandomHorizontalFlip()], Normalize,
    RandomCrop(112) for training or CenterCrop(112) for evaluation, then TCHW -> CTHW.
    Random draws are torchvision's (``torch.rand(1)``, ``torch.randint``)."""

    def __init__(self, train: bool, resize_size: tuple[int, int] = (128, 171),
                 crop_size: int = 112) -> None:
        self.train, self.resize_size, self.crop_size = train, resize_size, crop_size
        self.mean = torch.tensor(MEAN).view(3, 1, 1)
        self.std = torch.tensor(STD).view(3, 1, 1)

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        x = video.float() / 255
        x = F.interpolate(x, size=self.resize_size, mode="bilinear", align_corners=False,
                          antialias=False)
        if self.train and torch.rand(1) < 0.5:
            x = x.flip(-1)
        x = (x - self.mean) / self.std
        h, w, size = *x.shape[-2:], self.crop_size
        if self.train:
            top = int(torch.randint(0, h - size + 1, size=(1,)).item())
            left = int(torch.randint(0, w - size + 1, size=(1,)).item())
        else:
            top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
        return x[..., top : top + size, left : left + size].permute(1, 0, 2, 3)


def collate_fn(batch: Sequence[Any]) -> Any:
    """The recipe's: audio dropped, ``(video, label)`` batched."""
    return default_collate([(d[0], d[2]) for d in batch])


class TinyVideoNet(nn.Module):
    """A 3D convnet small enough to train on a CPU in seconds."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(3, 8, kernel_size=3, stride=(1, 2, 2), padding=1), nn.BatchNorm3d(8),
            nn.ReLU(inplace=True), nn.AdaptiveAvgPool3d(1), nn.Flatten())
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def prepare(args: argparse.Namespace) -> None:
    """Make the demo videos (``--demo``) and build the shards of both splits once."""
    if args.demo and not os.path.isdir(os.path.join(args.data_path, "train")):
        from shardkin.synth import make_dataset

        make_dataset(args.data_path, classes=3, videos_per_class=2, frames=40, size=(48, 32))
    for split in ("train", "val"):
        shardkin.build(args.data_path, args.output, split, frames_per_clip=args.clip_len,
                       frame_rate=args.frame_rate, workers=args.workers, progress=False)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train ``--steps`` steps, evaluate; returns the losses, accuracy and clips read."""
    args = parse_args(argv)
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ  # as the recipe's
    if distributed:
        dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    if not distributed or dist.get_rank() == 0:
        prepare(args)
    if distributed:
        dist.barrier()

    dataset = shardkin.Kinetics(args.output, split="train", frames_per_clip=args.clip_len,
                                step_between_clips=1, transform=VideoClassificationPreset(True),
                                frame_rate=args.frame_rate)
    dataset_test = shardkin.Kinetics(args.output, split="val", frames_per_clip=args.clip_len,
                                     step_between_clips=1,
                                     transform=VideoClassificationPreset(False),
                                     frame_rate=args.frame_rate)

    train_sampler = RandomClipSampler(dataset.video_clips, args.clips_per_video)
    test_sampler = UniformClipSampler(dataset_test.video_clips, args.clips_per_video)
    if distributed:
        train_sampler = DistributedSampler(train_sampler)
        test_sampler = DistributedSampler(test_sampler, shuffle=False)
    pin = device.type == "cuda"
    data_loader = DataLoader(dataset, batch_size=args.batch_size, sampler=train_sampler,
                             num_workers=args.workers, pin_memory=pin, collate_fn=collate_fn)
    data_loader_test = DataLoader(dataset_test, batch_size=args.batch_size, sampler=test_sampler,
                                  num_workers=args.workers, pin_memory=pin, collate_fn=collate_fn)

    model = TinyVideoNet(len(dataset.classes)).to(device)
    if distributed:
        model = nn.parallel.DistributedDataParallel(model)
    criterion = nn.CrossEntropyLoss()
    lr = args.lr * (dist.get_world_size() if distributed else 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)

    losses: list[float] = []
    model.train()
    for epoch in range(math.ceil(args.steps / len(data_loader))):
        if distributed:
            train_sampler.set_epoch(epoch)
        for video, target in data_loader:
            loss = criterion(model(video.to(device)), target.to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            print(f"step {len(losses)}: loss {losses[-1]:.4f}")
            if len(losses) == args.steps:
                break

    model.eval()
    correct = seen = 0
    with torch.inference_mode():
        for video, target in data_loader_test:
            output = model(video.to(device))
            correct += int((output.argmax(1).cpu() == target).sum())
            seen += len(target)
    print(f" * Clip Acc@1 {100 * correct / max(seen, 1):.3f} ({seen} clips)")
    if distributed:
        dist.destroy_process_group()
    return {"losses": losses, "accuracy": correct / max(seen, 1), "eval_clips": seen,
            "train_sampler": train_sampler, "test_sampler": test_sampler}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-path", required=True,
                        help="Kinetics-style tree: DATA/train/<class>/<video>, DATA/val/...")
    parser.add_argument("--output", required=True, help="where the shards are (or are built)")
    parser.add_argument("--demo", action="store_true",
                        help="make a tiny synthetic dataset at --data-path first")
    parser.add_argument("--steps", type=int, default=10, help="training steps")
    parser.add_argument("-b", "--batch-size", type=int, default=8)
    parser.add_argument("--clip-len", type=int, default=16, help="frames per clip")
    parser.add_argument("--frame-rate", type=float, default=15)
    parser.add_argument("--clips-per-video", type=int, default=5)
    parser.add_argument("-j", "--workers", type=int, default=2, help="data loading workers")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    main()
