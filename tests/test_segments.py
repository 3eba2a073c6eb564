"""``study.search.segments`` on an in-memory object store with S3's semantics (create-if-absent, listing from a
key): which objects each append and compaction writes, what a reader reads, and what is refused. The same
backend against a real S3 server, with Optuna on top: tests/test_object_storage.py."""

import json

import optuna
import pytest

from study.search.segments import RecordConflict, SegmentedJournalBackend


class Bucket:
    """The part of ``StudyDir`` the backend uses, over a dict of objects; ``written`` counts every PUT's bytes."""

    def __init__(self):
        self.objects, self.written, self.created = {}, 0, []

    def __str__(self):
        return "mem://study"

    def exists(self, name):
        return name in self.objects

    def read_bytes(self, name):
        return self.objects[name]

    def create_if_absent(self, name, data):
        if name in self.objects:
            return False
        self.objects[name], self.written = data, self.written + len(data)
        self.created.append(name)
        return True

    def delete_many(self, names):
        for name in names:
            self.objects.pop(name, None)

    def list_after(self, folder, starts, after=""):
        names = sorted(key[len(folder) + 1:] for key in self.objects if key.startswith(f"{folder}/"))
        return [n for n in names if n.startswith(starts) and n > after]


def log(i):
    return {"op": i, "pad": "x" * 20}


def line_bytes(i):
    return len(json.dumps(log(i), separators=(",", ":"))) + 1


def test_each_append_is_one_new_segment_named_by_its_first_line_and_the_writer_compacts_geometrically():
    bucket = Bucket()
    writer = SegmentedJournalBackend(bucket, "j", writer=True)
    writer.append_logs([log(0), log(1)])
    writer.append_logs([log(2)])  # 2 segments, and their bytes exceed the base's (none): a base of all 3 lines
    assert bucket.created == ["j.d/seg-000000000000", "j.d/seg-000000000002", "j.d/base-000000000003"]
    for i in range(3, 40):
        writer.append_logs([log(i)])
    bases = [name for name in bucket.created if "/base-" in name]
    lines = [int(name.rpartition("-")[2]) for name in bases]
    sizes = [sum(line_bytes(i) for i in range(n)) for n in lines]
    assert all(later > 2 * earlier for earlier, later in zip(sizes, sizes[1:])), lines  # each base > 2× the last's bytes
    assert [k for k in bucket.objects if "/base-" in k] == bases[-1:]  # older bases go; segments stay (names taken)
    assert len([k for k in bucket.objects if "/seg-" in k]) == 39
    total = sum(line_bytes(i) for i in range(40))
    assert bucket.written <= 3 * total  # appends once, plus bases that at most double each time: ≤ 2× in all
    reader = SegmentedJournalBackend(bucket, "j")
    assert list(reader.read_logs(0)) == [log(i) for i in range(40)] and list(reader.read_logs(38)) == [log(38), log(39)]


def test_a_writer_that_is_behind_cannot_write_a_line_that_exists_and_a_reader_cannot_write():
    bucket = Bucket()
    first, second = SegmentedJournalBackend(bucket, "j", writer=True), SegmentedJournalBackend(bucket, "j", writer=True)
    first.append_logs([log(0)])
    with pytest.raises(RecordConflict, match="another driver wrote line 0"):
        second.append_logs([log(99)])
    assert list(SegmentedJournalBackend(bucket, "j").read_logs(0)) == [log(0)]  # nothing of the first was lost
    with pytest.raises(RecordConflict, match="opened to read"):
        SegmentedJournalBackend(bucket, "j").append_logs([log(1)])


def test_a_damaged_record_is_one_clear_error():
    bucket = Bucket()
    bucket.objects["j.d/base-000000000003"] = b'{"op":0}\n'  # its name says 3 lines
    with pytest.raises(RecordConflict, match="holds 1 lines, its name says 3"):
        SegmentedJournalBackend(bucket, "j")
    gap = Bucket()
    gap.objects["j.d/seg-000000000000"] = b'{"op":0}\n'
    gap.objects["j.d/seg-000000000002"] = b'{"op":2}\n'  # line 1 is missing
    with pytest.raises(RecordConflict, match="no segment at line 1 but one at 2"):
        SegmentedJournalBackend(gap, "j")


def test_a_single_object_journal_is_read_and_the_writer_replaces_it_by_a_base():
    bucket = Bucket()
    bucket.objects["j"] = b'{"op":0}\n{"op":1}\n{"op":2'  # a torn last line is not a line
    assert list(SegmentedJournalBackend(bucket, "j").read_logs(0)) == [{"op": 0}, {"op": 1}]
    assert "j" in bucket.objects  # a reader changes nothing
    writer = SegmentedJournalBackend(bucket, "j", writer=True)
    assert sorted(bucket.objects) == ["j.d/base-000000000002"]
    writer.append_logs([{"op": 2}])
    assert list(SegmentedJournalBackend(bucket, "j").read_logs(0)) == [{"op": 0}, {"op": 1}, {"op": 2}]


def test_optuna_reads_back_its_study_through_the_backend():
    bucket = Bucket()
    study = optuna.create_study(study_name="cell", storage=optuna.storages.JournalStorage(
        SegmentedJournalBackend(bucket, "j", writer=True)))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    again = optuna.load_study(study_name="cell", storage=optuna.storages.JournalStorage(SegmentedJournalBackend(bucket, "j")))
    assert [t.params for t in again.trials] == [t.params for t in study.trials]
