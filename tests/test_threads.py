"""Threads of ours stop with their owners: a spool closed while its server is down, the record's writer."""

import time

from study.threads import THREAD_PREFIX, ours


def test_a_spool_closed_while_its_server_is_down_stops_its_thread_at_once(tmp_path):
    from study.bench.services import free_port
    from study.tracking.spool import TrackingSpool

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: every request is refused
    before = ours()
    spool = TrackingSpool(dead, tmp_path / "spool", "0", "s", say=lambda _text: None)
    (thread,) = ours() - before
    assert thread.name == f"{THREAD_PREFIX}tracking-spool"
    spool.submit("tags", run_id="r", tags={"a": "b"})
    time.sleep(1.0)  # the update is being retried
    started = time.monotonic()
    spool.close()
    assert not thread.is_alive() and time.monotonic() - started < 5.0
    assert '"op": "tags"' in spool.journal.read_text()  # kept for the next spool on this directory


def test_the_record_writer_writes_what_is_queued_then_stops(tmp_path, s3):
    from study.paths import StudyDir
    from study.search.record import JOURNAL_FILE
    from study.search.segments import SegmentedJournalBackend

    directory = StudyDir.of(f"s3://{s3.bucket}/threads")
    before = ours()
    writer = SegmentedJournalBackend(directory, JOURNAL_FILE, writer=True)
    writer.append_logs([{"op_code": 0, "n": i} for i in range(5)])
    (thread,) = ours() - before
    assert thread.name == f"{THREAD_PREFIX}optuna-record-writer"
    writer.close()
    assert not thread.is_alive()
    assert len(SegmentedJournalBackend(directory, JOURNAL_FILE).read_logs(0)) == 5
