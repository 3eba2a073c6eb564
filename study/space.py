"""Per-cell search: one seeded Optuna study per cell inside a single Tune run.

``PerCellSearcher`` is a Tune ``Searcher`` that asks the cell's own Optuna study (TPE, seeded per
cell) for hyper-parameters and tells it the outcome; ``CellPruningScheduler`` asks that same cell's
Optuna pruner whether to stop a trial. So a trial is only ever compared with trials of its own
cell: STN-C1's trials are never pruned for being worse than STN-SL1's, and each cell's best trial
trains to the end. Cells are interleaved round-robin so that they run concurrently.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import time
from pathlib import Path

import optuna
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from study.config import Cell, Range, SearchSpace, StudyConfig
from study.state import read_deadline, save_searcher

optuna.logging.set_verbosity(optuna.logging.WARNING)
log = logging.getLogger(__name__)
METRIC, MODE = "val_error", "min"


def cell_seed(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{key}".encode()).digest()[:4], "little")


def make_pruner(cfg: StudyConfig) -> optuna.pruners.BasePruner:
    if cfg.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=cfg.grace_period, reduction_factor=cfg.reduction_factor)
    if cfg.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=cfg.grace_period)
    return optuna.pruners.NopPruner()


def _suggest_float(trial: optuna.Trial, name: str, value: Range) -> float:
    if value.low == value.high:
        return float(value.low)
    return trial.suggest_float(name, value.low, value.high, log=value.log)


def sample_hparams(trial: optuna.Trial, space: SearchSpace) -> dict:
    """Draw one configuration; momentum is only a parameter of SGD."""
    optimizer = trial.suggest_categorical("optimizer", space.optimizer)
    hparams = {
        "optimizer": optimizer,
        "lr": _suggest_float(trial, "lr", space.lr),
        "loc_lr_mult": _suggest_float(trial, "loc_lr_mult", space.loc_lr_mult),
        "momentum": _suggest_float(trial, "momentum", space.momentum) if optimizer == "sgd" else 0.0,
        "weight_decay": _suggest_float(trial, "weight_decay", space.weight_decay),
        "batch_size": int(trial.suggest_categorical("batch_size", space.batch_size)),
    }
    return hparams


def trial_constants(cfg: StudyConfig, stage: str) -> dict:
    """The study-wide part of every trial's config."""
    epochs = cfg.final_epochs or cfg.epochs if stage == "final" else cfg.epochs
    return {"stage": stage, "epochs": epochs, "train_size": cfg.train_size, "test_passes": cfg.test_passes,
            "device": cfg.device, "data_root": cfg.data_root, "download": cfg.download,
            "threads": max(1, int(cfg.resources.cpus)), "lr_milestones": list(cfg.lr_milestones)}


def cell_fields(cell: Cell) -> dict:
    return {"cell": cell.key, "dataset": cell.dataset, "variant": cell.variant, "st_transform": cell.st_transform}


