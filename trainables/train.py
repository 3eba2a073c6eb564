"""``python -m trainables.train``: train and evaluate one model without Ray; writes result.json."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import typing
from dataclasses import asdict, fields
from pathlib import Path

import torch

from trainables.data import DataError, load_data
from trainables.datasets import dataset_spec
from trainables.loop import ConfigError, TrainConfig, TrainResult, check_splits, train
from trainables.outcome import Outcome
from trainables.registry import ALL_DATASETS, VariantError
from trainables.train_config import OPTION_TYPES, OPTIONS

RESULT_FILE = "result.json"


def _data_help() -> tuple[str, str]:
    """--data-root's and --download's help, one entry per data source, from the dataset specs."""
    sources: dict[str, list] = {}
    for name in ALL_DATASETS:
        spec = dataset_spec(name)
        sources.setdefault(spec.source, []).append(spec)
    root = "; ".join(f"{'/'.join(s.name for s in specs)}: {specs[0].layout}" for specs in sources.values())
    fetch = ", ".join(source for source, specs in sources.items() if specs[0].downloadable)
    return root, f"download {fetch} into --data-root if missing (the others: by hand)"


def parser() -> argparse.ArgumentParser:
    """The CLI of ``TrainConfig``: one flag per field, with the field's default, type and help."""
    p = argparse.ArgumentParser(prog="python -m trainables.train", description=__doc__)
    root_help, download_help = _data_help()
    helps = {"data_root": root_help, "download": download_help}
    for name, spec in OPTIONS.items():
        flag, kind = f"--{name.replace('_', '-')}", OPTION_TYPES[name]
        allowed = spec.metadata["choices"]
        about = helps.get(name) or spec.metadata["help"] + (f" (one of {', '.join(allowed)})" if allowed else "")
        if kind is bool:
            p.add_argument(flag, action="store_true", help=about)
        elif typing.get_origin(kind) is tuple:
            p.add_argument(flag, type=float, nargs="*", default=list(spec.default), help=about)
        else:
            scalar = next((t for t in typing.get_args(kind) if t is not type(None)), kind)  # int | None: int
            p.add_argument(flag, type=scalar, default=spec.default, help=about)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--out", default="runs/train", help="directory for result.json")
    return p


class Stopped(KeyboardInterrupt):
    """SIGTERM: stop like Ctrl-C, exit 143 (128 + 15) as a terminated process does."""


def _interrupt(signum, _frame):
    raise Stopped


def _fmt(record: dict, epochs: int, elapsed: float) -> str:
    pose = f"  pose SD {record['val_pose_sd']:.3g}" if "val_pose_sd" in record else ""
    slope = f"  slope {record['val_angle_slope']:+.2f}" if "val_angle_slope" in record else ""
    theta = (f"  θ sd: angle {record['val_theta_angle_sd']:.1f}° log2 scale {record['val_theta_log2_scale_sd']:.3f} "
             f"shear {record['val_theta_shear_rms']:.3f} shift {record['val_theta_shift_sd']:.3f}"
             if "val_theta_angle_sd" in record else "")
    if "val_loc_alive" in record:
        theta += f"  loc units alive {100 * record['val_loc_alive']:.0f}%"
    return (f"epoch {record['epoch']:>3}/{epochs} step {record['step']}  loss {record['train_loss']:.4f}  "
            f"val {100 * record['val_error']:5.2f}%{pose}{slope}{theta}  lr {record['lr']:.2g}  "
            f"{record['images_per_s']:,.0f} img/s  {elapsed:,.0f}s")


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    known = {f.name for f in fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in known}
    cfg = TrainConfig(**{**values, "lr_milestones": tuple(args.lr_milestones)})
    try:
        cfg.validate()
        splits = load_data(cfg.dataset, cfg.data_root, cfg.download)
        check_splits(cfg.dataset, splits)
    except (VariantError, ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(splits.describe(), flush=True)
    print(f"training {cfg.variant} ({cfg.st_transform}) on {cfg.dataset}: {cfg.epochs} epochs, {cfg.optimizer} "
          f"lr {cfg.lr:g}, batch {cfg.batch_size}, seed {cfg.seed}, device {cfg.resolved_device()}", flush=True)
    started = time.perf_counter()
    history: list[dict] = []

    def on_epoch(record: dict, _state) -> None:
        history.append(record)
        print(_fmt(record, cfg.epochs, time.perf_counter() - started), flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    previous, code = signal.signal(signal.SIGTERM, _interrupt), 0
    try:
        result = train(cfg, on_epoch=on_epoch, splits=splits)
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: keep the epochs done so far, then stop
        code = 143 if isinstance(stop, Stopped) else 130
        result = TrainResult(Outcome.STOPPED, {"epochs_completed": len(history), **(history[-1] if history else {})},
                             history, "interrupted", config={**asdict(cfg), "device": str(cfg.resolved_device()),
                                                             "data_source": splits.source, "data_digest": splits.digest})
    finally:
        signal.signal(signal.SIGTERM, previous)
    payload = {"status": result.status, "message": result.message, "config": result.config,
               "metrics": result.metrics, "history": result.history,
               "wall_seconds": time.perf_counter() - started}
    (out / RESULT_FILE).write_text(json.dumps(payload, indent=2))
    if result.status == Outcome.STOPPED:
        print(f"stopped after {len(history)} epochs; wrote {out / RESULT_FILE}", file=sys.stderr)
        return code
    if result.status == Outcome.DIVERGED:
        print(f"diverged: {result.message}", file=sys.stderr)
        print(f"wrote {out / RESULT_FILE}")
        return 1
    width = max(len(k) for k in result.metrics)
    for key, value in result.metrics.items():
        shown = f"{value:.4f}" if isinstance(value, float) else value
        print(f"  {key:<{width}}  {shown}")
    print(f"wrote {out / RESULT_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
