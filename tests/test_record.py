"""Optuna's own storage is the record of every search trial: readable by Optuna alone, never pickled,
and consistent when a driver dies between Optuna and Tune."""

import pickle
import pickletools

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from study.config import load
from study.search.record import JOURNAL_FILE, cell_study_name, close_record, study_counts
from study.search.searcher import PerCellSearcher
from study.search.segments import SegmentedJournalBackend

STUDY = "rec-20260101-000000-abcd"


def config(**kw):
    base = {"variants": ["CNN", "STN-C1"], "trials_per_cell": 3, "epochs": 4, "pruner": "asha", "grace_period": 1,
            "reduction_factor": 2, "final_seeds": []}
    return load("smoke", overrides={**base, **kw})


def run_trial(searcher, trial_id, values, seconds=7.0):
    """What Tune and the pruning scheduler do with one search trial."""
    for step, value in enumerate(values, start=1):
        if searcher.should_prune(trial_id, step, value):
            searcher.pruned.add(trial_id)
            searcher.on_trial_complete(trial_id, {"val_error": value, "trial_seconds": seconds})
            return
    searcher.on_trial_complete(trial_id, {"val_error": values[-1], "outcome": "completed", "trial_seconds": seconds})


def test_every_search_trial_is_in_optunas_own_journal(tmp_path):
    searcher = PerCellSearcher(config(), tmp_path / STUDY)
    suggestions = {t: searcher.suggest(t) for t in ("a", "b", "c", "d")}
    cnn = [t for t, s in suggestions.items() if s["variant"] == "CNN"]
    run_trial(searcher, cnn[0], [0.5, 0.4, 0.3])
    run_trial(searcher, cnn[1], [0.9, 0.9, 0.9])  # worse than the cell's best at step 1: pruned
    # a separate reader that knows nothing of stn-study: plain Optuna on the journal file
    storage = JournalStorage(JournalFileBackend(str(tmp_path / STUDY / JOURNAL_FILE)))
    names = optuna.get_all_study_names(storage)
    assert sorted(names) == [cell_study_name(STUDY, "rotated-mnist/CNN"), cell_study_name(STUDY, "rotated-mnist/STN-C1")]
    study = optuna.load_study(study_name=f"{STUDY}/rotated-mnist/CNN", storage=storage)
    assert study.user_attrs == {"cell": "rotated-mnist/CNN", "study_id": STUDY}
    done, pruned = study.trials[0], study.trials[1]
    assert done.state == TrialState.COMPLETE and done.value == 0.3
    assert done.intermediate_values == {1: 0.5, 2: 0.4, 3: 0.3}
    assert done.params["lr"] == suggestions[cnn[0]]["lr"] == done.user_attrs["hparams"]["lr"]
    assert done.user_attrs["seed"] == suggestions[cnn[0]]["seed"] and done.user_attrs["tune_trial_id"] == cnn[0]
    assert done.user_attrs["trial_seconds"] == 7.0
    assert pruned.state == TrialState.PRUNED and pruned.intermediate_values == {1: 0.9}
    assert study_counts(storage, STUDY)["rotated-mnist/STN-C1"] == {"running": 2, "complete": 0, "pruned": 0, "fail": 0}


def test_the_searcher_pickles_without_optuna_objects(tmp_path):
    searcher = PerCellSearcher(config(), tmp_path / STUDY)
    searcher.suggest("a")
    blob = pickle.dumps(searcher)  # what Tune keeps in its experiment directory
    modules = {arg.split()[0] for op, arg, _ in pickletools.genops(blob) if op.name in ("GLOBAL", "SHORT_BINUNICODE")
               and isinstance(arg, str) and arg.split(".")[0] in ("optuna", "study", "pydantic")}
    assert "study.search.searcher" in modules and not any(m.startswith("optuna") for m in modules)
    again = pickle.loads(blob)
    assert again.studies["rotated-mnist/CNN"].trials[0].state == TrialState.RUNNING  # reopened from the journal


def test_a_trial_no_tune_run_continued_is_suggested_again_under_its_own_number_seed_and_configuration(tmp_path):
    first = PerCellSearcher(config(variants=["CNN"]), tmp_path / STUDY)
    first.suggest("a")
    run_trial(first, "a", [0.5])
    asked = first.suggest("b")  # asked for, then the driver is SIGKILLed before Tune saved any state with it
    second = PerCellSearcher(config(variants=["CNN"]), tmp_path / STUDY)
    second.start_new_run()
    assert second.orphans() == [("rotated-mnist/CNN", 1)] and second.remaining() == 1
    again = second.suggest("b2")
    assert again == asked  # the same trial: number, seed, hyper-parameters (so the same trial key)
    assert second.orphans() == [] and second.live["b2"] == ("rotated-mnist/CNN", 1)
    run_trial(second, "b2", [0.4, 0.3])
    trial = second.studies["rotated-mnist/CNN"].trials[1]
    assert trial.state == TrialState.COMPLETE and trial.value == 0.3 and trial.user_attrs["tune_trial_id"] == "b2"
    assert second.counts()["rotated-mnist/CNN"] == {"running": 0, "complete": 2, "pruned": 0, "fail": 0}
    assert second.suggest("c")["trial_number"] == 2


def test_a_restored_run_suggests_again_only_what_its_snapshot_did_not_know(tmp_path):
    searcher = PerCellSearcher(config(variants=["CNN"], trials_per_cell=4), tmp_path / STUDY)
    searcher.suggest("a")
    searcher.save(str(tmp_path / "snapshot"))  # Tune's last snapshot knows "a" only
    late = searcher.suggest("b")
    restored = pickle.loads(pickle.dumps(searcher))
    restored.restore(str(tmp_path / "snapshot"))  # Tune continues "a" itself
    assert restored.orphans() == [("rotated-mnist/CNN", 1)]
    assert restored.suggest("b2") == late and restored.suggest("c")["trial_number"] == 2


