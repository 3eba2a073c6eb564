"""``python -m study.launch``: run a study — per-cell search, then the final stage — on Ray Tune.

No arguments = the ``smoke`` preset on the embedded MNIST subset, a local Ray instance and the
MLflow store under ``mlflow_artifacts/``. This module is the command line only: from Python, the
same is ``study.api.run(config)`` and ``study.api.resume(...)``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from study import config as study_config
from study.config import ConfigError, StudyConfig
from study.extension import EXTENSIBLE, refusal
from study.paths import storage_root
from study.signals import STOP
from study.tracking.contract import Tag
from trainables.data import DataError


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
    p.add_argument("--data-root", help="the study's data folder: MNIST/raw (torchvision's layout), svhn/, svhn-multi/, plankton/ "
                                        "(default: the embedded MNIST subset)")
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
    p.add_argument("--quiet", action="store_true", help="no progress display (the report is still built)")
    p.add_argument("--no-report", action="store_false", dest="report", help="do not build the report at the end")
    return p


_FLAG_FIELDS = {"name": "name", "datasets": "datasets", "variants": "variants", "trials_per_cell": "trials_per_cell",
                "epochs": "epochs", "train_size": "train_size", "final_seeds": "final_seeds",
                "max_concurrent_trials": "max_concurrent_trials", "cpus_per_trial": "resources.cpus",
                "gpus_per_trial": "resources.gpus", "tracking_uri": "tracking_uri", "storage_path": "storage_path",
                "data_root": "data_root", "download": "download", "seed": "seed"}


def set_overrides(args: argparse.Namespace) -> dict:
    """``--set KEY=VALUE`` items as dotted key → value (parsed as YAML)."""
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
    return overrides


def config_from_args(args: argparse.Namespace) -> StudyConfig:
    overrides = set_overrides(args)
    for attr, field in _FLAG_FIELDS.items():
        value = getattr(args, attr, None)
        if value is not None:
            overrides[field] = value
    return study_config.load(args.preset, args.config, overrides)


def flag_names() -> dict[str, str]:
    """Config field → the flag that sets it, for messages."""
    flags = {action.dest: action.option_strings[0] for action in parser()._actions if action.option_strings}
    return {field: flags[attr] for attr, field in _FLAG_FIELDS.items()}


def resume_changes(args: argparse.Namespace) -> tuple[dict, dict]:
    """The config fields given with ``--resume`` (flags and ``--set``), and how each was given."""
    given = {field: getattr(args, attr) for attr, field in _FLAG_FIELDS.items()
             if getattr(args, attr, None) is not None}
    sets, names = set_overrides(args), flag_names()
    names.update({key: f"--set {key}" for key in sets if key not in given and key not in EXTENSIBLE})
    return {**sets, **given}, names  # a flag wins over --set, as in a launch


def _finals_done(state) -> str:
    """``done/planned`` final runs, as MLflow (their one record) holds them; ``?`` if the store cannot be read.

    Counted by (cell, seed) of completed final runs of the study — wherever they ran: a final stage, or a
    search run's free slots — against the cells × final seeds of its config.
    """
    from study.extension import config_of

    cfg = config_of(state, {})
    planned = len(cfg.cells()) * len(cfg.final_seeds)
    uri = state.tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return f"?/{planned}"  # never create a store just to list
    try:
        from mlflow.tracking import MlflowClient

        from study.tracking.contract import completed_finals

        runs = completed_finals(MlflowClient(uri), state.experiment_id, state.study_id)
    except Exception:  # noqa: BLE001 - a tracking server that is down: the list still shows the record
        return f"?/{planned}"
    done = {(r.data.tags.get(Tag.CELL), r.data.tags.get(Tag.SEED)) for r in runs}
    return f"{len(done)}/{planned}"


def study_listing(storage_path: str | None) -> str:
    """Every study under the storage path, with its trials as each cell's Optuna study records them."""
    import pandas as pd
    import yaml

    from study.search.record import open_storage, study_counts
    from study.state import all_states, study_dir

    rows = []
    root = storage_root(storage_path)
    for state in all_states(root):
        url = (yaml.safe_load(state.config_yaml) or {}).get("optuna_storage")
        counts = study_counts(open_storage(study_dir(root, state.study_id), url), state.study_id)
        total = {s: sum(c[s] for c in counts.values()) for s in ("running", "complete", "pruned", "fail")}
        rows.append({"study": state.study_id, "status": state.status,
                     "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(state.created)),
                     "cells": len(counts), "trials": sum(total.values()), "completed": total["complete"],
                     "pruned": total["pruned"], "failed": total["fail"],
                     "final runs": _finals_done(state)})
    if not rows:
        return f"no studies under {root}"
    return pd.DataFrame(rows).to_markdown(index=False)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    from study import api
    from study.cluster import ClusterError
    from study.lock import StudyLocked
    from study.state import StudyNotFound, find_state
    from study.tracking.store import TrackingError

    if args.list:
        print(study_listing(args.storage_path))
        return 0
    if args.max_hours is not None and not args.max_hours > 0:
        print(f"config error: max_hours: must be a number > 0, got {args.max_hours}", file=sys.stderr)
        return 2
    try:
        if args.resume is not None:
            changes, names = resume_changes(args)
            if args.preset or args.config:  # the saved config is the study's base: these would replace it
                state = find_state(storage_root(args.storage_path), args.resume or None)
                raise refusal("--preset" if args.preset else "--config", state.study_id, names)
            study_id = api.resume(args.resume, changes, args.storage_path, args.quiet, args.report, args.max_hours,
                                  args.cluster, args.address, names)
        else:
            study_id = api.run(config_from_args(args), args.quiet, args.report, args.max_hours, args.cluster, args.address)
    except ConfigError as err:
        for line in err.lines:
            print(f"config error: {line}", file=sys.stderr)
        return 2
    except (DataError, TrackingError, ClusterError, StudyNotFound, StudyLocked) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return STOP.exit_code(130)  # 143 for SIGTERM, 129 for SIGHUP
    except RuntimeError as err:
        from study.disk import DiskSpaceError
        from study.driver import TrackingBacklog

        if not isinstance(err, (TrackingBacklog, DiskSpaceError)):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 1 if isinstance(err, TrackingBacklog) or err.resumable else 2
    print(f"study {study_id} done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
