"""``python -m study.launch``: run a study — per-cell search, then the final stage — on Ray Tune.

No arguments = the ``smoke`` preset on the embedded MNIST subset, a local Ray instance and the
MLflow store under ``mlflow_artifacts/``. The same is callable from Python: ``run(config)``.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
import time
from pathlib import Path

from study import config as study_config
from study.config import ConfigError, StudyConfig
from trainables.data import DataError

log = logging.getLogger("study")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m study.launch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=study_config.PRESETS, help="shipped preset (default: smoke)")
    p.add_argument("--config", help="YAML study config (applied on top of --preset when both are given)")
    p.add_argument("--name", help="study (MLflow experiment) name")
    p.add_argument("--datasets", nargs="+", help="e.g. rotated-mnist translated-mnist")
    p.add_argument("--variants", nargs="+", help="e.g. CNN STN-C1 STN-SL1")
    p.add_argument("--trials-per-cell", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--train-size", type=int)
    p.add_argument("--final-seeds", nargs="*", type=int, help="seeds of the final stage (none: skip it)")
    p.add_argument("--max-concurrent", type=int, dest="max_concurrent_trials")
    p.add_argument("--cpus-per-trial", type=float)
    p.add_argument("--gpus-per-trial", type=float, help="GPU fraction per trial, e.g. 0.25")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or the local sqlite store)")
    p.add_argument("--storage-path", help="Tune storage path (default: mlflow_artifacts/tune)")
    p.add_argument("--data-root", help="torchvision MNIST root (default: the embedded subset)")
    p.add_argument("--download", action="store_true", default=None)
    p.add_argument("--seed", type=int)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set search.lr.high=0.01 (value parsed as YAML)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    return p


_FLAG_FIELDS = {"name": "name", "datasets": "datasets", "variants": "variants", "trials_per_cell": "trials_per_cell",
                "epochs": "epochs", "train_size": "train_size", "final_seeds": "final_seeds",
                "max_concurrent_trials": "max_concurrent_trials", "cpus_per_trial": "resources.cpus",
                "gpus_per_trial": "resources.gpus", "tracking_uri": "tracking_uri", "storage_path": "storage_path",
                "data_root": "data_root", "download": "download", "seed": "seed"}


def config_from_args(args: argparse.Namespace) -> StudyConfig:
    import yaml

    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError([f"--set: expected KEY=VALUE, got {item!r}"])
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError([f"--set {key}: value {value!r} is not valid YAML"]) from None
    for attr, field in _FLAG_FIELDS.items():
        value = getattr(args, attr, None)
        if value is not None:
            overrides[field] = value
    return study_config.load(args.preset, args.config, overrides)


def new_study_id(name: str) -> str:
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def artifacts_root() -> Path:
    return Path.cwd() / "mlflow_artifacts"


def resolve_tracking_uri(cfg: StudyConfig) -> str:
    from study.tracking import default_tracking_uri

    return cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(artifacts_root())


def run(cfg: StudyConfig, quiet: bool = False) -> str:
    """Run the study end to end and return its study id. Raises ConfigError / DataError / TrackingError."""
    from study.runner import StudyRunner

    return StudyRunner(cfg, quiet=quiet).run()


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    from study.tracking import TrackingError

    try:
        cfg = config_from_args(args)
    except ConfigError as err:
        for line in err.lines:
            print(f"config error: {line}", file=sys.stderr)
        return 2
    try:
        study_id = run(cfg, quiet=args.quiet)
    except ConfigError as err:
        for line in err.lines:
            print(f"config error: {line}", file=sys.stderr)
        return 2
    except (DataError, TrackingError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(f"study {study_id} done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
