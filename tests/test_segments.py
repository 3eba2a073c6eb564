"""``study.search.segments`` on a real S3 server (moto, loopback): which objects each append and compaction
writes and their bytes, what a reader reads, and what is refused. Whole studies on S3: tests/test_object_storage.py."""

import json
import threading
import uuid

import optuna
import pytest

from study.paths import StudyDir
from study.search.segments import RecordConflict, SegmentedJournalBackend

pytestmark = pytest.mark.usefixtures("writers_are_closed")


class Bucket:
    """A fresh prefix of the real S3 server (moto, loopback) behind the real ``StudyDir``; ``created`` and
    ``written`` record the objects each conditional create made and their bytes (the bucket's PUTs)."""

    def __init__(self, s3):
        self.s3, self.prefix = s3, f"segments-{uuid.uuid4().hex[:8]}"
        self.dir = StudyDir(f"s3://{s3.bucket}/{self.prefix}", "study")
        self.created, self.written = [], 0

    def __repr__(self):
        return repr(self.dir)

    def __getattr__(self, name):  # exists, read_bytes, delete_many, list_after: the real ones
        return getattr(self.dir, name)

    def create_if_absent(self, name, data):
        made = self.dir.create_if_absent(name, data)
        if made:
            self.created.append(name)
            self.written += len(data)
        return made

    def put(self, name, data: bytes) -> None:
        """An object written outside the backend (a damaged record, an older journal)."""
        self.s3.client().put_object(Bucket=self.s3.bucket, Key=f"{self.prefix}/study/{name}", Body=data)

    @property
    def objects(self) -> list[str]:
        return [key.removeprefix(f"{self.prefix}/study/") for key in self.s3.keys(f"{self.prefix}/study/")]


def log(i):
    return {"op": i, "pad": "x" * 20}


def line_bytes(i):
    return len(json.dumps(log(i), separators=(",", ":"))) + 1


def test_each_flushed_append_is_one_new_segment_named_by_its_first_line_and_the_writer_compacts_geometrically(s3):
    bucket = Bucket(s3)
    writer = SegmentedJournalBackend(bucket, "j", writer=True)
    writer.append_logs([log(0), log(1)])
    writer.flush()
    writer.append_logs([log(2)])  # 2 segments, and their bytes exceed the base's (none): a base of all 3 lines
    writer.flush()
    assert bucket.created == ["j.d/seg-000000000000", "j.d/seg-000000000002", "j.d/base-000000000003"]
    for i in range(3, 40):
        writer.append_logs([log(i)])
        writer.flush()
    bases = [name for name in bucket.created if "/base-" in name]
    lines = [int(name.rpartition("-")[2]) for name in bases]
    sizes = [sum(line_bytes(i) for i in range(n)) for n in lines]
    assert all(later > 2 * earlier for earlier, later in zip(sizes, sizes[1:], strict=False)), lines  # each base > 2× the last's bytes
    assert [k for k in bucket.objects if "/base-" in k] == bases[-1:]  # older bases go; segments stay (names taken)
    assert len([k for k in bucket.objects if "/seg-" in k]) == 39
    total = sum(line_bytes(i) for i in range(40))
    assert bucket.written <= 3 * total  # appends once, plus bases that at most double each time: ≤ 2× in all
    reader = SegmentedJournalBackend(bucket, "j")
    assert list(reader.read_logs(0)) == [log(i) for i in range(40)] and list(reader.read_logs(38)) == [log(38), log(39)]


def test_appends_queued_while_a_put_is_in_flight_go_out_together_and_reads_never_wait(s3):
    class Slow(Bucket):
        """The real bucket, whose first create waits until the test lets it go (a slow PUT)."""

        def __init__(self, s3):
            super().__init__(s3)
            self.entered, self.release = threading.Event(), threading.Event()

        def create_if_absent(self, name, data):
            self.entered.set()
            self.release.wait(timeout=30)
            return super().create_if_absent(name, data)

    bucket = Slow(s3)
    writer = SegmentedJournalBackend(bucket, "j", writer=True)
    writer.append_logs([log(0)])
    assert bucket.entered.wait(timeout=30)  # the writer thread has taken line 0 and waits in its PUT
    for i in range(1, 6):
        writer.append_logs([log(i)])  # returns at once
    assert list(writer.read_logs(0)) == [log(i) for i in range(6)] and bucket.created == []
    bucket.release.set()
    writer.flush()
    assert bucket.created[:2] == ["j.d/seg-000000000000", "j.d/seg-000000000001"]  # lines 1-5: one segment
    assert list(SegmentedJournalBackend(bucket, "j").read_logs(0)) == [log(i) for i in range(6)]


def test_a_writer_that_is_behind_cannot_write_a_line_that_exists_and_a_reader_cannot_write(s3):
    bucket = Bucket(s3)
    first, second = SegmentedJournalBackend(bucket, "j", writer=True), SegmentedJournalBackend(bucket, "j", writer=True)
    first.append_logs([log(0)])
    first.flush()
    second.append_logs([log(99)])  # queued: the refusal comes from the writer thread
    with pytest.raises(RecordConflict, match="another driver wrote line 0"):
        second.flush()
    with pytest.raises(RecordConflict, match="another driver wrote line 0"):
        second.append_logs([log(100)])  # and stays: this driver must stop
    assert list(SegmentedJournalBackend(bucket, "j").read_logs(0)) == [log(0)]  # nothing of the first was lost
    with pytest.raises(RecordConflict, match="opened to read"):
        SegmentedJournalBackend(bucket, "j").append_logs([log(1)])


def test_a_damaged_record_is_one_clear_error(s3):
    bucket = Bucket(s3)
    bucket.put("j.d/base-000000000003", b'{"op":0}\n')  # its name says 3 lines
    with pytest.raises(RecordConflict, match="holds 1 lines, its name says 3"):
        SegmentedJournalBackend(bucket, "j")
    gap = Bucket(s3)
    gap.put("j.d/seg-000000000000", b'{"op":0}\n')
    gap.put("j.d/seg-000000000002", b'{"op":2}\n')  # line 1 is missing
    with pytest.raises(RecordConflict, match="no segment at line 1 but one at 2"):
        SegmentedJournalBackend(gap, "j")


def test_optuna_reads_back_its_study_through_the_backend(s3):
    bucket = Bucket(s3)
    writer = SegmentedJournalBackend(bucket, "j", writer=True)
    study = optuna.create_study(study_name="cell", storage=optuna.storages.JournalStorage(writer))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    writer.flush()
    again = optuna.load_study(study_name="cell", storage=optuna.storages.JournalStorage(SegmentedJournalBackend(bucket, "j")))
    assert [t.params for t in again.trials] == [t.params for t in study.trials]
