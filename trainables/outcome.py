"""How a trial ended: the one vocabulary of the loop, the Tune trainable, the search record, MLflow and the report.

A ``StrEnum``: each member *is* its string, so results, MLflow tags and report tables keep reading
``"completed"`` while the code names each outcome once.
"""

from enum import StrEnum


class Outcome(StrEnum):
    COMPLETED = "completed"  # trained to its last epoch and evaluated
    DIVERGED = "diverged"  # the loss became NaN/Inf: a property of its configuration, not retried
    STOPPED = "stopped"  # ended early by its caller (the CLI's Ctrl-C or SIGTERM, an ``on_epoch`` stop)
    PRUNED = "pruned"  # the study's scheduler ended it early: not worth training on
    FAILED = "failed"  # an error ended it (a crash, a lost worker): retried where the study can
    RUNNING = "running"  # not ended yet: what its MLflow run says while it trains
    KILLED = "killed"  # the study stopped (Ctrl-C, SIGTERM, its time budget) while it trained: resumed by --resume
