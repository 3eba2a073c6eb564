"""``study.api``: ``run`` a study, then ``resume`` it with more trials per cell and more seeds — only the extra
trials and final runs run (real Ray, Optuna and MLflow; the load generator as the trial)."""

from mlflow.tracking import MlflowClient

from study import api
from study.bench.driver import load_trial
from study.config import load
from study.report.data import load_study
from study.state import StudyState, study_dir


def test_run_then_an_extension_runs_only_what_is_new(ray_local, tmp_path):
    uri, storage = f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "tune")
    cfg = load("smoke", overrides={"name": "extended", "variants": ["CNN"], "trials_per_cell": 2, "n_startup_trials": 2,
                                   "epochs": 4, "final_seeds": [0], "tracking_uri": uri, "storage_path": storage})
    study_id = api.run(cfg, quiet=True, report=False, trainable=load_trial)
    assert api.resume(study_id, {"trials_per_cell": 4, "final_seeds": [0, 1]}, storage, quiet=True, report=False,
                      trainable=load_trial) == study_id
    runs = load_study(MlflowClient(uri), study_id).runs
    search, final = runs[runs["stage"] == "search"], runs[runs["stage"] == "final"]
    assert sorted(search["param.trial_number"].astype(int)) == [0, 1, 2, 3]  # two more, none repeated
    completed = final[final["outcome"] == "completed"]
    # seed 1 is new; seed 0 runs again only if the extension found a better configuration
    chosen = {h for h in runs["chosen_hash"].dropna()}
    assert set(completed[completed["hparams_hash"].isin(chosen)]["seed"]) == {"0", "1"}
    assert len(completed[completed["hparams_hash"].isin(chosen)]) == 2
    state = StudyState.load(study_dir(storage, study_id))
    assert state.status == "finished" and len(state.search_runs) == 2
