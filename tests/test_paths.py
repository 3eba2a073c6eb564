"""``study.paths``: the storage root and a study's directory through pyarrow's local filesystem (the same calls
on S3: tests/test_object_storage.py)."""

import pickle
import re
from pathlib import Path

from study.paths import StudyDir, is_remote, new_study_id, storage_root, study_dirs


def test_remote_roots_are_kept_and_local_ones_made_absolute(tmp_path, monkeypatch):
    assert is_remote("s3://bucket/x") and is_remote("gs://b") and not is_remote("/tmp/s3") and not is_remote(None)
    assert not is_remote("file:///tmp") and not is_remote("s3:/no-slashes")
    assert storage_root("s3://bucket/prefix/") == "s3://bucket/prefix"
    monkeypatch.chdir(tmp_path)
    assert storage_root("rel/dir") == str(tmp_path.resolve() / "rel" / "dir")
    assert storage_root(None) == str(tmp_path / "mlflow_artifacts" / "tune")


def test_study_ids_are_the_name_a_timestamp_and_a_random_suffix():
    ids = [new_study_id("paper") for _ in range(20)]
    assert all(re.fullmatch(r"paper-20\d{6}-\d{6}-[0-9a-f]{4}", i) for i in ids), ids
    assert len({i[-4:] for i in ids}) > 1  # two launches in the same second still differ


def test_a_study_directory_reads_writes_lists_and_deletes(tmp_path):
    directory = StudyDir(str(tmp_path), "s1")
    assert not directory.exists() and directory.listdir() == []
    directory.write_text("study.json", '{"a": 1}')
    directory.write_bytes("search-1/state.bin", b"\x00\x01")
    assert directory.exists() and directory.local == tmp_path / "s1"
    assert directory.read_text("study.json") == '{"a": 1}' and directory.read_bytes("search-1/state.bin") == b"\x00\x01"
    assert directory.listdir() == ["search-1", "study.json"]  # no temporary left behind by the atomic writes
    directory.write_text("study.json", "replaced")
    assert (tmp_path / "s1" / "study.json").read_text() == "replaced"
    directory.delete("study.json")
    directory.delete("study.json")  # deleting what is not there is fine
    assert not directory.exists("study.json") and directory.listdir() == ["search-1"]
    directory.makedirs("final-1")
    assert (tmp_path / "s1" / "final-1").is_dir()


def test_a_study_directory_is_named_from_a_path_and_pickles_as_where_it_is(tmp_path):
    directory = StudyDir.of(tmp_path / "s2")
    assert (directory.root, directory.name, repr(directory)) == (str(tmp_path), "s2", f"{tmp_path}/s2")
    assert StudyDir.of(directory) is directory and StudyDir.of(f"{tmp_path}/s2/").name == "s2"
    directory.write_text("x", "1")
    copy = pickle.loads(pickle.dumps(directory))
    assert copy.uri == directory.uri and copy.read_text("x") == "1"


def test_study_dirs_are_the_directories_under_the_root(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "note.txt").write_text("not a study")
    assert sorted(d.name for d in study_dirs(str(tmp_path))) == ["a", "b"]
    assert study_dirs(str(tmp_path / "missing")) == []
    assert all(isinstance(d.local, Path) for d in study_dirs(str(tmp_path)))
