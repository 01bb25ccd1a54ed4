"""The journal itself: its state machine, its resume rules, its lock, its durability and scale."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from real_esrgan_async import (
    AmbiguousSubmitError,
    JobFailedError,
    JobState,
    JobSystemError,
    Journal,
    JournalEntry,
    JournalError,
    JournalLockedError,
    JournalMismatchError,
    JournalState,
    SQLiteJournal,
    Status,
    UpscaleRequest,
)
from real_esrgan_async._journal import Resume, plan, replay, state_from_json, state_to_json
from real_esrgan_async._journal_sqlite import DIED_IN_FLIGHT

CAT = UpscaleRequest("https://img.test/cat.png", scale=2)
DOG = UpscaleRequest("https://img.test/dog.png", scale=2)


def completed(request_id: str) -> JobState:
    return JobState(
        request_id,
        Status.COMPLETED,
        model_id="real-esrgan",
        media_urls=(f"https://cdn.test/{request_id}.png",),
        media_type="image/png",
        created_at=datetime(2026, 3, 31, 10, 0, tzinfo=UTC),
        completed_at=datetime(2026, 3, 31, 10, 0, 7, 250000, tzinfo=UTC),
    )


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "batch.journal"


def test_an_input_goes_pending_submitted_completed_saved(path: Path) -> None:
    with SQLiteJournal(path) as journal:
        assert journal.get(0) is None
        journal.record_pending(0, CAT)
        assert JournalEntry(0, CAT, JournalState.PENDING) == journal.get(0)
        journal.record_submitted(0, "rid-0")
        journal.record_finished(0, completed("rid-0"))
        journal.mark_saved(0, path.parent / "0.png")
        expected = JournalEntry(
            0,
            CAT,
            JournalState.COMPLETED,
            request_id="rid-0",
            result=completed("rid-0"),
            saved_to=str(path.parent / "0.png"),
        )
        assert expected == journal.get(0)
    with SQLiteJournal(path) as journal:  # and it is all still there
        assert expected == journal.get(0)
        assert 1 == journal.counts()["saved"]


def test_failed_and_errored_jobs_are_recorded_as_such(path: Path) -> None:
    with SQLiteJournal(path) as journal:
        for index, status in enumerate((Status.FAILED, Status.ERROR)):
            journal.record_pending(index, CAT)
            journal.record_submitted(index, f"rid-{index}")
            journal.record_finished(index, JobState(f"rid-{index}", status, error="boom"))
        assert [JournalState.FAILED, JournalState.ERROR] == [e.state for e in journal.entries()]


def test_an_entry_left_pending_by_a_dead_process_is_ambiguous_on_reopening(path: Path) -> None:
    with SQLiteJournal(path) as journal:
        journal.record_pending(0, CAT)
    with SQLiteJournal(path) as journal:
        assert JournalEntry(0, CAT, JournalState.AMBIGUOUS, error=DIED_IN_FLIGHT) == journal.get(0)


def test_a_post_that_created_nothing_is_forgotten(path: Path) -> None:
    with SQLiteJournal(path) as journal:
        journal.record_pending(0, CAT)
        journal.record_unsent(0)
        assert journal.get(0) is None


def test_a_refused_resubmission_of_an_ambiguous_input_stays_ambiguous(path: Path) -> None:
    """The first POST may still have created a job: a refused second one changes nothing."""
    with SQLiteJournal(path) as journal:
        journal.record_pending(0, CAT)
        journal.record_ambiguous(0, "ReadTimeout: answer lost")
        journal.record_pending(0, CAT)  # resubmit_ambiguous=True
        journal.record_unsent(0)  # ... and the gateway said 402
        expected = JournalEntry(0, CAT, JournalState.AMBIGUOUS, error="ReadTimeout: answer lost")
        assert expected == journal.get(0)


def test_an_ambiguous_input_can_be_resolved_with_the_id_found_elsewhere(path: Path) -> None:
    with SQLiteJournal(path) as journal:
        journal.record_pending(0, CAT)
        journal.record_ambiguous(0, "lost")
        journal.resolve_ambiguous(0, "rid-from-dashboard")
        entry = journal.get(0)
        assert entry is not None
        assert (JournalState.SUBMITTED, "rid-from-dashboard") == (entry.state, entry.request_id)
        with pytest.raises(JournalError, match="does not have input 0 to be AMBIGUOUS"):
            journal.resolve_ambiguous(0, "another")


def test_records_out_of_order_are_refused(path: Path) -> None:
    with SQLiteJournal(path) as journal:
        with pytest.raises(JournalError, match="input 3 to be pending"):
            journal.record_submitted(3, "rid")
        journal.record_pending(0, CAT)
        with pytest.raises(JournalError, match="input 0 to be COMPLETED"):
            journal.mark_saved(0, "x.png")
        journal.record_submitted(0, "rid")
        with pytest.raises(JournalError, match="input 0 to be new or AMBIGUOUS"):
            journal.record_pending(0, CAT)  # a submitted input is never submitted again


def test_entries_and_counts_report_the_batch(path: Path) -> None:
    with SQLiteJournal(path) as journal:
        for index in range(4):
            journal.record_pending(index, CAT)
        journal.record_submitted(1, "rid-1")
        journal.record_ambiguous(2, "lost")
        expected = {
            "pending": 2,
            "submitted": 1,
            "ambiguous": 1,
            "completed": 0,
            "failed": 0,
            "error": 0,
            "saved": 0,
        }
        assert expected == journal.counts()
        assert [1] == [e.index for e in journal.entries(JournalState.SUBMITTED)]
        assert [0, 1, 2, 3] == [e.index for e in journal.entries()]


def test_a_second_opener_in_this_process_is_refused_with_the_holder(path: Path) -> None:
    with SQLiteJournal(path), pytest.raises(JournalLockedError) as info:
        SQLiteJournal(path).open()
    assert (str(path), os.getpid()) == (info.value.path, info.value.pid)
    assert f"journal {path} is in use by process {os.getpid()}" in str(info.value)
    with SQLiteJournal(path):  # released on close
        pass


def test_the_lock_of_a_killed_process_is_released_by_the_os(path: Path) -> None:
    """SIGKILL leaves no stale lock: the next process just opens the journal."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import sys, time
                from real_esrgan_async import SQLiteJournal
                SQLiteJournal({str(path)!r}).open()
                print("locked", flush=True)
                time.sleep(60)
            """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert "locked\n" == holder.stdout.readline()
        with pytest.raises(JournalLockedError) as info:
            SQLiteJournal(path).open()
        assert holder.pid == info.value.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    with SQLiteJournal(path):
        pass


def test_a_record_survives_sigkill_the_moment_it_returns(path: Path) -> None:
    """No close, no flush: the id written just before SIGKILL is there afterwards."""
    code = textwrap.dedent(f"""
        import os, signal
        from real_esrgan_async import SQLiteJournal, UpscaleRequest
        journal = SQLiteJournal({str(path)!r}).open()
        journal.record_pending(0, UpscaleRequest("https://img.test/cat.png", scale=2))
        journal.record_submitted(0, "rid-0")
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert -signal.SIGKILL == subprocess.run([sys.executable, "-c", code], check=False).returncode
    with SQLiteJournal(path) as journal:
        entry = journal.get(0)
        assert entry is not None
        assert (JournalState.SUBMITTED, "rid-0") == (entry.state, entry.request_id)


