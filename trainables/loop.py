"""The training loop: one trial, seeded, CPU or CUDA, with a per-epoch callback and checkpoints.

The options and their defaults are ``train_config.TrainConfig``'s. No Ray and no MLflow here: the
Tune adapter passes ``on_epoch`` (report + checkpoint) and the CLI
passes a progress printer. A NaN/Inf loss ends the run with status ``diverged``: at that step on
the CPU, at the end of the epoch on CUDA (where reading the loss every step would stall the stream).
"""

from __future__ import annotations

import bisect
import math
import time
from dataclasses import asdict, dataclass, field

import torch

from trainables import metrics
from trainables.data import DataError, DistortedStream, MnistSplits, load_data, stream_seed
from trainables.datasets import dataset_spec
from trainables.evaluate import evaluate, validate
from trainables.models import STNClassifier
from trainables.outcome import Outcome
from trainables.train_config import ConfigError, TrainConfig


@dataclass
class TrainResult:
    status: Outcome  # COMPLETED, DIVERGED or STOPPED
    metrics: dict
    history: list[dict] = field(default_factory=list)
    message: str = ""
    model: STNClassifier | None = None
    figures: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)


def build_optimizer(model: STNClassifier, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = model.param_groups()
    mults = {"localisation": cfg.loc_lr_mult, "pre_st": cfg.pre_st_lr_mult, "classifier": 1.0}
    params = [{"params": groups[k], "lr": cfg.lr * mults[k], "name": k} for k in groups if groups[k]]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_schedule(optimizer, cfg: TrainConfig, milestones: list[int], warmup_steps: int):
    """÷``lr_gamma`` at each milestone step, after an optional linear warm-up (stepped once per batch).

    A warm-up keeps a large localisation LR from killing the head's ReLUs in the first steps (measured:
    Adam at 1e-2 on the localisation network leaves the ST at a constant output from epoch 1).
    """
    if warmup_steps <= 0:
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=cfg.lr_gamma)

    def factor(step: int) -> float:
        return min(1.0, (step + 1) / warmup_steps) * cfg.lr_gamma ** bisect.bisect_right(milestones, step)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def check_splits(dataset: str, splits: MnistSplits) -> None:
    """One line instead of a torch shape error when the splits belong to another dataset's source."""
    expected = dataset_spec(dataset).stored_shape
    found = tuple(splits.train_x.shape[1:])
    if found != expected:
        raise DataError(f"data: {dataset} takes images of shape {expected}, but {splits.source} holds {found}")


def train(cfg: TrainConfig, on_epoch=None, splits: MnistSplits | None = None, resume: dict | None = None,
          evaluate_at_end: bool = True) -> TrainResult:
    """Train one model. ``on_epoch(metrics, state)`` may return ``"stop"`` (e.g. pruned) to end early.

    ``state()`` returns a checkpointable dict; pass such a dict as ``resume`` to continue after its
    epoch (the data streams are seeded per epoch, so a resumed run draws what the original would).
    """
    cfg.validate()
    device = cfg.resolved_device()
    splits = splits or load_data(cfg.dataset, cfg.data_root, cfg.download)
    check_splits(cfg.dataset, splits)
    splits = splits.to(device)
    torch.manual_seed(cfg.seed)
    model = STNClassifier(cfg.dataset, cfg.variant, cfg.st_transform).to(device)
    if cfg.channels_last(device):  # conv outputs follow the weights' layout: the inputs need no change
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg)
    train_x, train_y = splits.train_x, splits.train_y
    if cfg.train_size is not None:
        train_x, train_y = train_x[: cfg.train_size], train_y[: cfg.train_size]
    distortion = dataset_spec(cfg.dataset).train_distortion()
    pool = splits.train_x if distortion.needs_pool else None  # the MNIST generators' clutter digits
    stream = DistortedStream(train_x, train_y, distortion, cfg.batch_size, pool, shuffle=True)
    total_steps = cfg.epochs * len(stream)
    milestones = sorted({max(1, int(round(f * total_steps))) for f in cfg.lr_milestones})
    scheduler = lr_schedule(optimizer, cfg, milestones, int(round(cfg.warmup_epochs * len(stream))))
    history, start_epoch = [], 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        if ("lr_lambdas" in resume["scheduler"]) != (cfg.warmup_epochs > 0):
            raise ConfigError("warmup_epochs: a checkpoint cannot be resumed with a different warm-up setting "
                              "than it was trained with")
        scheduler.load_state_dict(resume["scheduler"])
        history, start_epoch = list(resume["history"]), int(resume["epoch"])

    def state() -> dict:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "history": history, "epoch": len(history)}

    config = {**asdict(cfg), "device": str(device), "data_source": splits.source, "data_digest": splits.digest}
    # Reading the loss is free on the CPU, where it must be read every step: a NaN θ makes the CPU
    # grid_sample backward read out of bounds (a segfault, measured). On CUDA it would stall the
    # stream each step, and the kernels skip NaN coordinates, so there the epoch's sum is checked.
    sync_every_step = device.type != "cuda"

    def diverged(where: str, value: float) -> TrainResult:
        message = f"diverged at {where}: loss is {value} (optimizer {cfg.optimizer}, lr {cfg.lr:g}); lower the learning rate"
        return TrainResult(Outcome.DIVERGED, {"epochs_completed": len(history)}, history, message, model, config=config)

    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        started, loss_sum, seen = time.perf_counter(), torch.zeros((), device=device), 0
        for step, (images, labels, _) in enumerate(stream.batches(stream_seed(cfg.seed, "train", epoch))):
            with torch.autocast(device.type, torch.bfloat16, enabled=cfg.precision == "bf16"):
                loss = metrics.classification_loss(model(images), labels)
            if sync_every_step and not math.isfinite(loss.item()):
                return diverged(f"epoch {epoch + 1}, step {step + 1}", loss.item())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach().float() * len(labels)
            seen += len(labels)
        train_loss = float(loss_sum) / seen  # on CUDA the epoch's one host sync: a NaN/Inf anywhere propagates here
        if not math.isfinite(train_loss):
            return diverged(f"epoch {epoch + 1}", train_loss)
        seconds = time.perf_counter() - started
        record = {"epoch": epoch + 1, "step": (epoch + 1) * len(stream), "train_loss": train_loss, **validate(model, splits),
                  "images_per_s": seen / seconds, "lr": optimizer.param_groups[-1]["lr"], "epoch_seconds": seconds}
        history.append(record)
        if on_epoch is not None and on_epoch(record, state) == "stop":
            return TrainResult(Outcome.STOPPED, {"epochs_completed": epoch + 1, **record}, history, "stopped early",
                               model, config=config)
    final = {"epochs_completed": cfg.epochs, **(history[-1] if history else {})}
    figures = {}
    if evaluate_at_end:
        test_metrics, figures = evaluate(model, splits, cfg.test_passes)
        final.update(test_metrics)
    return TrainResult(Outcome.COMPLETED, final, history, "", model, figures, config)
