"""Per-cell search: one seeded Optuna study per cell inside a single Tune run.

``PerCellSearcher`` is a Tune ``Searcher`` that asks the cell's own Optuna study (``cfg.sampler``,
seeded per cell: ``study.samplers``) for hyper-parameters and tells it the outcome;
``study.schedulers.CellPruningScheduler`` asks that same cell's Optuna pruner whether to stop a
trial. So a trial is only ever compared with trials of its own cell: STN-C1's trials are never pruned
for being worse than STN-SL1's, and each cell's best trial trains to the end. Search trials train with
seeds of their own (``study.samplers.search_seed``), never one of the final runs' seeds.

A free slot goes to the cell with the most work left (its trials still to start × its measured trial
time): the longest work starts first, so the study does not end on one long trial running alone.
Once a cell's search is over, its final runs (val-best configuration × seeds) are scheduled in the
same Tune run, into slots the other cells' search would leave idle (``overlap_final``); the final
stage then runs only what is left.
"""

from __future__ import annotations

import logging
import pickle
import time
from pathlib import Path

import optuna
from ray.tune.search import Searcher

from study.config import Cell, Range, SearchSpace, StudyConfig
from study.samplers import make_pruner, make_sampler, search_seed
from study.state import read_deadline, save_searcher

optuna.logging.set_verbosity(optuna.logging.WARNING)
log = logging.getLogger(__name__)
METRIC, MODE = "val_error", "min"
HPARAM_KEYS = ("optimizer", "lr", "loc_lr_mult", "momentum", "weight_decay", "batch_size")
FINAL_ENDS = ("completed", "diverged")  # a final run that failed (errored) early is tried again by the final stage


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
            "threads": max(1, int(cfg.resources.cpus)), "lr_milestones": list(cfg.lr_milestones),
            "warmup_epochs": getattr(cfg, "warmup_epochs", 0.0)}  # a config pickled before the field: none


def cell_fields(cell: Cell) -> dict:
    return {"cell": cell.key, "dataset": cell.dataset, "variant": cell.variant, "st_transform": cell.st_transform}


def final_key(config: dict) -> tuple:
    """What makes two final runs the same: cell, seed and hyper-parameters, as MLflow stores them."""
    return (config["cell"], str(config["seed"]), tuple(str(config[k]) for k in HPARAM_KEYS))


