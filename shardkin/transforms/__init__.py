"""Training input transforms: torchvision's video classification presets, bit-identical and
cheaper (crop first, on uint8), per clip and batched, with the uint8 part in DataLoader
workers and the float part on the device (:mod:`.presets`). Needs torch, not torchvision;
with numba (``shardkin[fast]``) the CPU float part is one compiled pass (:mod:`.onepass`)."""
from .presets import (
    VideoClassification,
    VideoClassificationPresetEval,
    VideoClassificationPresetTrain,
)
from .windows import Window, draw_window, sample_window
from .workers import Crops, InWorkers

__all__ = ["Crops", "InWorkers", "VideoClassification", "VideoClassificationPresetEval",
           "VideoClassificationPresetTrain", "Window", "draw_window", "sample_window"]
