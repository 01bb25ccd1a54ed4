"""The slow one: a crawler is SIGKILLed at random moments and resumed, over and over.

A driver process (`journal_crash_driver.py`) upscales a batch against the
emulator with ``upscale_many(journal=...)`` and downloads each output. It is
killed with SIGKILL `KILLS` times: a third of the kills after a random delay,
the others a random instant after the driver says it starts a new submit or a
download, so that every phase is hit. Each kill is classified by what was in
flight (a submit: a PENDING entry; a poll: a SUBMITTED one; a download: a
``download`` line with no ``saved`` after it, or a new ``.part`` file).
Ambiguous submits are then settled as a user would: those the gateway did
create (the emulator plays the provider's dashboard) are resolved with their
id, the others resubmitted. The last run goes to the end.

Then: every input has exactly one result in the journal, the emulator counted
exactly one POST per input URL, and every output is a whole PNG of the right
size under its final name.
"""

from __future__ import annotations

import collections
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from real_esrgan_async import JournalState, SQLiteJournal
from real_esrgan_async.testing import EmulatorConfig, RunningEmulator, running_emulator

pytestmark = pytest.mark.timeout(300)

DRIVER = Path(__file__).with_name("journal_crash_driver.py")
SAMPLES = {"photo.jpg": (128, 96), "pattern.png": (128, 96), "logo-rgba.png": (96, 96)}
SCALE = 4
INPUTS = 100
KILLS = 24
MAX_DELAY = 0.7  # a random kill lands this long after the driver is ready, at most
SUBMIT_WINDOW = 0.08  # a submit is on the wire ~10-60 ms (the emulator's latency)
DOWNLOAD_WINDOW = 0.01  # a download takes a few ms