class PerCellSearcher(Searcher):
    """One Optuna study per cell until each has ``trials_per_cell`` trials, then the cells' final runs."""

    def __init__(self, cfg: StudyConfig, directory: Path | None = None):
        super().__init__(metric=METRIC, mode=MODE)
        self.cfg = cfg
        self.directory = directory  # the study's directory: deadline file, autosaved state
        self.cells = {cell.key: cell for cell in cfg.cells()}
        self.studies = {key: self._new_study(key) for key in self.cells}
        self.live: dict[str, tuple[str, int]] = {}  # Tune trial id -> (cell key, Optuna trial number)
        self.pruned: set[str] = set()
        self.seconds: dict[str, list[float]] = {}  # cell -> its ended search trials' trial_seconds
        self.final_live: dict[str, tuple] = {}  # Tune trial id -> final_key of a final run started early
        self.finals_tried: set[tuple] = set()  # final runs started by a search run (never twice there)
        self.finals_done: set[tuple] = set()  # final runs known to have completed
        self._trials: dict[str, optuna.Trial] = {}
        self._suggested_at: dict[str, float] = {}

    def _new_study(self, key: str) -> optuna.Study:
        sampler = make_sampler(self.cfg, key)
        return optuna.create_study(study_name=key, direction="minimize", sampler=sampler, pruner=make_pruner(self.cfg))

    @property
    def total_trials(self) -> int:
        return self.cfg.trials_per_cell * len(self.cells)

    def started(self, key: str) -> int:
        """Trials of the cell so far, not counting trials lost to a killed driver before Tune saved them."""
        return sum(1 for t in self.studies[key].get_trials(deepcopy=False) if not t.user_attrs.get("lost"))

    def budget_exhausted(self) -> bool:
        deadline = read_deadline(self.directory)
        return deadline is not None and time.time() >= deadline

    def remaining(self) -> int:
        return sum(max(0, self.cfg.trials_per_cell - self.started(k)) for k in self.cells)

    @property
    def overlap_final(self) -> bool:
        return getattr(self.cfg, "overlap_final", False)  # a config pickled before the option: stages apart

    def finals_bound(self) -> int:
        """At most this many final runs can start inside a search run (a cap on Tune's samples must never
        cut search trials: finals tried for an earlier best or seed do not count against it)."""
        return len(self.cells) * len(self.cfg.final_seeds) if self.overlap_final else 0

    def _autosave(self) -> None:
        if self.directory is not None:
            save_searcher(self.directory, self)

    # ---- which cell gets a free slot
    def _searching(self, key: str) -> bool:
        return any(cell == key for cell, _ in self.live.values())

    def final_configs(self, key: str, best_per_cell: dict | None = None) -> list[dict]:
        """The cell's final runs: its val-best configuration × the seeds (none before a trial completed)."""
        best = (best_per_cell if best_per_cell is not None else self.best_per_cell()).get(key)
        if best is None:
            return []
        return [{**trial_constants(self.cfg, "final"), **cell_fields(self.cells[key]), "seed": seed,
                 "selected_from": best["trial_number"], **best["hparams"]} for seed in self.cfg.final_seeds]

    def _finals_ready(self, key: str, best_per_cell: dict) -> list[dict]:
        if not self.overlap_final or self.started(key) < self.cfg.trials_per_cell or self._searching(key):
            return []
        scheduled = self.finals_tried | self.finals_done
        return [c for c in self.final_configs(key, best_per_cell) if final_key(c) not in scheduled]

    def _trial_estimate(self, key: str) -> float:
        """A cell's mean ended-trial time; before one ended, the longest known (or elapsed) time."""
        if self.seconds.get(key):
            return sum(self.seconds[key]) / len(self.seconds[key])
        known = [sum(s) / len(s) for s in self.seconds.values() if s]
        if not known:
            return 1.0  # nothing measured yet: every cell alike (round-robin)
        now = time.time()
        elapsed = [now - self._suggested_at[t] for t, (cell, _) in self.live.items()
                   if cell == key and t in self._suggested_at]
        return max(known + elapsed)

    def remaining_work(self, key: str, finals_ready: list[dict]) -> float:
        estimate = self._trial_estimate(key)
        search_left = max(0, self.cfg.trials_per_cell - self.started(key))
        finals_left = len(finals_ready) if search_left == 0 else len(self.cfg.final_seeds) * self.overlap_final
        return estimate * (search_left + finals_left * (self.cfg.final_epochs or self.cfg.epochs) / self.cfg.epochs)

    def suggest(self, trial_id: str):
        if self.budget_exhausted():  # time budget: schedule nothing new, finish cleanly
            return Searcher.FINISHED
        best = self.best_per_cell()
        ready = {key: self._finals_ready(key, best) for key in self.cells}
        candidates = [k for k in self.cells if self.started(k) < self.cfg.trials_per_cell or ready[k]]
        if not candidates:  # wait while a cell's search may still make final runs ready, else done
            waiting = self.overlap_final and self.cfg.final_seeds and self.live
            return None if waiting else Searcher.FINISHED
        # most work left first; on a tie the cell with the fewest trials (round-robin), then config order
        key = max(candidates, key=lambda k: (self.remaining_work(k, ready[k]), -self.started(k)))
        self._suggested_at[trial_id] = time.time()
        if ready[key]:
            config = ready[key][0]
            self.final_live[trial_id] = final_key(config)
            self.finals_tried.add(final_key(config))
            self._autosave()
            return config
        cell, study = self.cells[key], self.studies[key]
        trial = study.ask()
        hparams = sample_hparams(trial, self.cfg.space_for(cell.dataset, cell.variant))
        trial.set_user_attr("hparams", hparams)
        trial.set_user_attr("tune_trial_id", trial_id)
        seed = search_seed(self.cfg.seed, key, trial.number)  # never a final seed: see study.samplers
        trial.set_user_attr("seed", seed)
        self.live[trial_id] = (key, trial.number)
        self._trials[trial_id] = trial
        self._autosave()
        return {**trial_constants(self.cfg, "search"), **cell_fields(cell), "seed": seed,
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
        self._suggested_at.pop(trial_id, None)
        outcome = (result or {}).get("outcome")
        if trial_id in self.final_live:
            key = self.final_live.pop(trial_id)
            if not error and outcome in FINAL_ENDS:
                self.finals_done.add(key)
            self._autosave()
            return
        trial = self._trial(trial_id)
        if trial is None:
            return
        key, _ = self.live.pop(trial_id)
        self._trials.pop(trial_id, None)
        if (result or {}).get("trial_seconds"):
            self.seconds.setdefault(key, []).append(float(result["trial_seconds"]))
        study = self.studies[key]
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
            done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if done:
                winner = min(done, key=lambda t: (t.value, t.number))
                best[key] = {"hparams": winner.user_attrs["hparams"], "val_error": winner.value,
                             "trial_number": winner.number, "tune_trial_id": winner.user_attrs.get("tune_trial_id")}
        return best

    def counts(self) -> dict[str, dict[str, int]]:
        out = {}
        for key, study in self.studies.items():
            states = [t.state.name.lower() for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("lost")]
            out[key] = {s: states.count(s) for s in ("running", "complete", "pruned", "fail")}
        return out

    # ---- Tune checkpointing of the searcher's state (Tuner.restore)
    def get_state(self) -> dict:
        return {"studies": self.studies, "live": self.live, "pruned": self.pruned, "cfg": self.cfg,
                "seconds": self.seconds, "final_live": self.final_live, "finals_tried": self.finals_tried,
                "finals_done": self.finals_done}

    def set_state(self, state: dict) -> None:
        self.studies, self.live, self.pruned = state["studies"], state["live"], state["pruned"]
        self.cfg = state["cfg"]
        self.seconds = state.get("seconds", {})  # studies saved before final runs could start early
        self.final_live = state.get("final_live", {})
        self.finals_tried, self.finals_done = state.get("finals_tried", set()), state.get("finals_done", set())
        self.cells = {cell.key: cell for cell in self.cfg.cells()}
        self._trials, self._suggested_at = {}, {}

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
        for trial_id, key in list(self.final_live.items()):  # likewise: the final stage runs it
            self.finals_tried.discard(key)
            self.final_live.pop(trial_id)
        self.cfg = cfg

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_bytes(pickle.dumps(self.get_state()))

    def restore(self, checkpoint_path: str) -> None:
        self.set_state(pickle.loads(Path(checkpoint_path).read_bytes()))
