"""``shardkin.lightning.ShardDataModule`` under a real Lightning ``Trainer``: every clip
once an epoch in a new order each epoch, and DDP ranks in lockstep."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pl = pytest.importorskip("lightning.pytorch")

from shardkin.lightning import ShardDataModule  # noqa: E402
from shardkin.transforms import Crops, VideoClassificationPresetTrain  # noqa: E402

from reader_fixtures import FRAMES, SIZE, all_keys, make_split  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]
TRAIN, VAL = [3 + v % 3 for v in range(13)], [2] * 5  # 51 and 10 clips
CROP = 6


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lightning")
    make_split(out, TRAIN, 3, "train")
    make_split(out, VAL, 2, "val")
    return out


class Tiny(pl.LightningModule):
    """A linear classifier over the dict batches; records the clips each step saw."""

    def __init__(self, record: Path) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3 * FRAMES * SIZE * SIZE, 3)
        self.record = record
        self.seen: dict[str, list] = {}

    def _step(self, batch: dict, stage: str) -> torch.Tensor:
        assert batch["video"].dtype == torch.float32
        keys = [[int(v), int(c)] for v, c in zip(batch["video_index"], batch["clip_index"])]
        self.seen.setdefault(f"{stage}{self.current_epoch}", []).append(keys)
        return torch.nn.functional.cross_entropy(self.fc(batch["video"].flatten(1) / 255),
                                                 batch["label"])

    def training_step(self, batch: dict, i: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict, i: int) -> None:
        self._step(batch, "val")

    def on_fit_end(self) -> None:
        (self.record / f"rank{self.global_rank}.json").write_text(json.dumps(self.seen))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _trainer(**kw) -> pl.Trainer:
    kw.setdefault("enable_checkpointing", bool(kw.get("callbacks")))
    return pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, **kw)


def _flat(batches: list) -> list[tuple[int, int]]:
    return [tuple(k) for b in batches for k in b]


def test_every_clip_once_an_epoch_in_a_new_order(build_dir, tmp_path):
    dm = ShardDataModule(build_dir, batch_size=4, num_workers=1, return_dict=True, seed=3)
    _trainer(max_epochs=3, devices=1).fit(Tiny(tmp_path), dm)
    seen = json.loads((tmp_path / "rank0.json").read_text())
    orders = [_flat(seen[f"train{e}"]) for e in range(3)]
    for order in orders:
        assert sorted(order) == all_keys(TRAIN)
    assert len({tuple(o) for o in orders}) == 3  # a new order each epoch
    for e in range(3):  # val: every clip, in order, each epoch
        assert _flat(seen[f"val{e}"]) == all_keys(VAL)
    assert dm.train_dataloader().dataset.epoch == 2


class Floats(pl.LightningModule):
    """The device path under Lightning: the workers cut uint8 crops (their flips left to
    the device), the float part runs after the batch's transfer; records the inputs."""

    def __init__(self, preset: VideoClassificationPresetTrain) -> None:
        super().__init__()
        self.preset, self.inputs = preset, []
        self.fc = torch.nn.Linear(3 * FRAMES * CROP * CROP, 3)

    def on_after_batch_transfer(self, batch: tuple, i: int) -> tuple:
        video, _, label = batch
        assert isinstance(video, Crops)  # moved by Lightning as it is
        return self.preset.normalize_batch(video), label

    def training_step(self, batch: tuple, i: int) -> torch.Tensor:
        x, label = batch
        self.inputs.append(x.clone())
        return torch.nn.functional.cross_entropy(self.fc(x.flatten(1)), label)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_the_device_path_with_flips_on_the_device(build_dir):
    preset = VideoClassificationPresetTrain(crop_size=CROP, resize_size=(SIZE, SIZE))

    def module(flip_on_device: bool) -> ShardDataModule:
        hook = preset.in_workers(seed=2, flip_on_device=flip_on_device)
        return ShardDataModule(build_dir, batch_size=4, num_workers=1, val_split=None,
                               seed=4, loader_kwargs={"batch_transform": hook})

    model = Floats(preset)
    _trainer(max_epochs=1, devices=1).fit(model, module(True))
    mirrored = [preset.normalize_batch(v) for v, _, _ in module(False).train_dataloader()]
    assert len(model.inputs) == len(mirrored) == 13
    assert all(torch.equal(a, b) for a, b in zip(model.inputs, mirrored))


def test_resume_from_a_mid_epoch_checkpoint(build_dir, tmp_path):
    """Lightning checkpoints the loader's state: a resumed fit sees what an unbroken one does."""
    def fit(name: str, steps: int, ckpt_path=None, callbacks=()) -> dict:
        (tmp_path / name).mkdir()
        dm = ShardDataModule(build_dir, batch_size=4, val_split=None, return_dict=True)
        trainer = _trainer(max_steps=steps, devices=1, callbacks=list(callbacks))
        trainer.fit(Tiny(tmp_path / name), dm, ckpt_path=ckpt_path)
        return json.loads((tmp_path / name / "rank0.json").read_text())

    saver = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=5)
    head = fit("head", 5, callbacks=[saver])
    tail = fit("tail", 20, ckpt_path=saver.best_model_path)
    whole = fit("whole", 20)
    assert len(whole["train0"]) == 13 and len(head["train0"]) == 5
    assert head["train0"] + tail["train0"] == whole["train0"]
    assert tail["train1"] == whole["train1"]


@pytest.mark.timeout(240)
def test_ddp_ranks_step_in_lockstep(build_dir, tmp_path):
    dm = ShardDataModule(build_dir, batch_size=4, return_dict=True, seed=5)
    _trainer(max_epochs=2, devices=2, strategy="ddp_spawn").fit(Tiny(tmp_path), dm)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    total = sum(TRAIN)
    for e in range(2):
        batches = [r[f"train{e}"] for r in ranks]
        assert len(batches[0]) == len(batches[1]) == -(-(total // 2) // 4)  # equal counts
        keys = _flat(batches[0]) + _flat(batches[1])
        assert len(keys) == len(set(keys)) == total - total % 2  # disjoint rank parts
        assert sorted(_flat(ranks[0][f"val{e}"]) + _flat(ranks[1][f"val{e}"])) == all_keys(VAL)
    assert _flat(ranks[0]["train0"]) != _flat(ranks[0]["train1"])
