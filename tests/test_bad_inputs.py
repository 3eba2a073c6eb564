"""Bad input: one line naming the field and what is allowed, exit code 2, nothing started or written.

Every case runs the real command-line entry point in an empty working directory and checks that the
directory holds nothing new afterwards (no store, no storage, no study).
"""

import pytest
import torch

from study import launch
from study.report import build as report

CORRUPT = "corrupt"


def corrupt_mnist(root):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(b"\x00\x00\x08\x03 definitely not MNIST")


CASES = [
    (["--variants", "STN-Q1"], "variants: unknown variant 'STN-Q1': expected CNN, STN-C<X>, STN-SL<X>, STN-DL<X>"),
    (["--datasets", "cifar"], "datasets: unknown dataset 'cifar': allowed rotated-mnist, translated-mnist, scaled-mnist, "
                                     "rotated360-mnist, svhn, plankton"),
    (["--datasets", "svhn"], "data_root: svhn has no embedded subset: allowed a folder holding svhn/"),
    (["--variants", "STN-C3"], "variants: variant 'STN-C3' is not possible on rotated-mnist"),
    (["--set", "search.lr.low=0"], "search.lr: a log range needs low > 0"),
    (["--set", "search.lr={low: -0.1, high: 0.1}"], "search.lr: must be > 0, got low = -0.1"),
    (["--set", "search.lr.low=nan"], "search.lr: range bounds must be finite"),
    (["--set", "variants=[]"], "variants: List should have at least 1 item"),
    (["--config", "bad.yaml"], "not valid YAML at line"),
    (["--set", "bogus=1"], "bogus: unknown key"),
    (["--set", "epochs=ten"], "epochs: Input should be a valid integer"),
    (["--set", "search.optimizer=[rmsprop]"], "search.optimizer.0: allowed: 'sgd' or 'adam'"),
    (["--set", "resources.gpus=0.5"], "resources.gpus: 0.5 GPU per trial, but this machine has 0: allowed 0 to 0"),
    (["--cpus-per-trial", "64"], "resources.cpus: 64 CPU per trial, but this machine has"),
    (["--data-root", "no-such-dir"], "data_root: MNIST files missing under"),
    (["--data-root", CORRUPT], "data_root: cannot read the MNIST files under"),
    (["--tracking-uri", "ftp://example.org/store"], "tracking_uri: unsupported scheme 'ftp'"),
    (["--resume", "no-such-study"], "resume: no studies under"),
    (["--cluster", "--tracking-uri", "sqlite:////tmp/x.db", "--storage-path", "/tmp/s"],
     "tracking_uri: --cluster needs an MLflow tracking server"),
    (["--max-hours", "0"], "max_hours: must be a number > 0"),
    (["--set", "min_free_gb=1e9"], "min_free_gb: only"),
    (["--set", "st_transforms=[projective]"], "st_transforms: unknown st_transform 'projective'"),
    (["--set", "sampler=cmaes"], "sampler: allowed: 'tpe', 'gp' or 'random'"),
    (["--final-seeds", "0", "1048576"], "final_seeds: final seeds must lie in [0, 1048576)"),
    (["--final-seeds", "1", "1"], "final_seeds: seeds must be distinct, got 1 more than once"),
    (["--config", "seeds.yaml"], "final_seeds: seeds must be distinct, got 1 more than once"),
]


@pytest.mark.parametrize("argv,needle", CASES, ids=[" ".join(argv) for argv, _ in CASES])
def test_launch_rejects_bad_input_in_one_line(argv, needle, tmp_path, monkeypatch, capsys):
    if "gpus" in " ".join(argv) and torch.cuda.is_available():
        argv = ["--set", f"resources.gpus={torch.cuda.device_count() + 1}"]
        needle = "resources.gpus:"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    (tmp_path / "seeds.yaml").write_text("final_seeds: [1, 1]\n")
    corrupt_mnist(tmp_path / CORRUPT)
    before = sorted(tmp_path.rglob("*"))
    assert launch.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


def test_report_of_a_missing_study_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert report.main(["--study", "no-such-study"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no tracking store" in err[0]
    assert not any(tmp_path.iterdir())
