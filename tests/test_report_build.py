"""The report against a small MLflow store of known runs, written through the real MLflow client."""

import numpy as np
import pytest
from matplotlib.image import imread
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from scipy import stats

from study.report.build import build_report, main
from study.report.data import ReportError, load_study

STUDY = "known-20260101-000000-abcd"


def new_store(root, name):
    """An empty MLflow store under root with one experiment and the study's parent run: (uri, client, exp, parent)."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment(name, artifact_location=(root / "artifacts").as_uri())
    parent = client.create_run(exp, tags={"study_id": STUDY, "stage": "study"}).info.run_id
    return uri, client, exp, parent


def add_run(client, exp, parent, cell, stage, seed, outcome="completed", trial=0, status="FINISHED", npz=None, **metrics):
    dataset, variant = cell.split("/")
    run = client.create_run(exp, tags={"mlflow.parentRunId": parent, "study_id": STUDY, "cell": cell, "stage": stage,
                                       "seed": str(seed), "outcome": outcome, "trial_id": f"{cell}-{stage}-{seed}-{trial}"})
    rid = run.info.run_id
    client.log_batch(rid, params=[], metrics=[Metric(k, v, 0, 3) for k, v in metrics.items()])
    for key, value in (("dataset", dataset), ("variant", variant), ("st_transform", "affine"), ("trial_number", trial)):
        client.log_param(rid, key, value)
    for epoch, value in enumerate([0.5, 0.3, metrics.get("val_error", 0.1)], start=1):
        client.log_metric(rid, "val_error", value, step=epoch)
    if "angle_slope" in metrics:  # the per-epoch telemetry: from the identity (0, 52°) to the end values
        for epoch, (slope, sd) in enumerate([(0.0, 52.0), (metrics["angle_slope"] / 2, 45.0),
                                             (metrics["angle_slope"], metrics["pose_sd"])], start=1):
            client.log_metric(rid, "val_angle_slope", slope, step=epoch)
            client.log_metric(rid, "val_pose_sd", sd, step=epoch)
    if npz is not None:
        path = npz.parent / f"{rid}.npz"
        np.savez(path, **npz_data(npz.name))
        client.log_artifact(rid, str(path), "figures")
        client.log_artifact(rid, str(path.rename(path.with_name("figures.npz"))), "figures")
    client.set_terminated(rid, status)
    return rid


def npz_data(kind):
    rng = np.random.default_rng(0)
    applied = rng.uniform(-90, 90, 400)
    predicted = -applied if kind == "canonical" else 0.01 * applied
    return {"angle_applied": applied, "angle_predicted": predicted, "example_inputs": rng.random((8, 4, 28, 28)),
            "example_st_outputs": rng.random((8, 4, 28, 28))}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    uri, client, exp, parent = new_store(root, "known")
    d = root / "npz"
    d.mkdir()
    for seed, err in enumerate([0.05, 0.06, 0.07]):
        add_run(client, exp, parent, "rotated-mnist/CNN", "final", seed, test_error=err, val_error=err,
                eq1_residual_rotation_d1=1.0 + seed, eq1_residual_translation_d1=0.0)
    for seed, (err, sd) in enumerate([(0.040, 50.0), (0.050, 52.0)]):
        add_run(client, exp, parent, "rotated-mnist/STN-C1", "final", seed, test_error=err, val_error=err, pose_sd=sd,
                angle_slope=-0.01, feature_misalignment=0.7, npz=d / "flat")
    for seed, err in enumerate([0.030, 0.034, 0.032]):
        add_run(client, exp, parent, "rotated-mnist/STN-SL1", "final", seed, test_error=err, val_error=err,
                pose_sd=30.0 + seed, pose_sd_v1=20.0 + seed, angle_slope=-0.9, feature_misalignment=0.2,
                npz=d / "canonical")
    # translated: no final stage; the val-best trial (val 0.1) is reported even though its test error is worse
    add_run(client, exp, parent, "translated-mnist/CNN", "search", 0, trial=0, val_error=0.2, test_error=0.10)
    add_run(client, exp, parent, "translated-mnist/CNN", "search", 0, trial=1, val_error=0.1, test_error=0.30)
    add_run(client, exp, parent, "translated-mnist/CNN", "search", 0, trial=2, outcome="pruned", val_error=0.05)
    add_run(client, exp, parent, "translated-mnist/STN-C1", "search", 0, outcome="diverged", status="FAILED")
    return uri, client, parent


@pytest.fixture(scope="module")
def built(store, tmp_path_factory):
    """The default report of the latest study, built once for the assertions below."""
    uri, _, _ = store
    return build_report(uri, None, str(tmp_path_factory.mktemp("report")), quiet=True, log_to_parent=False)


def report(store, tmp_path, **kw):
    uri, _, _ = store
    return build_report(uri, None, str(tmp_path), quiet=True, log_to_parent=False, **kw)


def test_accuracy_table_cells(built):
    out = built
    md = (out / "accuracy.md").read_text()
    assert "| **3.20 ± 0.20 (n=3)** |" in md  # STN-SL1 best in its column
    assert "6.00 ± 1.00 (n=3)" in md and "4.50 ± 0.71 (n=2)" in md
    assert "30.00 (n=1) †" in md  # val-best, not the test-best 10.00
    assert "10.00" not in md
    assert "— (no completed trial (1 diverged/failed))" in md
    assert "translated-mnist/STN-C1: 1 diverged" in md
    csv = (out / "accuracy.csv").read_text().splitlines()
    assert csv[0] == "variant,rotation,translation" and csv[1].startswith("CNN,6.00 ± 1.00 (n=3),30.00 (n=1) †")


def test_welch_comparison_matches_scipy(built, store, tmp_path):
    md = (built / "accuracy.md").read_text()
    t, p = stats.ttest_ind([3.0, 3.4, 3.2], [4.0, 5.0], equal_var=False)
    assert f"Welch t = {t:.2f}, p = {p:.3g}" in md and "(n = 3, 2)" in md
    assert "no detectable difference at n = 3, 2 (α = 0.05)" in md and "do not differ" not in md
    md = (report(store, tmp_path, pair=("STN-SL1", "CNN")) / "accuracy.md").read_text()
    assert "translation: STN-SL1" not in md  # no STN-SL1 cell on translated: no line rather than a fake one
    assert "STN-SL1 is significantly lower than CNN (α = 0.05)" in md  # p = 0.036


def test_alignment_table_and_dashes(built):
    md = (built / "alignment.md").read_text()
    assert "| CNN " in md and "— (no ST)" in md
    assert "**31.00 ± 1.00 (n=3)**" in md and "51.00 ± 1.41 (n=2)" in md
    assert "**-0.90 ± 0.00 (n=3)**" in md  # closest to −1 is best for the slope
    assert "pose SD, v1 formulas" in md and "21.00 ± 1.00 (n=3)" in md  # the 2001.05858 v1 version beside ours


def test_eq1_table_has_reference_rows(built):
    md = (built / "eq1.md").read_text()
    assert "rotated-mnist / CNN" in md and "2.000 ± 1.000 (n=3)" in md
    assert "rotated-mnist / random weights (reference)" in md


def test_figures_are_real_pngs(built):
    out = built
    fig3 = imread(out / "fig3_angle_plots_rotated.png")
    assert fig3.shape[:2] == (380, 720)  # two STN panels of 3.6 × 3.8 in at 100 dpi
    assert imread(out / "fig2_aligned_rotated.png").shape[0] > 100
    assert imread(out / "learning_curves.png").shape[1] >= 400
    assert imread(out / "alignment_vs_epoch_rotated.png").shape[1] >= 400


def test_alignment_vs_epoch_averages_the_reported_runs_of_each_st_row(store):
    from study.report.build import alignment_curves

    uri, client, _ = store
    curves = alignment_curves(client, load_study(client, None).runs, "rotated-mnist")
    assert set(curves) == {"STN-C1", "STN-SL1"}  # the CNN has no ST
    sl1 = curves["STN-SL1"].groupby("epoch")[["val_angle_slope", "val_pose_sd"]].mean()
    assert curves["STN-SL1"]["run_id"].nunique() == 3
    assert sl1.loc[1].tolist() == [0.0, 52.0] and sl1.loc[2].tolist() == [-0.45, 45.0]
    assert sl1.loc[3, "val_pose_sd"] == pytest.approx((30 + 31 + 32) / 3)
    assert curves["STN-C1"].groupby("epoch")["val_pose_sd"].mean().loc[3] == pytest.approx(51.0)


def test_html_page_is_self_contained(built):
    page = (built / "report.html").read_text()
    for title in ("Accuracy: test error", "Alignment:", "Eq. 1:"):
        assert title in page
    assert page.count("data:image/png;base64,") == 4 and "src='http" not in page
    assert (built / "accuracy.tex").read_text().count(r"\toprule") == 1


def test_report_is_logged_to_the_parent_run(store, tmp_path):
    uri, client, parent = store
    build_report(uri, STUDY, str(tmp_path), quiet=True)
    names = {a.path for a in client.list_artifacts(parent, "report")}
    assert {"report/accuracy.md", "report/report.html", "report/fig3_angle_plots_rotated.png"} <= names


def test_unknown_study_lists_the_ones_that_exist(store, capsys):
    uri, client, _ = store
    with pytest.raises(ReportError, match=f"unknown study 'nope': studies here: {STUDY}"):
        load_study(client, "nope")
    assert main(["--tracking-uri", uri, "--study", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and STUDY in err[0]


OLD, NEW = "aaaaaaaaaaaa", "bbbbbbbbbbbb"


def two_configurations(tmp_path, name):
    """A cell searched twice: trial 0 (val 0.20, hash OLD) and trial 1 (val 0.10, NEW), each retrained with seeds
    0 and 1 (test errors 50/52 % and 4/6 %)."""
    uri, client, exp, parent = new_store(tmp_path, name)
    for trial, (val, digest) in enumerate([(0.20, OLD), (0.10, NEW)]):
        rid = add_run(client, exp, parent, "rotated-mnist/CNN", "search", trial, trial=trial, val_error=val, test_error=val)
        client.set_tag(rid, "hparams_hash", digest)
    for trial, digest, errors in ((0, OLD, [0.50, 0.52]), (1, NEW, [0.04, 0.06])):
        for seed, err in enumerate(errors):
            rid = add_run(client, exp, parent, "rotated-mnist/CNN", "final", seed, trial=10 * trial + seed,
                          test_error=err, val_error=err)
            client.set_tag(rid, "hparams_hash", digest)
            client.set_tag(rid, "selected_from_trial", str(trial))
    return uri, client, exp, parent


def test_only_the_current_bests_finals_are_reported_and_superseded_ones_are_listed(tmp_path):
    """An extension found a better configuration: its finals stand for the cell; the old best's are listed."""
    uri, client, exp, parent = two_configurations(tmp_path, "extended")
    out = build_report(uri, None, str(tmp_path / "report"), quiet=True, log_to_parent=False)
    md = (out / "accuracy.md").read_text()
    assert "5.00 ± 1.41 (n=2)" in md  # the new best's two seeds only (n would be 4 with the old ones mixed in)
    assert "Superseded final runs" in md and "rotated-mnist/CNN: seeds 0, 1 of trial #0" in md


