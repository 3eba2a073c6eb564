"""``study.object_fs`` on a real S3 server (moto, loopback): Tune's uploads write files, not folder markers."""

import pickle

import pyarrow.fs as pafs

from study.object_fs import tune_storage


def upload_like_tune(tmp_path, uri):
    """The driver's experiment folder (state files beside one empty folder per trial), copied the way Tune
    copies it to the storage path at each snapshot."""
    local = tmp_path / "experiment"
    for trial in range(5):
        (local / f"trial_{trial}").mkdir(parents=True)
    (local / "experiment_state.json").write_text('{"trial_data": []}')
    (local / "searcher-state.pkl").write_bytes(b"state")
    path, fs = tune_storage(uri)
    pafs.copy_files(str(local), path, destination_filesystem=fs)
    return path, fs


def test_an_upload_to_s3_writes_its_files_and_no_folder_markers(s3, tmp_path):
    path, fs = upload_like_tune(tmp_path, f"s3://{s3.bucket}/markers/run")
    assert path == f"{s3.bucket}/markers/run"
    assert sorted(s3.keys("markers/")) == ["markers/run/experiment_state.json", "markers/run/searcher-state.pkl"]
    # plain pyarrow, as in every other copy: a marker per folder, on every upload
    plain, plain_path = pafs.FileSystem.from_uri(f"s3://{s3.bucket}/plain/run")
    pafs.copy_files(str(tmp_path / "experiment"), plain_path, destination_filesystem=plain)
    assert len([k for k in s3.keys("plain/") if k.endswith("/")]) >= 5


def test_what_was_uploaded_reads_back_and_lists_through_the_same_filesystem(s3, tmp_path):
    path, fs = upload_like_tune(tmp_path, f"s3://{s3.bucket}/readback/run")
    with fs.open_input_stream(f"{path}/experiment_state.json") as stream:
        assert stream.read() == b'{"trial_data": []}'
    listed = fs.get_file_info(pafs.FileSelector(path))
    assert sorted(info.base_name for info in listed) == ["experiment_state.json", "searcher-state.pkl"]
    assert fs.get_file_info(path).type == pafs.FileType.Directory  # a prefix is a folder, marker or not
    again = pickle.loads(pickle.dumps(fs))  # as Tune ships it to every trial
    with again.open_output_stream(f"{path}/trial_0/resume-state.pt") as stream:
        stream.write(b"epoch 3")
    assert "readback/run/trial_0/resume-state.pt" in s3.keys("readback/")
    fs.delete_dir_contents(path)
    assert [k for k in s3.keys("readback/") if not k.endswith("/")] == []


def test_a_local_storage_path_is_tunes_own(tmp_path):
    assert tune_storage(str(tmp_path / "tune")) == (str(tmp_path / "tune"), None)
