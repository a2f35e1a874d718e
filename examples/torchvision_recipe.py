"""torchvision's reference video-classification recipe (references/video_classification) on
shardkin: one line of its ``datasets.py`` differs, the base class::

    class KineticsWithVideoId(torchvision.datasets.Kinetics):   # torchvision
    class KineticsWithVideoId(shardkin.Kinetics):               # shardkin

and ``--data-path`` names the build (made once by ``shardkin build DATA OUT --split train,val
--frames-per-clip 16 --frame-rate 15``, which this script runs when needed). ``train.py``'s
dataset arguments (``frames_per_clip=16, num_classes="400", split=..., step_between_clips=1,
transform=..., frame_rate=15, extensions=("avi", "mp4"), output_format="TCHW",
num_workers=...``), its samplers over ``dataset.video_clips`` (``RandomClipSampler(..., 5)``,
``UniformClipSampler(..., 5)``, in ``DistributedSampler`` under torchrun, ``set_epoch`` each
epoch), its collate that drops the audio, its video-level evaluation over ``samples``,
``classes`` and ``video_idx`` and its ``--cache-dataset`` are kept; the clips and the
samplers' index lists are torchvision 0.28's (tests/reader/test_torchvision_recipe.py runs
this flow against the real torchvision).

The build stores each video's frames once (clips of 16 that do not overlap, and each
video's tail); ``step_between_clips=1`` then cuts torchvision's clips from them at read
time, so the shards are 16 times smaller than a build of the overlapping clips themselves.
torchvision's samplers are used when it is installed, shardkin's identical ones otherwise;
the presets are ``shardkin.transforms``' (``presets.py``'s, bit-identical: build at their
resize size, ``--width 171 --height 128``, and their resize is the identity), and the model
is a tiny 3D convnet instead of R(2+1)D-18.

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
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data.dataloader import default_collate

import shardkin
from shardkin.transforms import VideoClassificationPresetEval, VideoClassificationPresetTrain

try:  # the recipe's own samplers; shardkin's give the same indices
    from torchvision.datasets.samplers import (
        DistributedSampler,
        RandomClipSampler,
        UniformClipSampler,
    )
except ImportError:
    from shardkin.samplers import DistributedSampler, RandomClipSampler, UniformClipSampler


class KineticsWithVideoId(shardkin.Kinetics):  # datasets.py: the one line changed
    def __getitem__(self, idx):
        video, audio, info, video_idx = self.video_clips.get_clip(idx)
        label = self.samples[video_idx][1]

        if self.transform is not None:
            video = self.transform(video)

        return video, audio, label, video_idx


def collate_fn(batch: Sequence[Any]) -> Any:
    """train.py's: the audio dropped, ``(video, label, video_idx)`` batched."""
    batch = [(d[0], d[2], d[3]) for d in batch]
    return default_collate(batch)


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

    # presets.py's, bit-identical and cheaper (shardkin.transforms: the crop first, on uint8)
    dataset = load_data(args, "train", VideoClassificationPresetTrain(
        crop_size=args.crop_size, resize_size=args.resize_size))
    dataset_test = load_data(args, "val", VideoClassificationPresetEval(
        crop_size=args.crop_size, resize_size=args.resize_size))

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
        for video, target, _ in data_loader:
            loss = criterion(model(video.to(device)), target.to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            print(f"step {len(losses)}: loss {losses[-1]:.4f}")
            if len(losses) == args.steps:
                break

    # train.py's evaluate(): clip accuracy, and video accuracy from the clips' softmax summed
    # by video_idx into len(dataset.samples) x len(dataset.classes)
    model.eval()
    correct = seen = 0
    num_videos, num_classes = len(dataset_test.samples), len(dataset_test.classes)
    agg_preds = torch.zeros((num_videos, num_classes), dtype=torch.float32, device=device)
    agg_targets = torch.zeros(num_videos, dtype=torch.int32, device=device)
    with torch.inference_mode():
        for video, target, video_idx in data_loader_test:
            output = model(video.to(device))
            correct += int((output.argmax(1).cpu() == target).sum())
            seen += len(target)
            preds = torch.softmax(output, dim=1)
            for b in range(video.size(0)):
                agg_preds[video_idx[b].item()] += preds[b].detach()
                agg_targets[video_idx[b].item()] = target[b].item()
    videos = agg_preds.sum(1) > 0
    video_acc = float((agg_preds.argmax(1) == agg_targets)[videos].float().mean())
    print(f" * Clip Acc@1 {100 * correct / max(seen, 1):.3f} ({seen} clips), "
          f"Video Acc@1 {100 * video_acc:.3f} ({int(videos.sum())} videos)")
    if distributed:
        dist.destroy_process_group()
    return {"losses": losses, "accuracy": correct / max(seen, 1), "eval_clips": seen,
            "video_accuracy": video_acc, "train_sampler": train_sampler,
            "test_sampler": test_sampler}


def load_data(args: argparse.Namespace, split: str, transform: Any) -> KineticsWithVideoId:
    """train.py's dataset, with ``--cache-dataset``: saved with ``torch.save`` and loaded
    again with a new transform (the pickle holds the arguments, not the index)."""
    cache = os.path.join(args.output, f"{split}-dataset.pt")
    if args.cache_dataset and os.path.exists(cache):
        dataset, _ = torch.load(cache, weights_only=False)
        dataset.transform = transform
        return dataset
    dataset = KineticsWithVideoId(
        args.output, frames_per_clip=args.clip_len, num_classes=args.kinetics_version,
        split=split, step_between_clips=1, transform=transform, frame_rate=args.frame_rate,
        extensions=("avi", "mp4"), output_format="TCHW", num_workers=args.workers)
    if args.cache_dataset:
        torch.save((dataset, args.output), cache)
    return dataset


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
    parser.add_argument("--kinetics-version", default="400", choices=["400", "600", "700"])
    parser.add_argument("--resize-size", type=int, nargs=2, default=(128, 171))
    parser.add_argument("--crop-size", type=int, nargs=2, default=(112, 112))
    parser.add_argument("--cache-dataset", action="store_true",
                        help="save the datasets with torch.save and load them next time")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main()
