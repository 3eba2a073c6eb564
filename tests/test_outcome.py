"""``trainables.outcome``: each outcome is the string that results, MLflow tags and the report read."""

import json

from trainables.outcome import Outcome


def test_outcomes_are_their_recorded_strings():
    assert [o.value for o in Outcome] == ["completed", "diverged", "stopped", "pruned", "failed", "running", "killed"]
    assert Outcome.COMPLETED == "completed" and f"{Outcome.DIVERGED}" == "diverged" and str(Outcome.FAILED) == "failed"
    assert json.dumps({"outcome": Outcome.PRUNED}) == '{"outcome": "pruned"}'
    assert Outcome("stopped") is Outcome.STOPPED and {"completed": 1}[Outcome.COMPLETED] == 1
