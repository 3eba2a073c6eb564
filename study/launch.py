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
from study.signals import STOP, graceful_stop
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
    p.add_argument("--cluster", action="store_true", help="join a running Ray cluster instead of starting one")
    p.add_argument("--address", help="Ray cluster address for --cluster (default: $RAY_ADDRESS or auto)")
    p.add_argument("--resume", nargs="?", const="", metavar="STUDY",
                   help="continue an interrupted study, or extend a finished one (default: the latest)")
    p.add_argument("--max-hours", type=float, help="time budget: stop scheduling new trials after H hours")
    p.add_argument("--list", action="store_true", help="list the studies in the storage path and exit")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    return p


EXTENSIBLE = ("trials_per_cell", "final_seeds", "max_concurrent_trials", "resources.cpus", "resources.gpus",
              "tracking_uri", "storage_path")


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


def run(cfg: StudyConfig, quiet: bool = False, max_hours: float | None = None, cluster: bool = False,
        address: str | None = None) -> str:
    """Run the study end to end and return its study id. Raises ConfigError / DataError / TrackingError."""
    from study.runner import StudyRunner

    runner = StudyRunner(cfg, quiet=quiet, max_hours=max_hours, cluster_address=address, use_cluster=cluster)
    with graceful_stop():  # SIGTERM / SIGHUP: like Ctrl-C
        runner.start()
        return runner.execute()


def storage_root(storage_path: str | None) -> Path:
    return Path(storage_path).expanduser().resolve() if storage_path else artifacts_root() / "tune"


def resume(wanted: str | None, changes: dict | None = None, storage_path: str | None = None, quiet: bool = False,
           max_hours: float | None = None, cluster: bool = False, address: str | None = None) -> str:
    """Continue an interrupted study or extend a finished one (more trials per cell, more final seeds)."""
    from study.runner import StudyRunner, config_of
    from study.state import find_state

    state = find_state(storage_root(storage_path), wanted or None)
    unknown = [k for k in (changes or {}) if k not in EXTENSIBLE]
    if unknown:
        raise ConfigError([f"{unknown[0]}: cannot be changed when resuming: allowed {', '.join(EXTENSIBLE)}"])
    flat = {k: v for k, v in (changes or {}).items() if "." not in k}
    cfg = config_of(state, {**flat, "tracking_uri": (changes or {}).get("tracking_uri") or state.tracking_uri})
    for key, value in (changes or {}).items():
        if "." in key:
            section, field = key.split(".")
            setattr(getattr(cfg, section), field, value)
    runner = StudyRunner(cfg, quiet=quiet, max_hours=max_hours, cluster_address=address, use_cluster=cluster)
    with graceful_stop():
        runner.attach(state)
        return runner.execute()


def list_studies(storage_path: str | None) -> str:
    import pandas as pd

    from study.state import all_states, load_searcher_state, study_dir

    rows = []
    root = storage_root(storage_path)
    for state in all_states(root):
        saved = load_searcher_state(study_dir(root, state.study_id)) or {"studies": {}}
        trials = [t for study in saved["studies"].values() for t in study.trials]
        states = [t.state.name.lower() for t in trials]
        rows.append({"study": state.study_id, "status": state.status,
                     "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(state.created)),
                     "cells": len(saved["studies"]), "trials": len(trials), "completed": states.count("complete"),
                     "pruned": states.count("pruned"), "failed": states.count("fail"),
                     "final runs": f"{sum(state.final_complete)}/{len(state.final_runs)} Tune runs done"})
    if not rows:
        return f"no studies under {root}"
    return pd.DataFrame(rows).to_markdown(index=False)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    from study.cluster import ClusterError
    from study.state import StudyNotFound
    from study.tracking import TrackingError

    if args.list:
        print(list_studies(args.storage_path))
        return 0
    if args.max_hours is not None and not args.max_hours > 0:
        print(f"config error: max_hours: must be a number > 0, got {args.max_hours}", file=sys.stderr)
        return 2
    try:
        if args.resume is not None:
            changes = {field: getattr(args, attr) for attr, field in _FLAG_FIELDS.items()
                       if getattr(args, attr, None) is not None and field in EXTENSIBLE}
            study_id = resume(args.resume, changes, args.storage_path, args.quiet, args.max_hours, args.cluster,
                              args.address)
        else:
            study_id = run(config_from_args(args), args.quiet, args.max_hours, args.cluster, args.address)
    except ConfigError as err:
        for line in err.lines:
            print(f"config error: {line}", file=sys.stderr)
        return 2
    except (DataError, TrackingError, ClusterError, StudyNotFound) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return STOP.exit_code(130)  # 143 for SIGTERM, 129 for SIGHUP
    except RuntimeError as err:
        from study.disk import DiskSpaceError
        from study.setup import TrackingBacklog

        if not isinstance(err, (TrackingBacklog, DiskSpaceError)):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 1 if isinstance(err, TrackingBacklog) or err.resumable else 2
    print(f"study {study_id} done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