class Driver:
    """One run of the crawler, its event lines read by a thread as they come."""

    def __init__(
        self,
        gateway: RunningEmulator,
        work: Path,
        *,
        backend: str,
        resubmit: bool = False,
        max_in_flight: int | None = None,
    ) -> None:
        command = [
            sys.executable,
            str(DRIVER),
            gateway.base_url,
            gateway.api_key,
            str(work / "inputs.txt"),
            str(work / "batch.journal"),
            str(work / "out"),
            "--backend",
            backend,
        ]
        if resubmit:
            command.append("--resubmit-ambiguous")
        if max_in_flight is not None:
            command += ["--max-in-flight", str(max_in_flight)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._news = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._news:
                self.lines.append(line.strip())
                self._news.notify_all()
        with self._news:
            self.lines.append("<exit>")
            self._news.notify_all()

    def wait_for(self, wanted: Callable[[str], bool], timeout: float) -> bool:
        """Wait until a line satisfies `wanted` (True), or the timeout or the exit (False)."""
        seen = 0
        deadline = time.monotonic() + timeout
        with self._news:
            while True:
                for line in self.lines[seen:]:
                    if wanted(line):
                        return True
                    if line == "<exit>":
                        return False
                seen = len(self.lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._news.wait(remaining):
                    return False

    def kill(self) -> bool:
        """SIGKILL now; False if the driver had already finished."""
        running = self.process.poll() is None
        if running:
            self.process.send_signal(signal.SIGKILL)
        self.finish()
        return running

    def finish(self, timeout: float = 60) -> int:
        code = self.process.wait(timeout)
        self._reader.join(5)
        assert self.process.stdout is not None
        self.process.stdout.close()
        return code

    def downloads_in_flight(self) -> set[str]:
        started = {line.split()[1] for line in self.lines if line.startswith("download ")}
        return started - {line.split()[1] for line in self.lines if line.startswith("saved ")}


def journal_counts(path: Path) -> collections.Counter[str]:
    """Entries per state, read as the killed process left them (nothing converted yet)."""
    if not path.exists():
        return collections.Counter()
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT state, count(*) FROM inputs GROUP BY state").fetchall()
        first_new = db.execute("SELECT coalesce(max(idx) + 1, 0) FROM inputs").fetchone()[0]
    db.close()
    return collections.Counter(dict(rows), first_new=first_new)


def kill_somewhere(driver: Driver, mode: str, first_new: int, rng: random.Random) -> bool:
    """Kill the driver at a random instant chosen by `mode`; False if it finished first."""
    if mode == "submit":
        # A `pull` of an input never submitted is followed at once by its POST.
        triggered = driver.wait_for(
            lambda line: line.startswith("pull ") and int(line.split()[1]) >= first_new, 10
        )
        delay = rng.uniform(0.0, SUBMIT_WINDOW) if triggered else 0.0
    elif mode == "download":
        triggered = driver.wait_for(lambda line: line.startswith("download "), 10)
        delay = rng.uniform(0.0, DOWNLOAD_WINDOW) if triggered else 0.0
    else:
        delay = rng.uniform(0.0, MAX_DELAY)
    time.sleep(delay)
    return driver.kill()


def settle_ambiguous_inputs(gateway: RunningEmulator, journal_path: Path) -> tuple[int, int]:
    """Resolve the ambiguous inputs the gateway did take; leave the others for a resubmit."""
    emulator = gateway.emulator
    jobs_by_image = {}
    for request_id in emulator.request_ids():
        job = emulator.job(request_id)
        assert job is not None
        jobs_by_image[job.image] = request_id
    resolved = unsent = 0
    with SQLiteJournal(journal_path) as journal:
        for entry in journal.entries(JournalState.AMBIGUOUS):
            request_id = jobs_by_image.get(entry.request.image)
            if request_id is None:
                unsent += 1  # the POST never reached the gateway
            else:
                journal.resolve_ambiguous(entry.index, request_id)
                resolved += 1
    return resolved, unsent


def test_sigkill_at_random_moments_then_resume_pays_once_and_loses_nothing(
    tmp_path: Path,
) -> None:
    rng = random.Random(20260521)
    config = EmulatorConfig(
        time_scale=0.1,
        seed=7,
        error_rate=0.0,
        cold_start_rate=0.0,
        latency=0.01,
        latency_jitter=0.05,
    )
    started = time.monotonic()
    with running_emulator(config) as gateway:
        names = sorted(SAMPLES)
        images = [f"{gateway.sample_url(names[n % len(names)])}?n={n}" for n in range(INPUTS)]
        (tmp_path / "inputs.txt").write_text("\n".join(images))
        (tmp_path / "out").mkdir()
        journal_path = tmp_path / "batch.journal"

        landed: collections.Counter[str] = collections.Counter()
        part_files = 0
        for kill in range(KILLS):
            first_new = journal_counts(journal_path)["first_new"]
            driver = Driver(gateway, tmp_path, backend=rng.choice(["asyncio", "trio"]))
            assert driver.wait_for(lambda line: line == "ready", 30), driver.lines
            mode = ("random", "submit", "download")[kill % 3]
            if not kill_somewhere(driver, mode, first_new, rng):
                pytest.fail(f"the batch finished after {kill} kills: make it longer")
            counts = journal_counts(journal_path)
            parts = len(list((tmp_path / "out").glob(".*.part")))
            landed.update(
                phase
                for phase, hit in (
                    ("submit", counts["pending"] > 0),
                    ("poll", counts["submitted"] > 0),
                    ("download", bool(driver.downloads_in_flight()) or parts > part_files),
                    ("nothing", not any(counts[s] for s in ("pending", "submitted"))),
                )
                if hit
            )
            part_files = parts

        finished_by_kills = counts["completed"]
        resolved, unsent = settle_ambiguous_inputs(gateway, journal_path)
        last = Driver(gateway, tmp_path, backend="asyncio", resubmit=True, max_in_flight=16)
        assert 0 == last.finish(120), last.lines[-5:]
        assert "done" == last.lines[-2]

        stats = gateway.emulator.stats()

    elapsed = time.monotonic() - started
    print(
        f"\n{KILLS} kills ({finished_by_kills}/{INPUTS} inputs finished), then a run to the end; "
        f"{elapsed:.1f} s; kills landed during "
        f"{dict(landed)}; "
        f"ambiguous submits: {resolved} had created a job (resolved), {unsent} had not "
        f"(resubmitted); {part_files} .part files left by kills mid-download"
    )
    assert all(landed[phase] >= 3 for phase in ("submit", "poll", "download")), landed

    # Every input has exactly one result, saved under its final name.
    with SQLiteJournal(journal_path) as journal:
        entries = journal.entries()
    assert list(range(INPUTS)) == [entry.index for entry in entries]
    assert {JournalState.COMPLETED} == {entry.state for entry in entries}
    assert [str(tmp_path / "out" / f"{n}.png") for n in range(INPUTS)] == [
        entry.saved_to for entry in entries
    ]
    assert len({entry.request_id for entry in entries}) == INPUTS

    # One POST per input URL, ambiguous ones included: nothing was paid twice.
    assert dict.fromkeys(images, 1) == dict(stats.submits_by_image)
    assert (INPUTS, INPUTS) == (stats.submits_received, stats.jobs_created)

    # Every output is a whole PNG of the right size; partial files only under temporary names.
    for n, image in enumerate(images):
        width, height = SAMPLES[image.rsplit("/", 1)[1].split("?")[0]]
        with Image.open(tmp_path / "out" / f"{n}.png") as png:
            png.verify()
        with Image.open(tmp_path / "out" / f"{n}.png") as png:
            assert ("PNG", (width * SCALE, height * SCALE)) == (png.format, png.size)
    final = {path.name for path in (tmp_path / "out").iterdir() if not path.name.startswith(".")}
    assert {f"{n}.png" for n in range(INPUTS)} == final
