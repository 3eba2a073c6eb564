"""One trial's options, validated: their dataclass defaults are the one owner of every default.

The CLI (``trainables.train``), the study config, the Tune trainable and evaluation read the
defaults from here (``TRAIN_DEFAULTS``), as a preset that means the paper's recipe. Torch is
imported only where a device is resolved, so the study config reads this without torch.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, fields

from trainables.registry import check_variant

DEVICES = ("auto", "cpu", "cuda")
OPTIMIZERS = ("sgd", "adam")
PRECISIONS = ("fp32", "bf16")
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")


class ConfigError(ValueError):
    """An invalid training option; the message is one line naming the field and allowed values."""


@dataclass
class TrainConfig:
    """One trial. SGD, lr 0.01, momentum 0, batch 256 and localisation ×1 are the authors' defaults; the LR
    schedule is not: their released code keeps the LR constant (its milestones default to infinity), and the
    ÷10 at 1/3 and 2/3 here is this project's default for the smoke and icpr studies and single trainings,
    which were measured with it. A study or run that means the authors' protocol sets ``lr_milestones=()``."""

    dataset: str = "rotated-mnist"
    variant: str = "STN-SL1"
    st_transform: str = "affine"
    epochs: int = 10
    train_size: int | None = None
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 256
    loc_lr_mult: float = 1.0
    pre_st_lr_mult: float = 1.0
    lr_milestones: tuple[float, ...] = (1 / 3, 2 / 3)
    lr_gamma: float = 0.1
    warmup_epochs: float = 0.0  # linear LR warm-up from lr/steps to lr over this many epochs (0: none)
    seed: int = 0
    device: str = "auto"  # one of DEVICES, or cuda:<N>
    data_root: str | None = None
    download: bool = False
    test_passes: int = 10
    memory_format: str = "auto"  # auto: channels_last on CPU (1.2-1.6x in study.bench), contiguous on CUDA
    precision: str = "fp32"  # bf16: autocast of the forward pass (weights and optimizer stay fp32)

    def validate(self) -> "TrainConfig":
        check_variant(self.dataset, self.variant, self.st_transform)
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer: {self.optimizer!r} is not allowed: allowed {', '.join(OPTIMIZERS)}")
        for name in ("lr", "loc_lr_mult", "pre_st_lr_mult"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name}: must be a finite number > 0, got {value!r}")
        for name in ("momentum", "weight_decay"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name}: must be a finite number >= 0, got {value!r}")
        for name in ("epochs", "batch_size", "test_passes"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name}: must be an integer >= 1, got {getattr(self, name)!r}")
        if self.train_size is not None and self.train_size < 1:
            raise ConfigError(f"train_size: must be an integer >= 1, got {self.train_size!r}")
        if not (math.isfinite(self.warmup_epochs) and 0 <= self.warmup_epochs <= self.epochs):
            raise ConfigError(f"warmup_epochs: must be a number between 0 and epochs ({self.epochs}), got {self.warmup_epochs!r}")
        if any(not 0 < m < 1 for m in self.lr_milestones):
            raise ConfigError(f"lr_milestones: fractions of the run strictly between 0 and 1, got {self.lr_milestones}")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise ConfigError(f"device: {self.device!r} is not allowed: allowed {', '.join(DEVICES)}, cuda:<N>")
        if self.device.startswith("cuda") and not _cuda_available():
            raise ConfigError("device: cuda was requested but no CUDA device is available: allowed cpu, auto")
        if self.memory_format not in MEMORY_FORMATS:
            raise ConfigError(f"memory_format: {self.memory_format!r} is not allowed: allowed {', '.join(MEMORY_FORMATS)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision: {self.precision!r} is not allowed: allowed {', '.join(PRECISIONS)}")
        return self

    def channels_last(self, device) -> bool:
        return self.memory_format == "channels_last" or (self.memory_format == "auto" and device.type == "cpu")

    def resolved_device(self):
        """The ``torch.device`` to train on."""
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


# Every option's default, by name (lr_milestones a tuple): what callers fall back on when a value is absent.
TRAIN_DEFAULTS: dict = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