def test_a_trial_told_before_the_driver_died_keeps_its_record(tmp_path):
    searcher = PerCellSearcher(config(variants=["CNN"]), tmp_path / STUDY)
    searcher.suggest("a")
    searcher.save(str(tmp_path / "snapshot"))  # Tune's last snapshot: "a" still running
    run_trial(searcher, "a", [0.3])
    restored = pickle.loads(pickle.dumps(searcher))
    restored.restore(str(tmp_path / "snapshot"))  # Tune reruns "a" from the older snapshot
    restored.on_trial_complete("a", {"val_error": 0.9, "outcome": "completed"})
    assert [t.value for t in restored.studies["rotated-mnist/CNN"].trials] == [0.3]


def test_a_resumed_search_does_not_replay_its_first_draws(tmp_path):
    cfg = config(variants=["CNN"], sampler="random", trials_per_cell=4)
    first = PerCellSearcher(cfg, tmp_path / STUDY)
    drawn = []
    for t in ("a", "b"):
        drawn.append(first.suggest(t)["lr"])
        run_trial(first, t, [0.5])
    resumed = PerCellSearcher(cfg, tmp_path / STUDY)
    later = [resumed.suggest(t)["lr"] for t in ("c", "d")]
    assert not set(later) & set(drawn)
    again = PerCellSearcher(cfg, tmp_path / "other-study")  # and a new study repeats the first session exactly
    assert [again.suggest(t)["lr"] for t in ("a",)] == drawn[:1]


def test_a_database_url_holds_the_record_instead(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    searcher = PerCellSearcher(config(variants=["CNN"], optuna_storage=url), tmp_path / STUDY)
    searcher.suggest("a")
    run_trial(searcher, "a", [0.4])
    assert not (tmp_path / STUDY / JOURNAL_FILE).exists()
    study = optuna.load_study(study_name=f"{STUDY}/rotated-mnist/CNN", storage=url)
    assert study.best_value == 0.4


def test_a_storage_that_is_not_a_database_url_is_refused():
    from study.config import ConfigError

    with pytest.raises(ConfigError, match="optuna_storage: must be a database URL"):
        config(optuna_storage="/tmp/optuna.journal")
    with pytest.raises(ConfigError, match="optuna_storage: must not hold a password .* set PGPASSWORD"):
        config(optuna_storage="postgresql://mlflow:pw@db:5432/optuna")


def test_a_postgres_database_holds_the_record_and_a_resumed_driver_reads_it(postgres, tmp_path, monkeypatch):
    """The compose stack's way: a database of its own on the stack's Postgres, the password from PGPASSWORD."""
    import os

    postgres._as_postgres(f"{postgres.BIN}/createdb", "-h", "127.0.0.1", "-p", str(postgres.port), "-U", "mlflow",
                          "optuna_record", env={**os.environ, "PGPASSWORD": postgres.password})
    monkeypatch.setenv("PGPASSWORD", postgres.password)
    url = f"postgresql://mlflow@127.0.0.1:{postgres.port}/optuna_record"
    searcher = PerCellSearcher(config(variants=["CNN"], optuna_storage=url), tmp_path / STUDY)
    searcher.suggest("a")
    run_trial(searcher, "a", [0.5, 0.4])
    searcher.suggest("b")  # running when the driver dies
    resumed = PerCellSearcher(config(variants=["CNN"], optuna_storage=url), tmp_path / STUDY)
    resumed.start_new_run()
    study = optuna.load_study(study_name=f"{STUDY}/rotated-mnist/CNN", storage=url)
    assert study.best_value == 0.4 and study.best_trial.intermediate_values == {1: 0.5, 2: 0.4}
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.RUNNING]
    assert resumed.orphans() == [("rotated-mnist/CNN", 1)]  # suggested again first
    assert not (tmp_path / STUDY / JOURNAL_FILE).exists()


def test_on_s3_what_tune_saves_and_every_ended_trial_are_in_the_bucket_before_the_driver_goes_on(s3, tmp_path,
                                                                                                 monkeypatch):
    """The journal is written behind the driver's loop; with each real PUT slowed to 0.3 s, a reader that
    opens the bucket right after the searcher's save (Tune's snapshot) or a trial's end still sees it all."""
    import time

    from study.paths import StudyDir

    put = StudyDir.create_if_absent
    monkeypatch.setattr(StudyDir, "create_if_absent", lambda self, name, data: time.sleep(0.3) or put(self, name, data))
    directory = StudyDir(f"s3://{s3.bucket}/flush-{tmp_path.name}", STUDY)
    searcher = PerCellSearcher(config(variants=["CNN"]), directory)
    searcher.suggest("a")
    searcher.suggest("b")
    searcher.save(str(tmp_path / "searcher-state.json"))

    def reader():
        return optuna.load_study(study_name=f"{STUDY}/rotated-mnist/CNN", storage=JournalStorage(
            SegmentedJournalBackend(directory, JOURNAL_FILE)))

    assert [t.user_attrs["tune_trial_id"] for t in reader().trials] == ["a", "b"]
    run_trial(searcher, "a", [0.5, 0.4, 0.3, 0.2])
    assert reader().trials[0].state == TrialState.COMPLETE and reader().trials[0].intermediate_values[4] == 0.2
    close_record(directory)  # the driver's end: its writer thread stops
