"""Per-cell search: one seeded Optuna study per cell inside a single Tune run.

``PerCellSearcher`` is a Tune ``Searcher`` that asks the cell's own Optuna study (``cfg.sampler``,
seeded per cell: ``study.search.samplers``) for hyper-parameters and tells it the outcome;
``study.search.schedulers.CellPruningScheduler`` asks that same cell's Optuna pruner whether to stop a
trial. So a trial is only ever compared with trials of its own cell: STN-C1's trials are never pruned
for being worse than STN-SL1's, and each cell's best trial trains to the end. Search trials train with
seeds of their own (``study.search.samplers.search_seed``), never one of the final runs' seeds.

A free slot goes to the cell that would end last (``study.search.slots``), so the study does not
end on one long trial running alone. Once a cell's search is over, its final runs (val-best configuration × seeds) are scheduled in the
same Tune run, into slots the other cells' search would leave idle (``overlap_final``); the final
stage then runs only what is left.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import optuna
from ray.tune.search import Searcher

from study.config import Range, SearchSpace, StudyConfig
from study.paths import StudyDir
from study.search.record import (
    flush_record,
    open_cell_study,
    open_storage,
    running_trials,
    state_counts,
    trial_handle,
)
from study.search.samplers import make_pruner, make_sampler, search_seed
from study.search.slots import SlotPriority
from study.state import read_deadline
from study.tracking.contract import Stage, hparams_hash
from study.trial_schema import cell_fields, constants, final_key
from trainables.outcome import Outcome

optuna.logging.set_verbosity(optuna.logging.WARNING)
METRIC, MODE = "val_error", "min"
FINAL_ENDS = (Outcome.COMPLETED, Outcome.DIVERGED)  # a final run that failed (errored) early is tried again by the final stage


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


def fixed_recipe(space: SearchSpace) -> dict:
    """The one configuration of a space without a choice (``trials_per_cell`` 0), drawn as every trial is."""
    return sample_hparams(optuna.trial.FixedTrial({"optimizer": space.optimizer[0],
                                                   "batch_size": space.batch_size[0]}), space)


class PerCellSearcher(SlotPriority, Searcher):
    """One Optuna study per cell until each has ``trials_per_cell`` trials, then the cells' final runs.

    The per-cell studies live in Optuna's storage (``study.search.record``), written at every ask, report
    and tell; what this object keeps besides is the bookkeeping of the running Tune run (which Tune
    trial is which Optuna trial, final runs in flight), saved with Tune's own searcher checkpoint.
    """

    def __init__(self, cfg: StudyConfig, directory: Path | None = None):
        super().__init__(metric=METRIC, mode=MODE)
        self.cfg = cfg
        self.directory = StudyDir.of(directory) if directory is not None else None  # deadline, Optuna journal
        self.cells = {cell.key: cell for cell in cfg.cells()}
        self.live: dict[str, tuple[str, int]] = {}  # Tune trial id -> (cell key, Optuna trial number)
        self.pruned: set[str] = set()
        self.final_live: dict[str, tuple] = {}  # Tune trial id -> final_key of a final run started early
        self.finals_tried: set[tuple] = set()  # final runs started by a search run (never twice there)
        self.finals_done: set[tuple] = set()  # final runs known to have completed
        self._open_record()

    def _open_record(self) -> None:
        """Open (or create) every cell's study in the study's Optuna storage."""
        self.storage = open_storage(self.directory, self.cfg.optuna_storage, writer=True)
        self.study_id = self.directory.name if self.directory is not None else ""

        def open_cell(key: str) -> optuna.Study:
            return open_cell_study(self.storage, self.study_id, key, lambda held: make_sampler(self.cfg, key, held),
                                   make_pruner(self.cfg))

        self.studies = {key: open_cell(key) for key in self.cells}
        self._trials: dict[str, optuna.Trial] = {}
        self._suggested_at: dict[str, float] = {}
        self._pace: dict[str, tuple[float, int]] = {}  # running search trial -> (its seconds per epoch, epochs done)
        self._orphans: list[tuple[str, int]] | None = None  # read from the record at the first suggestion

    def __getstate__(self) -> dict:
        """Tune pickles the searcher with its run: the Optuna objects stay out, the storage is reopened."""
        state = self.__dict__.copy()
        for name in ("storage", "studies", "_trials", "_suggested_at", "_pace", "_orphans"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._open_record()

    @property
    def total_trials(self) -> int:
        return self.cfg.trials_per_cell * len(self.cells)

    def started(self, key: str) -> int:
        """Trials of the cell so far (running ones included)."""
        return len(self.studies[key].get_trials(deepcopy=False))

    def seconds(self, key: str) -> list[float]:
        """The cell's ended search trials' ``trial_seconds``, as recorded with them."""
        return [float(t.user_attrs["trial_seconds"]) for t in self.studies[key].get_trials(deepcopy=False)
                if "trial_seconds" in t.user_attrs]

    def budget_exhausted(self) -> bool:
        deadline = read_deadline(self.directory)
        return deadline is not None and time.time() >= deadline

    def remaining(self) -> int:
        return sum(max(0, self.cfg.trials_per_cell - self.started(k)) for k in self.cells)

    @property
    def overlap_final(self) -> bool:
        return self.cfg.overlap_final

    def finals_bound(self) -> int:
        """At most this many final runs can start inside a search run (a cap on Tune's samples must never
        cut search trials: finals tried for an earlier best or seed do not count against it)."""
        return len(self.cells) * len(self.cfg.final_seeds) if self.overlap_final else 0

    # ---- which cell gets a free slot
    def _searching(self, key: str) -> bool:
        return any(cell == key for cell, _ in self.live.values())

    def final_configs(self, key: str, best_per_cell: dict | None = None) -> list[dict]:
        """The cell's final runs: its val-best configuration × the seeds (none before a trial completed)."""
        best = (best_per_cell if best_per_cell is not None else self.best_per_cell()).get(key)
        if best is None:
            return []
        selected = {} if best["trial_number"] is None else {"selected_from": best["trial_number"]}
        return [{**constants(self.cfg, Stage.FINAL), **cell_fields(self.cells[key]), "seed": seed, **selected,
                 "hparams_hash": hparams_hash(best["hparams"]), **best["hparams"]}
                for seed in self.cfg.final_seeds]

    def _finals_ready(self, key: str, best_per_cell: dict, started: int | None = None) -> list[dict]:
        started = self.started(key) if started is None else started
        if not self.overlap_final or started < self.cfg.trials_per_cell or self._searching(key):
            return []
        scheduled = self.finals_tried | self.finals_done
        return [c for c in self.final_configs(key, best_per_cell) if final_key(c) not in scheduled]

    def orphans(self) -> list[tuple[str, int]]:
        """Search trials the record holds as running that no trial of this Tune run is: started after the last
        snapshot Tune saved before its driver was stopped. They are suggested again first, each under its
        own number, hyper-parameters and seed, and continue from their resume state (``trial_key``): Tune
        need not save its whole state before every new trial (docs/performance.md)."""
        if self._orphans is None:
            known = set(self.live.values())
            self._orphans = [(key, t.number) for key, study in self.studies.items()
                             for t in running_trials(study) if (key, t.number) not in known]
        return self._orphans

    def _suggest_again(self, trial_id: str) -> dict:
        key, number = self.orphans().pop(0)
        attrs = next(t.user_attrs for t in running_trials(self.studies[key]) if t.number == number)
        trial = trial_handle(self.storage, self.studies[key], number)
        trial.set_user_attr("tune_trial_id", trial_id)
        self.live[trial_id] = (key, number)
        self._trials[trial_id] = trial
        self._suggested_at[trial_id] = time.time()
        return {**constants(self.cfg, Stage.SEARCH), **cell_fields(self.cells[key]), "seed": attrs["seed"],
                "trial_number": number, **attrs["hparams"]}

    def suggest(self, trial_id: str):
        if self.budget_exhausted():  # time budget: schedule nothing new, finish cleanly
            return Searcher.FINISHED
        if self.orphans():
            return self._suggest_again(trial_id)
        # each cell's trials are read once per suggestion (each read lists all of them): a suggestion's cost
        # grows with the study's trials, never with their square
        best = self.best_per_cell()
        started = {key: self.started(key) for key in self.cells}
        measured = {key: self.seconds(key) for key in self.cells}
        ready = {key: self._finals_ready(key, best, started[key]) for key in self.cells}
        candidates = [k for k in self.cells if started[k] < self.cfg.trials_per_cell or ready[k]]
        if not candidates:  # wait while a cell's search may still make final runs ready, else done
            waiting = self.overlap_final and self.cfg.final_seeds and self.live
            return None if waiting else Searcher.FINISHED
        # the cell that would end last first; on a tie the most work left, then the fewest trials (round-robin),
        # then config order
        key = max(candidates, key=lambda k: (self.time_to_finish(k, ready[k], measured, started[k]),
                                             self.remaining_work(k, ready[k], measured, started[k]), -started[k]))
        self._suggested_at[trial_id] = time.time()
        if ready[key]:
            config = ready[key][0]
            self.final_live[trial_id] = final_key(config)
            self.finals_tried.add(final_key(config))
            return config
        cell, study = self.cells[key], self.studies[key]
        trial = study.ask()
        hparams = sample_hparams(trial, self.cfg.space_for(cell.dataset, cell.variant))
        trial.set_user_attr("hparams", hparams)
        trial.set_user_attr("tune_trial_id", trial_id)
        seed = search_seed(self.cfg.seed, key, trial.number)  # never a final seed: see study.search.samplers
        trial.set_user_attr("seed", seed)
        self.live[trial_id] = (key, trial.number)
        self._trials[trial_id] = trial
        return {**constants(self.cfg, Stage.SEARCH), **cell_fields(cell), "seed": seed,
                "trial_number": trial.number, **hparams}

    def _trial(self, trial_id: str) -> optuna.Trial | None:
        if trial_id not in self.live:
            return None
        if trial_id not in self._trials:  # after a restore: rebuild the ask-and-tell handle
            key, number = self.live[trial_id]
            self._trials[trial_id] = trial_handle(self.storage, self.studies[key], number)
        return self._trials[trial_id]

    def should_prune(self, trial_id: str, step: int, value: float, decide: bool = True) -> bool:
        """Record an epoch's val_error in the trial's own cell study and (``decide``) ask its pruner."""
        trial = self._trial(trial_id)
        if trial is None:
            return False
        trial.report(value, step)
        return decide and trial.should_prune()

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Project a running search trial's time from its epochs so far (Tune's ``time_total_s`` leaves out
        the worker's start); the intermediate values reach Optuna through the scheduler's should_prune."""
        epoch, seconds = result.get("epoch"), result.get("time_total_s")
        if trial_id in self.live and epoch and seconds:
            self._pace[trial_id] = (float(seconds) / float(epoch), int(epoch))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self._suggested_at.pop(trial_id, None)
        self._pace.pop(trial_id, None)
        outcome = (result or {}).get("outcome")
        if trial_id in self.final_live:
            key = self.final_live.pop(trial_id)
            if not error and outcome in FINAL_ENDS:
                self.finals_done.add(key)
            return
        trial = self._trial(trial_id)
        if trial is None:
            return
        key, number = self.live.pop(trial_id)
        self._trials.pop(trial_id, None)
        study = self.studies[key]
        if study.get_trials(deepcopy=False)[number].state.is_finished():  # not ``study.trials``: a deep copy of all
            return  # told before the driver died, rerun by Tune from an older snapshot: the record stands
        if (result or {}).get("trial_seconds"):
            trial.set_user_attr("trial_seconds", float(result["trial_seconds"]))
        if error or outcome in (Outcome.DIVERGED, Outcome.FAILED):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        elif trial_id in self.pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif outcome == Outcome.COMPLETED and result.get(METRIC) is not None:
            study.tell(trial, result[METRIC])
        else:  # stopped without a final result (e.g. the study's time budget ran out)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        flush_record(self.directory)  # an ending is never lost to a killed driver (one wait per trial)

    def best_per_cell(self) -> dict[str, dict]:
        """Each cell's ``best_trial`` in Optuna: the completed trial with the lowest final val_error (test error is
        never looked at). The driver records it on the parent run; the report reads that record.

        Without a search (``trials_per_cell`` 0) every cell's best is the config's fixed recipe.
        """
        if not self.cfg.trials_per_cell:
            return {key: {"hparams": fixed_recipe(self.cfg.space_for(cell.dataset, cell.variant)), "val_error": None,
                          "trial_number": None, "tune_trial_id": None} for key, cell in self.cells.items()}
        best = {}
        for key, study in self.studies.items():
            if study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
                winner = study.best_trial  # Optuna's own choice: the lowest value, the earliest trial of a tie
                best[key] = {"hparams": winner.user_attrs["hparams"], "val_error": winner.value,
                             "trial_number": winner.number, "tune_trial_id": winner.user_attrs.get("tune_trial_id")}
        return best

    def counts(self) -> dict[str, dict[str, int]]:
        return {key: state_counts(study) for key, study in self.studies.items()}

    def in_flight(self) -> bool:
        """A search trial or early final run that a Tune run started and did not end (it was interrupted)."""
        return bool(self.final_live) or any(running_trials(study) for study in self.studies.values())

    # ---- Tune checkpointing of the running Tune run's bookkeeping (Tuner.restore); the trials are in Optuna
    def get_state(self) -> dict:
        return {"live": {t: list(v) for t, v in self.live.items()}, "pruned": sorted(self.pruned),
                "final_live": {t: _jsonable(k) for t, k in self.final_live.items()},
                "finals_tried": [_jsonable(k) for k in self.finals_tried],
                "finals_done": [_jsonable(k) for k in self.finals_done]}

    def set_state(self, state: dict) -> None:
        self.live = {t: (v[0], int(v[1])) for t, v in state["live"].items()}
        self.pruned = set(state["pruned"])
        self.final_live = {t: _key(k) for t, k in state["final_live"].items()}
        self.finals_tried = {_key(k) for k in state["finals_tried"]}
        self.finals_done = {_key(k) for k in state["finals_done"]}
        self._trials, self._suggested_at, self._pace, self._orphans = {}, {}, {}, None

    def start_new_run(self) -> None:
        """Before a new Tune run of the study: search trials an earlier run started and never ended are its
        first suggestions (``orphans``), each continuing from its resume state."""
        self.live, self.final_live, self.pruned = {}, {}, set()
        self._orphans = None

    def save(self, checkpoint_path: str) -> None:
        """Tune saves its experiment state with this: the record first holds every trial that state names."""
        flush_record(self.directory)
        Path(checkpoint_path).write_text(json.dumps(self.get_state()))

    def restore(self, checkpoint_path: str) -> None:
        self.set_state(json.loads(Path(checkpoint_path).read_text()))


def _jsonable(key: tuple) -> list:
    return [key[0], key[1], list(key[2])]


def _key(value) -> tuple:
    return (value[0], value[1], tuple(value[2]))
