"""The private or undocumented APIs of Ray, MLflow, Optuna, argparse and torchvision the study relies on:
each fails here, loudly, when an upgrade changes it.

Where a public API does the job it is used instead.
"""

import inspect
import os

import ray


def test_a_trial_can_find_its_folder_on_the_studys_storage_filesystem():
    """study.trial: the resume state is written in the study's storage (or the trial's folder), on the storage's
    own filesystem."""
    from ray.train._internal import session
    from ray.train._internal.storage import StorageContext

    assert callable(session.get_storage)
    assert isinstance(StorageContext.trial_fs_path, property) and "storage_fs_path" in inspect.getsource(StorageContext)
    assert "storage_filesystem" in inspect.signature(
        StorageContext.__init__).parameters


def test_tune_controller_can_be_asked_to_save_its_state_now():
    """study.search.schedulers: the experiment state is saved before each new trial (SIGKILL loses nothing)."""
    from ray.tune.execution.tune_controller import TuneController

    parameters = inspect.signature(TuneController.checkpoint).parameters
    assert {"force", "wait"} <= set(parameters)


def test_a_trials_run_metadata_keeps_its_metric_windows_in_an_attribute_that_resets_its_json():
    """study.search.schedulers: an ended trial's windows of recent values are dropped from the snapshot."""
    from ray.tune.trainable.metadata import _TrainingRunMetadata

    metadata = _TrainingRunMetadata()
    metadata.update_metric("val_error", 0.5)
    cached = metadata.get_json_state()
    metadata.metric_n_steps = {}
    assert metadata.get_json_state() != cached and '"metric_n_steps": {}' in metadata.get_json_state()


def test_ray_counts_the_cpus_a_local_instance_will_offer():
    """study.startup.local_cpus: the container-aware CPU count Ray itself uses."""
    from ray._private.utils import get_num_cpus

    assert isinstance(get_num_cpus(), int) and get_num_cpus() >= 1


def test_the_local_ray_node_is_reachable_for_a_graceful_stop(ray_local):
    """study.signals: the local Ray node's processes are stopped in order on SIGTERM."""
    node = ray._private.worker._global_node
    assert node is not None and callable(node.kill_all_processes)
    assert "raylet" in node.all_processes
    assert {"check_alive", "allow_graceful", "wait"} <= set(inspect.signature(node.kill_all_processes).parameters)


def test_a_gcs_client_can_be_made_for_the_token_check():
    """study.cluster: a refused token is told apart from an unreachable cluster."""
    from ray._raylet import GcsClient
    from ray.exceptions import AuthenticationError

    assert callable(GcsClient) and issubclass(AuthenticationError, Exception)


def test_mlflow_keeps_its_global_tracking_uri_where_it_is_put_back():
    """study.tracking.trial_runs.log_final_model: the process-wide tracking URI is restored after logging a model."""
    from mlflow.tracking._tracking_service import utils

    assert hasattr(utils, "_tracking_uri")


def test_tune_trial_actors_get_no_runtime_env_once_its_lightning_variable_is_dropped():
    """study.cluster.let_trials_use_prestarted_workers: trial actors can start on Ray's pre-started workers."""
    from ray.tune.execution import class_cache

    from study.cluster import let_trials_use_prestarted_workers

    assert "DEFAULT_ENV_VARS" in inspect.getsource(class_cache._ActorClassCache.get)
    let_trials_use_prestarted_workers()
    assert "PL_DISABLE_FORK" not in class_cache.DEFAULT_ENV_VARS
    env = {k: v for k, v in class_cache.DEFAULT_ENV_VARS.items()}
    assert not env, env  # anything else Tune adds would bring the runtime env (and the slow start) back


def test_tunes_slow_step_threshold_is_a_class_attribute_read_at_import():
    """study.tune_runs: the 0.5 s slow-step warning's threshold, set where Ray may already have read it."""
    from ray.tune.utils.util import warn_if_slow

    import study.tune_runs  # noqa: F401 - sets it

    assert warn_if_slow("step").threshold == warn_if_slow.DEFAULT_THRESHOLD == float(os.environ["TUNE_WARN_THRESHOLD_S"])


def test_a_scheduler_reaches_the_tune_controller_behind_its_restricted_wrapper():
    """study.search.schedulers: Tune hands schedulers a wrapper (a DeveloperAPI) that keeps the controller in ``_tune_controller``
    (and warns on other attributes); the snapshot before each new trial is asked of the controller itself."""
    from ray.tune.execution.tune_controller import TrialRunnerWrapper, TuneController

    wrapper = TrialRunnerWrapper.__new__(TrialRunnerWrapper)
    wrapper._tune_controller = object.__new__(TuneController)
    assert "self._tune_controller = tune_controller" in inspect.getsource(TrialRunnerWrapper.__init__)
    assert isinstance(wrapper._tune_controller, TuneController)


def test_an_optuna_trial_handle_can_be_rebuilt_from_its_study_and_id():
    """study.search.record.trial_handle: after a driver restart, a running trial's ask-and-tell handle is rebuilt
    with ``optuna.Trial(study, trial_id)`` (public class, undocumented constructor): it reports and is told."""
    import optuna

    study = optuna.create_study()
    asked = study.ask()
    handle = optuna.Trial(study, asked._trial_id)
    assert list(inspect.signature(optuna.Trial.__init__).parameters) == ["self", "study", "trial_id"]
    handle.report(0.5, step=1)
    study.tell(handle, 0.4)
    assert study.trials[0].intermediate_values == {1: 0.5} and study.trials[0].value == 0.4


def test_argparse_lists_a_parsers_actions_with_their_flags():
    """study.launch.flag_names: which flag sets each config field, read from the parser's ``_actions``."""
    import argparse

    parser = argparse.ArgumentParser()
    action = parser.add_argument("--max-hours", dest="max_hours")
    assert action in parser._actions and action.option_strings == ["--max-hours"]


def test_torchvision_svhn_checks_its_files_through_an_overridable_method():
    """trainables.svhn: our SVHN reader overrides ``_check_integrity`` to accept files whose MD5 differs
    (recorded as ``published``) instead of refusing them."""
    from torchvision.datasets import SVHN

    assert "self._check_integrity()" in inspect.getsource(SVHN.__init__)
    assert callable(SVHN._check_integrity)
