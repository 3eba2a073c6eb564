"""The driver prepares the study's data once, under a lock in the data root; trials only read it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_plankton import write_tree
from test_svhn_multi import write_svhn_multi

from study.launch import main
from study.prepare import prepare, source_root
from study.trial import train_config
from trainables.data import DataError

TESTS = Path(__file__).parent

# One driver: waits for its rival to be ready, then prepares plankton/ under the data root. Its "download"
# writes the real PNG tree (a stand-in for a network fetch) slowly, so the rival must wait on the lock.
DRIVER = """
import json, os, sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
from study.prepare import prepare
from test_plankton import write_tree
from trainables.data import load_data

root, me, other = sys.argv[1], sys.argv[2], sys.argv[3]
Path(root, me + ".ready").touch()
while not Path(root, other + ".ready").exists():
    time.sleep(0.05)

def load(source, where, download):
    if download and not Path(where).is_dir():
        Path(root, me + ".fetched").touch()
        write_tree(Path(where), per_class=4)
        time.sleep(3)  # still "downloading": the other driver must not read a half-written tree
    return load_data(source, where, False)

splits = prepare(["plankton"], root, True, say=lambda text: print(text, flush=True), load=load)
print(json.dumps({{"digest": splits[0].digest, "train": len(splits[0].train_y)}}))
"""


def test_two_drivers_racing_on_one_root_fetch_once_and_read_the_same_files(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    env = {**os.environ, "STN_STUDY_CACHE": str(tmp_path / "cache")}
    script = DRIVER.format(tests=str(TESTS))
    procs = [subprocess.Popen([sys.executable, "-c", script, str(root), me, other], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for me, other in (("a", "b"), ("b", "a"))]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    assert len(list(root.glob("*.fetched"))) == 1  # one driver downloaded, the other found the files
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert results[0] == results[1] and results[0]["train"] == 6  # both read the complete tree (2 of 4 per class)
    waited = [out for out, _ in outs if "waiting for another process that prepares" in out]
    assert len(waited) == 1 and str(root) in waited[0]
    assert (root / ".stn-study-data.lock").exists()


def test_every_source_of_a_study_is_read_under_its_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("STN_STUDY_CACHE", str(tmp_path / "cache"))
    write_tree(tmp_path / "plankton", per_class=3)
    splits = prepare(["plankton", "rotated-mnist", "scaled-mnist"], None, False, load=lambda s, r, d: (s, r, d))
    assert splits == [("plankton", None, False), ("mnist", None, False)]  # the MNIST family shares one source
    (plankton,) = prepare(["plankton"], str(tmp_path), False)
    assert "PlanktonSet tree at " + str(tmp_path / "plankton") in plankton.source
    assert source_root(str(tmp_path), "mnist") == str(tmp_path)  # torchvision's own MNIST/raw under it


def test_svhn_multi_is_read_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("STN_STUDY_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"svhn-multi files missing under .*\(train.csv, test.csv, images/\); it "
                                        r"cannot be downloaded"):
        prepare(["svhn-multi"], str(tmp_path / "data"), True)
    assert not (tmp_path / "data" / "svhn-multi").exists()  # nothing fetched (the root holds only the lock)
    write_svhn_multi(tmp_path / "data" / "svhn-multi", n_train=3, n_test=2)
    (multi,) = prepare(["svhn-multi"], str(tmp_path / "data"), True)
    assert multi.source == f"SVHN multi-digit files at {tmp_path / 'data' / 'svhn-multi'}"
    assert tuple(multi.test_y.shape) == (2, 5)


def test_trials_never_download_and_read_their_source_folder():
    cfg = train_config({"dataset": "svhn", "variant": "CNN", "epochs": 1, "data_root": "/shared/d", "download": True})
    assert cfg.download is False and cfg.data_root == "/shared/d/svhn"
    cfg = train_config({"dataset": "svhn-multi", "variant": "STN-SL2", "epochs": 1, "data_root": "/shared/d",
                        "download": True})
    assert cfg.download is False and cfg.data_root == "/shared/d/svhn-multi"
    cfg = train_config({"dataset": "rotated-mnist", "variant": "CNN", "epochs": 1, "data_root": None,
                        "download": True})
    assert cfg.download is False and cfg.data_root is None


@pytest.mark.parametrize("dataset,needle", [("plankton", "data_root: no PlanktonSet tree at"),
                                            ("svhn", "data_root: SVHN files missing under"),
                                            ("svhn-multi", "data_root: svhn-multi files missing under")])
def test_missing_data_stops_the_study_in_one_line_before_anything_is_written(tmp_path, monkeypatch, capsys,
                                                                             dataset, needle):
    monkeypatch.chdir(tmp_path)
    code = main(["--datasets", dataset, "--variants", "CNN", "--data-root", str(tmp_path / "data"), "--quiet",
                 "--storage-path", str(tmp_path / "tune"), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: {needle}")
    assert str(tmp_path / "data" / dataset) in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no store, no storage, no data folder