class PerCellSearcher(Searcher):
    """One Optuna study per cell; round-robin over cells until each has ``trials_per_cell`` trials."""

    def __init__(self, cfg: StudyConfig, directory: Path | None = None):
        super().__init__(metric=METRIC, mode=MODE)
        self.cfg = cfg
        self.directory = directory  # the study's directory: deadline file, autosaved state
        self.cells = {cell.key: cell for cell in cfg.cells()}
        self.studies = {key: self._new_study(key) for key in self.cells}
        self.live: dict[str, tuple[str, int]] = {}  # Tune trial id -> (cell key, Optuna trial number)
        self.pruned: set[str] = set()
        self._trials: dict[str, optuna.Trial] = {}

    def _new_study(self, key: str) -> optuna.Study:
        sampler = optuna.samplers.TPESampler(seed=cell_seed(self.cfg.seed, key))
        return optuna.create_study(study_name=key, direction="minimize", sampler=sampler, pruner=make_pruner(self.cfg))

    @property
    def total_trials(self) -> int:
        return self.cfg.trials_per_cell * len(self.cells)

    def started(self, key: str) -> int:
        """Trials of the cell so far, not counting trials lost to a killed driver before Tune saved them."""
        return sum(1 for t in self.studies[key].trials if not t.user_attrs.get("lost"))

    def budget_exhausted(self) -> bool:
        deadline = read_deadline(self.directory)
        return deadline is not None and time.time() >= deadline

    def remaining(self) -> int:
        return sum(max(0, self.cfg.trials_per_cell - self.started(k)) for k in self.cells)

    def _autosave(self) -> None:
        if self.directory is not None:
            save_searcher(self.directory, self)

    def suggest(self, trial_id: str):
        open_cells = [k for k in self.cells if self.started(k) < self.cfg.trials_per_cell]
        if not open_cells or self.budget_exhausted():  # time budget: schedule nothing new, finish cleanly
            return Searcher.FINISHED
        key = min(open_cells, key=self.started)  # round-robin: the cell with the fewest trials so far
        cell, study = self.cells[key], self.studies[key]
        trial = study.ask()
        hparams = sample_hparams(trial, self.cfg.space_for(cell.dataset, cell.variant))
        trial.set_user_attr("hparams", hparams)
        trial.set_user_attr("tune_trial_id", trial_id)
        self.live[trial_id] = (key, trial.number)
        self._trials[trial_id] = trial
        self._autosave()
        return {**trial_constants(self.cfg, "search"), **cell_fields(cell), "seed": self.cfg.seed,
                "trial_number": trial.number, **hparams}

    def _trial(self, trial_id: str) -> optuna.Trial | None:
        if trial_id not in self.live:
            return None
        if trial_id not in self._trials:  # after a restore: rebuild the ask-and-tell handle
            key, number = self.live[trial_id]
            study = self.studies[key]
            optuna_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
            self._trials[trial_id] = optuna.Trial(study, optuna_id)
        return self._trials[trial_id]

    def should_prune(self, trial_id: str, step: int, value: float) -> bool:
        """Report an intermediate val_error to the trial's own cell study and ask its pruner."""
        trial = self._trial(trial_id)
        if trial is None:
            return False
        trial.report(value, step)
        return trial.should_prune()

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pass  # intermediate values reach Optuna through the scheduler's should_prune

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        trial = self._trial(trial_id)
        if trial is None:
            return
        key, _ = self.live.pop(trial_id)
        self._trials.pop(trial_id, None)
        study = self.studies[key]
        outcome = (result or {}).get("outcome")
        if error or outcome in ("diverged", "failed"):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        elif trial_id in self.pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif outcome == "completed" and result.get(METRIC) is not None:
            study.tell(trial, result[METRIC])
        else:  # stopped without a final result (e.g. the study's time budget ran out)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        self._autosave()

    def best_per_cell(self) -> dict[str, dict]:
        """Each cell's completed trial with the lowest final val_error (test error is never looked at)."""
        best = {}
        for key, study in self.studies.items():
            done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
            if done:
                winner = min(done, key=lambda t: (t.value, t.number))
                best[key] = {"hparams": winner.user_attrs["hparams"], "val_error": winner.value,
                             "trial_number": winner.number, "tune_trial_id": winner.user_attrs.get("tune_trial_id")}
        return best

    def counts(self) -> dict[str, dict[str, int]]:
        out = {}
        for key, study in self.studies.items():
            states = [t.state.name.lower() for t in study.trials if not t.user_attrs.get("lost")]
            out[key] = {s: states.count(s) for s in ("running", "complete", "pruned", "fail")}
        return out

    # ---- Tune checkpointing of the searcher's state (Tuner.restore)
    def get_state(self) -> dict:
        return {"studies": self.studies, "live": self.live, "pruned": self.pruned, "cfg": self.cfg}

    def set_state(self, state: dict) -> None:
        self.studies, self.live, self.pruned = state["studies"], state["live"], state["pruned"]
        self.cfg = state["cfg"]
        self.cells = {cell.key: cell for cell in self.cfg.cells()}
        self._trials = {}

    def continue_with(self, state: dict, cfg: StudyConfig) -> None:
        """Carry a finished search run's studies into a new run (more trials per cell, a new budget)."""
        self.set_state(state)
        for trial_id, (key, number) in list(self.live.items()):
            # suggested but never run to an end by a finished Tune run: lost to a killed driver
            study = self.studies[key]
            optuna_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
            study._storage.set_trial_user_attr(optuna_id, "lost", True)
            study.tell(optuna.Trial(study, optuna_id), state=optuna.trial.TrialState.FAIL)
            self.live.pop(trial_id)
        self.cfg = cfg

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_bytes(pickle.dumps(self.get_state()))

    def restore(self, checkpoint_path: str) -> None:
        self.set_state(pickle.loads(Path(checkpoint_path).read_bytes()))


class SnapshotOnAddScheduler(FIFOScheduler):
    """FIFO, but Tune's experiment state is saved before a new trial first starts.

    Tune otherwise snapshots on a timer: a driver killed between a trial's start and the next
    snapshot would lose that trial on resume while its MLflow run (and the searcher's record of it)
    already exist.
    """

    def __init__(self):
        super().__init__()
        self._snapshotted: set[str] = set()

    def choose_trial_to_run(self, tune_controller):
        trial = super().choose_trial_to_run(tune_controller)
        if trial is not None and trial.trial_id not in self._snapshotted:
            self._snapshotted.add(trial.trial_id)
            controller = getattr(tune_controller, "_tune_controller", tune_controller)
            try:
                controller.checkpoint(force=True, wait=True)
            except Exception as err:  # never fail a study over an early snapshot
                log.warning("could not snapshot the experiment state: %s", err)
        return trial


class CellPruningScheduler(SnapshotOnAddScheduler):
    """Stops a trial when its own cell's Optuna pruner says so; never compares across cells."""

    def __init__(self, searcher: PerCellSearcher):
        super().__init__()
        self.searcher = searcher

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get("outcome") or METRIC not in result or result.get("epoch", 0) >= trial.config.get("epochs", 0):
            return TrialScheduler.CONTINUE
        if self.searcher.should_prune(trial.trial_id, int(result["epoch"]), float(result[METRIC])):
            self.searcher.pruned.add(trial.trial_id)
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE
