"""Which cell gets a free slot: each cell's trial time, its work left, and the least time it still needs.

The searcher asks this at every suggestion. Trial times come from the record (ended trials'
``trial_seconds``) and, before a cell's first trial ends, from its running trials' pace (Tune's
``time_total_s`` per epoch), so a slow cell is known as slow from its first epochs on.
"""

from __future__ import annotations

import time


class SlotPriority:
    """Mixed into ``PerCellSearcher``, whose state it reads: ``cfg``, ``cells``, ``live`` (Tune trial id ->
    (cell, Optuna number)), ``_pace`` (running search trial -> (seconds per epoch, epochs done)),
    ``_suggested_at``, ``started(cell)`` and ``seconds(cell)``."""

    def _trial_estimate(self, key: str, measured: dict | None = None) -> float:
        """A cell's mean ended-trial time; before one ended, its running trials' projected times (known from
        their first epoch on, so a slow cell is seen as slow long before its first trial ends); before
        that, the longest time known of any cell (or elapsed)."""
        measured = measured if measured is not None else {k: self.seconds(k) for k in self.cells}
        if measured[key]:
            return sum(measured[key]) / len(measured[key])
        projected = {t: per_epoch * self.cfg.epochs for t, (per_epoch, _) in self._pace.items() if t in self.live}
        own = [p for t, p in projected.items() if self.live[t][0] == key]
        if own:
            return sum(own) / len(own)
        known = [sum(s) / len(s) for s in measured.values() if s] + list(projected.values())
        if not known:
            return 1.0  # nothing measured yet: every cell alike (round-robin)
        now = time.time()
        elapsed = [now - self._suggested_at[t] for t, (cell, _) in self.live.items()
                   if cell == key and t in self._suggested_at]
        return max(known + elapsed)

    def _left(self, key: str) -> dict[str, float]:
        """What each of the cell's running search trials has left, from its pace (none measured yet: absent)."""
        return {t: per_epoch * max(0, self.cfg.epochs - done) for t, (per_epoch, done) in self._pace.items()
                if self.live.get(t, ("",))[0] == key}

    def remaining_work(self, key: str, finals_ready: list[dict], measured: dict | None = None,
                       started: int | None = None) -> float:
        """The cell's work not yet done: trials still to start (and its final runs) at its trial estimate, plus
        what its running search trials have left. The latter matters because a cell's final runs wait for
        its last search trial: a cell whose search is still running is further from its end than its
        unstarted trials alone say."""
        estimate = self._trial_estimate(key, measured)
        search_left = max(0, self.cfg.trials_per_cell - (self.started(key) if started is None else started))
        finals_left = len(finals_ready) if search_left == 0 else len(self.cfg.final_seeds) * self.overlap_final
        return sum(self._left(key).values()) + estimate * (search_left + finals_left * self._final_share)

    @property
    def _final_share(self) -> float:
        """A final run's length in search trials."""
        return (self.cfg.final_epochs or self.cfg.epochs) / self.cfg.epochs

    def time_to_finish(self, key: str, finals_ready: list[dict], measured: dict | None = None,
                       started: int | None = None) -> float:
        """The least time the cell still needs, at its estimates: its work left spread over every slot, or its chain,
        whichever is longer. The chain is the longest of its search trials running or still to start, then
        one final run (they wait for the search, and run side by side): work that cannot be split. A free
        slot goes to the cell that would end last, so a long final run ready now is not left for the end
        behind a cell with more, but shorter, trials (docs/performance.md)."""
        estimate = self._trial_estimate(key, measured)
        started = self.started(key) if started is None else started
        left = self._left(key)
        running = [left.get(t, estimate) for t, (cell, _) in self.live.items() if cell == key]
        search = max(running + [estimate] * (started < self.cfg.trials_per_cell), default=0.0)
        finals = bool(finals_ready) if not search else bool(self.cfg.final_seeds) and self.overlap_final
        chain = search + estimate * self._final_share * finals
        slots = self.cfg.max_concurrent_trials
        return max(self.remaining_work(key, finals_ready, measured, started) / slots, chain)