def test_a_file_that_is_not_a_journal_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    db.close()
    with pytest.raises(JournalError, match="is not a journal of this library"):
        SQLiteJournal(other).open()
    junk = tmp_path / "junk.journal"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(JournalError, match="is not a journal"):
        SQLiteJournal(junk).open()


def test_a_journal_in_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match=r"cannot open journal .*nowhere/batch\.journal"):
        SQLiteJournal(tmp_path / "nowhere" / "batch.journal").open()


def test_use_outside_open_raises_runtime_error(path: Path) -> None:
    journal = SQLiteJournal(path)
    with pytest.raises(RuntimeError, match="is not open"):
        journal.get(0)
    with journal:
        pass
    with pytest.raises(RuntimeError, match="is closed"):
        journal.get(0)
    with pytest.raises(RuntimeError, match="can be opened only once"):
        journal.open()
    journal.close()  # idempotent


def test_lookups_and_the_reopening_update_use_indexes_not_scans(path: Path) -> None:
    """50,000 inputs: `get` is a rowid search; reopening reads only the index of PENDING ones."""
    with SQLiteJournal(path) as journal:
        db = journal._db
        assert db is not None
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO inputs (idx, image, scale, face_enhance, state, request_id, updated_at) "
            "VALUES (?, ?, 2, 0, 'submitted', ?, 0)",
            ((n, f"https://img.test/{n}.png", f"rid-{n}") for n in range(50_000)),
        )
        db.execute("COMMIT")
        get_plan = db.execute("EXPLAIN QUERY PLAN SELECT * FROM inputs WHERE idx = ?", (7,))
        assert "USING INTEGER PRIMARY KEY" in str(get_plan.fetchall())
        update_plan = db.execute(
            "EXPLAIN QUERY PLAN UPDATE inputs SET state = 'ambiguous' WHERE state = 'pending'"
        )
        assert "USING INDEX inputs_pending" in str(update_plan.fetchall())
    started = time.perf_counter()
    with SQLiteJournal(path) as journal:  # a rerun of the batch
        assert time.perf_counter() - started < 1.0  # ~10 ms measured
        started = time.perf_counter()
        for n in range(0, 50_000, 50):
            assert journal.get(n) is not None
        assert time.perf_counter() - started < 1.0  # 1,000 lookups; ~30 ms measured
        assert journal.get(50_000) is None


