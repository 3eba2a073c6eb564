"""The depth table and the error-vs-depth figure against a small MLflow store of known deep-dataset runs."""

import pytest
from matplotlib.image import imread
from test_report_build import add_run, new_store

from study.report.build import build_report

# test errors per plankton cell: (stage, values); the depth table must show their mean ± std (ddof 1) in %
PLANKTON = {
    "CNN": ("final", [0.50, 0.52]),
    "STN-C0": ("final", [0.40, 0.44]),
    "STN-C2": ("final", [0.30, 0.34]),
    "STN-SL2": ("final", [0.20, 0.24, 0.22]),
    "STN-SL4": ("final", [0.18]),
    "STN-DL2": ("final", [0.25, 0.27, 0.29]),
    "STN-SL2x2": ("final", [0.23, 0.25]),
}
# rotation consistency (°) of the plankton STNs' final runs: the alignment table shows mean ± std, lowest in bold
CONSISTENCY = {"STN-C2": [40.0, 44.0], "STN-SL2": [10.0, 12.0, 14.0]}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("depth")
    uri, client, exp, parent = new_store(root, "deep")
    for variant, (stage, errors) in PLANKTON.items():
        for seed, err in enumerate(errors):
            turned = {"rotation_consistency_deg": CONSISTENCY[variant][seed]} if variant in CONSISTENCY else {}
            add_run(client, exp, parent, f"plankton/{variant}", stage, seed, test_error=err, val_error=err, **turned)
    # STN-C4 has no final stage: its val-best search trial (val 0.1, test 0.36) stands for it, marked †
    add_run(client, exp, parent, "plankton/STN-C4", "search", 0, trial=0, val_error=0.2, test_error=0.31)
    add_run(client, exp, parent, "plankton/STN-C4", "search", 0, trial=1, val_error=0.1, test_error=0.36)
    add_run(client, exp, parent, "plankton/STN-DL4", "search", 0, outcome="diverged", status="FAILED")
    for seed, err in enumerate([0.10, 0.14]):
        add_run(client, exp, parent, "svhn/STN-SL2", "final", seed, test_error=err, val_error=err)
        add_run(client, exp, parent, "svhn/CNN", "final", seed, test_error=err + 0.02, val_error=err)
    add_run(client, exp, parent, "rotated-mnist/STN-SL1", "final", 0, test_error=0.03, val_error=0.03, pose_sd=30.0,
            angle_slope=-0.9)
    return build_report(uri, None, str(root / "report"), quiet=True, log_to_parent=False)


def test_depth_table_cells_are_mean_and_std_over_seeds(built):
    csv = (built / "depth_plankton.csv").read_text().splitlines()
    assert csv[0] == "sharing,X=0,X=2,X=4"
    assert csv[1:] == ["C,42.00 ± 2.83 (n=2),32.00 ± 2.83 (n=2),36.00 (n=1) †",
                       "SL,—,22.00 ± 2.00 (n=3),18.00 (n=1)",
                       "DL,—,27.00 ± 2.00 (n=3),— (no completed trial (1 diverged/failed))",
                       "SLx2,—,24.00 ± 1.41 (n=2),—"]
    md = (built / "depth_plankton.md").read_text()
    assert "**22.00 ± 2.00 (n=3)**" in md and "**18.00 (n=1)**" in md and "**42.00 ± 2.83 (n=2)**" in md
    assert "CNN (no ST): 51.00 ± 1.41 (n=2)" in md and "plankton/STN-DL4: 1 diverged" in md
    assert "† no final stage" in md
    assert (built / "depth_plankton.tex").read_text().count(r"\toprule") == 1
    assert "X=2" in (built / "depth_plankton.html").read_text()
    assert (built / "depth_svhn.csv").read_text().splitlines() == ["sharing,X=2", "SL,12.00 ± 2.83 (n=2)"]


def test_deep_datasets_have_accuracy_columns_and_no_pose_columns(built):
    header = (built / "accuracy.csv").read_text().splitlines()[0]
    assert header == "variant,rotation,svhn,plankton"
    alignment = (built / "alignment.csv").read_text().splitlines()[0]
    assert "rotation pose SD" in alignment and "svhn" not in alignment and "plankton pose" not in alignment
    assert "plankton / random weights" not in (built / "eq1.md").read_text()
    report = (built / "report.md").read_text()
    assert "plankton: test error (%) by ST depth" in report and "svhn: test error (%) by ST depth" in report


def test_error_vs_depth_figures(built):
    assert imread(built / "error_vs_depth_plankton.png").shape[:2] == (380, 560)
    assert imread(built / "error_vs_depth_svhn.png").shape[:2] == (380, 560)
    assert not (built / "error_vs_depth_rotated.png").exists()


def test_plankton_rotation_consistency_is_in_the_alignment_table(built):
    rows = {line.split(",")[0]: line.split(",") for line in (built / "alignment.csv").read_text().splitlines()}
    column = rows["variant"].index("plankton rotation consistency (°)")
    assert rows["STN-C2"][column] == "42.0 ± 2.8 (n=2)"
    assert rows["STN-SL2"][column] == "12.0 ± 2.0 (n=3)" and "**12.0 ± 2.0 (n=3)**" in (built / "alignment.md").read_text()
    assert rows["CNN"][column].startswith("—")