def test_the_report_reads_the_configuration_the_driver_chose_and_does_not_choose_again(tmp_path):
    """The parent run's ``best.<cell>`` tag (``StudyDriver.final_configs``) decides whose finals stand for a cell,
    even where the search runs alone would rank another first (here: the tag names the worse trial)."""
    import json

    from study.tracking.contract import BEST_TAG

    uri, client, exp, parent = two_configurations(tmp_path, "chosen")
    client.set_tag(parent, f"{BEST_TAG}rotated-mnist/CNN", json.dumps({"trial_number": 0, "val_error": 0.2,
                                                                       "hparams_hash": OLD}))
    md = (build_report(uri, None, str(tmp_path / "report"), quiet=True, log_to_parent=False) / "accuracy.md").read_text()
    assert "51.00 ± 1.41 (n=2)" in md and "5.00 ± 1.41" not in md
    assert "rotated-mnist/CNN: seeds 0, 1 of trial #1" in md  # the other configuration's finals: superseded


def test_figure_panels_that_cannot_be_fetched_are_named_with_the_reason(built):
    md = (built / "report.md").read_text()
    section = md.split("### Figure panels left out (their data could not be fetched)")[1]
    cnn = [line for line in section.splitlines() if line.startswith("- rotated-mnist / CNN (run ")]
    assert len(cnn) == 1 and cnn[0].split("): ", 1)[1]  # the run and why (no figures.npz was logged for it)
    assert "STN-SL1" not in section  # its figures were fetched and drawn