@pytest.mark.anyio
async def test_concurrent_syncs_share_checkpoints(path: Path) -> None:
    """A group commit: 100 submits that sync at once cost a handful of checkpoints, not 100."""
    async with SQLiteJournal(path) as journal:
        checkpoints = 0
        real = journal._checkpoint

        def counting() -> None:
            nonlocal checkpoints
            checkpoints += 1
            real()

        journal._checkpoint = counting  # type: ignore[method-assign]

        async def submit(index: int) -> None:
            journal.record_pending(index, UpscaleRequest(f"https://img.test/{index}.png"))
            await journal.sync()

        async with anyio.create_task_group() as tg:
            for index in range(100):
                tg.start_soon(submit, index)
        assert 1 <= checkpoints <= 3
        await journal.sync()  # nothing new: no checkpoint
        assert checkpoints <= 3
    assert journal.closed


def test_sqlite_journal_is_a_journal(path: Path) -> None:
    assert isinstance(SQLiteJournal(path), Journal)


# The pure rules ---------------------------------------------------------------


def entry(state: JournalState, **fields: object) -> JournalEntry:
    return JournalEntry(3, CAT, state, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("state", "resubmit", "expected"),
    [
        (JournalState.SUBMITTED, False, Resume.WATCH),
        (JournalState.SUBMITTED, True, Resume.WATCH),
        (JournalState.COMPLETED, False, Resume.REPLAY),
        (JournalState.FAILED, True, Resume.REPLAY),
        (JournalState.ERROR, False, Resume.REPLAY),
        (JournalState.AMBIGUOUS, False, Resume.REPLAY),
        (JournalState.AMBIGUOUS, True, Resume.SUBMIT),
    ],
)
def test_plan_says_what_a_rerun_does_with_each_state(
    state: JournalState, resubmit: bool, expected: Resume
) -> None:
    assert expected == plan(entry(state, request_id="rid"), CAT, resubmit_ambiguous=resubmit)


def test_plan_submits_what_was_never_submitted() -> None:
    assert Resume.SUBMIT == plan(None, CAT, resubmit_ambiguous=False)


def test_plan_refuses_an_input_that_is_not_the_recorded_one() -> None:
    with pytest.raises(
        JournalMismatchError, match=r"input 3 is 'https://img\.test/dog\.png'"
    ) as info:
        plan(entry(JournalState.SUBMITTED), DOG, resubmit_ambiguous=False)
    assert 3 == info.value.index
    assert isinstance(info.value, ValueError)
    with pytest.raises(JournalMismatchError, match="scale 4"):
        plan(entry(JournalState.SUBMITTED), UpscaleRequest(CAT.image), resubmit_ambiguous=False)


def test_replay_rebuilds_each_recorded_outcome() -> None:
    done = replay(entry(JournalState.COMPLETED, request_id="rid", result=completed("rid")))
    assert (True, True, completed("rid"), "rid") == (
        done.ok,
        done.resumed,
        done.result,
        done.request_id,
    )
    failed = replay(entry(JournalState.FAILED, result=JobState("rid", Status.FAILED, error="x")))
    assert isinstance(failed.error, JobFailedError)
    errored = replay(entry(JournalState.ERROR, result=JobState("rid", Status.ERROR, error="x")))
    assert isinstance(errored.error, JobSystemError)
    ambiguous = replay(entry(JournalState.AMBIGUOUS, error="ReadTimeout: answer lost"))
    assert isinstance(ambiguous.error, AmbiguousSubmitError)
    assert "recorded in the journal: ReadTimeout: answer lost" in str(ambiguous.error)
    assert (3, CAT, None) == (ambiguous.index, ambiguous.request, ambiguous.result)


def test_replay_carries_where_the_output_was_saved() -> None:
    saved = replay(entry(JournalState.COMPLETED, result=completed("rid"), saved_to="out/3.png"))
    assert "out/3.png" == saved.saved_to


@pytest.mark.parametrize(
    "state",
    [
        completed("rid"),
        JobState("rid", Status.FAILED, error="Failed to download input image"),
        JobState("rid", Status.ERROR, error="CUDA out of memory", model_id=None),
    ],
)
def test_a_job_state_survives_the_round_trip(state: JobState) -> None:
    assert state == state_from_json(state_to_json(state))
