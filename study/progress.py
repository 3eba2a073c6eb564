"""A compact live progress display: per cell running / done / pruned / failed, best so far, ETA."""

from __future__ import annotations

import sys
import time

from ray import tune

from study.tracking.contract import Stage
from trainables.outcome import Outcome


def _fmt_seconds(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress(tune.Callback):
    """Prints one block every ``every`` seconds and whenever a trial ends."""

    def __init__(self, stage: str, cells: list[str], total_trials: int, epochs_per_trial: int,
                 every: float = 15.0, stream=None):
        self.stage, self.cells, self.total, self.epochs = stage, cells, total_trials, epochs_per_trial
        self.every, self.stream = every, stream or sys.stdout
        self.started = time.monotonic()
        self.last_print = 0.0
        self.epochs_done: dict[str, int] = {}
        self.outcomes: dict[str, str] = {}
        self.best: dict[str, float] = {}
        self.cell_of: dict[str, str] = {}

    def __getstate__(self):
        return {**self.__dict__, "stream": None}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.stream = sys.stdout

    def on_trial_start(self, iteration, trials, trial, **info):
        config = {**trial.config, **trial.config.get("spec", {})}
        early_final = config.get("stage") == Stage.FINAL and self.stage != Stage.FINAL  # started in a search slot
        self.cell_of[trial.trial_id] = f"{config['cell']} final" if early_final else config["cell"]

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "epoch" in result and not result.get("outcome"):
            self.epochs_done[trial.trial_id] = int(result["epoch"])
        if result.get("outcome") == Outcome.COMPLETED and "val_error" in result:
            cell = self.cell_of.get(trial.trial_id, "?")
            self.best[cell] = min(self.best.get(cell, 1.0), float(result["val_error"]))

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        self.outcomes[trial.trial_id] = last.get("outcome") or Outcome.PRUNED
        self.epochs_done[trial.trial_id] = self.epochs  # a pruned trial frees its remaining budget
        self.print_block()

    def on_trial_error(self, iteration, trials, trial, **info):
        self.outcomes[trial.trial_id] = Outcome.FAILED
        self.epochs_done[trial.trial_id] = self.epochs
        self.print_block()

    def on_step_end(self, iteration, trials, **info):
        if time.monotonic() - self.last_print >= self.every:
            self.print_block()

    def eta(self) -> float | None:
        done = sum(self.epochs_done.values())
        if done == 0:
            return None
        elapsed = time.monotonic() - self.started
        return elapsed / done * (self.total * self.epochs - done)

    def print_block(self) -> None:
        self.last_print = time.monotonic()
        elapsed = time.monotonic() - self.started
        eta = self.eta()
        finished = len(self.outcomes)
        lines = [f"[{self.stage}] {finished}/{self.total} trials done  elapsed {_fmt_seconds(elapsed)}  "
                 f"ETA {'?' if eta is None else _fmt_seconds(eta)}"]
        for cell in self.cells + sorted(set(self.cell_of.values()) - set(self.cells)):
            ids = [t for t, c in self.cell_of.items() if c == cell]
            states = [self.outcomes.get(t, Outcome.RUNNING) for t in ids]
            best = self.best.get(cell)
            lines.append(f"  {cell:<32} running {states.count('running')}  done {states.count(Outcome.COMPLETED)}  "
                         f"pruned {states.count(Outcome.PRUNED)}  failed {states.count(Outcome.FAILED) + states.count(Outcome.DIVERGED)}"
                         f"  best val {'—' if best is None else f'{100 * best:.1f}%'}")
        print("\n".join(lines), file=self.stream, flush=True)
