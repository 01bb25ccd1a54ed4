"""``real-esrgan batch --store``: one paid job per input URL across every batch sharing a store."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import KEY, RunCli, fast_config, gateway_args, png_size, sample_size
from fleet.valkey_server import free_port

from real_esrgan_async.cli._keyed import idempotency_key, resubmit_key
from real_esrgan_async.testing import RunningEmulator, running_emulator


def test_a_key_names_the_url_scale_and_face_enhancement_and_nothing_local() -> None:
    url = "https://images.example/cat.jpg?sig=abc"
    key = idempotency_key(url, scale=2, face_enhance=False)
    assert key == idempotency_key(url, scale=2, face_enhance=False)  # the same on any machine
    assert key.startswith("real-esrgan-cli:")
    assert key.endswith(":x2")
    assert "cat.jpg" not in key  # hashed: a signed URL's secrets stay out of key names
    others = {
        idempotency_key(url, scale=4, face_enhance=False),
        idempotency_key(url, scale=2, face_enhance=True),
        idempotency_key(url + "&v=2", scale=2, face_enhance=False),
    }
    assert 3 == len(others - {key})
    assert key == resubmit_key(key, 0)
    assert f"{key}:resubmit-2" == resubmit_key(key, 2)


def _listing(path: Path, urls: list[str]) -> Path:
    path.write_text("\n".join(urls) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_an_sqlite_store_pays_once_per_url_and_a_rerun_pays_nothing(
    run_cli: RunCli, tmp_path: Path, backend: str
) -> None:
    with running_emulator(fast_config()) as gateway:
        samples = gateway.sample_urls()[:3]
        urls = [*samples, samples[0]]  # a duplicate within one list: one job
        listing = _listing(tmp_path / "urls.txt", urls)
        store = tmp_path / "keys.db"
        args = ["batch", listing, "--scale", "2", "--store", store, "--backend", backend]

        first = run_cli(*args, "--out", tmp_path / "a", "--json", *gateway_args(gateway))
        paid_first = gateway.emulator.stats().jobs_created
        rerun = run_cli(
            *args[:5], f"sqlite:///{store}", *args[6:], "--out", tmp_path / "b", "--json",
            *gateway_args(gateway),
        )  # fmt: skip
        paid_after_rerun = gateway.emulator.stats().jobs_created

    assert (0, 0) == (first.code, rerun.code), first.err + rerun.err
    assert 3 == paid_first
    assert 3 == paid_after_rerun  # the rerun got every recorded result: nothing paid
    results = first.json()["results"]
    assert results[0]["request_id"] == results[3]["request_id"]
    assert [r["request_id"] for r in results] == [r["request_id"] for r in rerun.json()["results"]]
    for out in (tmp_path / "a", tmp_path / "b"):
        assert 4 == len(list(out.iterdir()))  # every input saved, the duplicate too
    assert not (tmp_path / "a.urls.txt.journal").exists()  # the store replaces the journal


def _batch(
    gateway: RunningEmulator, listing: Path, out: Path, store: str, backend: str
) -> list[str]:
    return [
        sys.executable, "-c", "import sys; from real_esrgan_async.cli import main; exit(main())",
        "batch", str(listing), "--scale", "2", "--out", str(out), "--store", store,
        "--concurrency", "4", "--json", "--backend", backend, *gateway_args(gateway),
    ]  # fmt: skip


@pytest.mark.timeout(120)
def test_two_batches_on_one_redis_with_overlapping_lists_pay_once_per_url(
    redis_url: str, tmp_path: Path
) -> None:
    """Two ``batch`` processes (one on asyncio, one on trio) fed lists that share half their
    URLs, at the same time: the emulator counts one job per distinct URL, and both runs
    save every input of their list."""
    with running_emulator(fast_config(time_scale=0.01)) as gateway:
        base = gateway.sample_url("tiny.png")
        urls = [f"{base}?n={n}" for n in range(12)]
        lists = [urls[:8], urls[4:]]  # 4 URLs in both
        runs = [
            subprocess.Popen(
                _batch(
                    gateway,
                    _listing(tmp_path / f"urls-{n}.txt", items),
                    tmp_path / f"out-{n}",
                    redis_url,
                    backend,
                ),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for n, (items, backend) in enumerate(zip(lists, ["asyncio", "trio"], strict=True))
        ]
        outputs = [run.communicate(timeout=100) for run in runs]
        paid = gateway.emulator.stats().jobs_created
        jobs = [gateway.emulator.job(rid) for rid in gateway.emulator.request_ids()]
        width, height = sample_size(gateway, "tiny.png")

    for run, (out, err) in zip(runs, outputs, strict=True):
        assert 0 == run.returncode, err.decode()
        assert KEY.encode() not in out + err
    assert 12 == paid  # 16 inputs, 12 distinct URLs
    assert sorted(urls) == sorted(job.image for job in jobs if job is not None)
    documents = [json.loads(out) for out, _ in outputs]
    shared = {
        entry["url"]: entry["request_id"]
        for entry in documents[0]["results"]
        if entry["url"] in lists[1]
    }
    assert 4 == len(shared)
    for entry in documents[1]["results"]:
        if entry["url"] in shared:
            assert shared[entry["url"]] == entry["request_id"]  # the same job, paid once
    for n, items in enumerate(lists):
        saved = sorted((tmp_path / f"out-{n}").iterdir())
        assert len(items) == len(saved)
        assert (2 * width, 2 * height) == png_size(saved[0])


def test_an_unreachable_redis_exits_2_naming_it_without_its_password(
    run_cli: RunCli, shared_gateway: RunningEmulator, tmp_path: Path
) -> None:
    listing = _listing(tmp_path / "urls.txt", shared_gateway.sample_urls()[:1])
    url = f"redis://worker:hunter2-s3cret@127.0.0.1:{free_port()}/0"

    result = run_cli(
        "batch", listing, "--store", url, "--out", tmp_path / "out",
        *gateway_args(shared_gateway), secrets=(KEY, "hunter2-s3cret"),
    )  # fmt: skip

    assert 2 == result.code
    assert (
        "real-esrgan: error: cannot reach the idempotency store at redis://worker:***@127.0.0.1:"
        in result.err
    )
    assert "" == result.out
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--store", "ftp://host/keys"], "--store must be redis://HOST:PORT/DB"),
        (["--store", "sqlite:///"], "--store needs a file path"),
        (["--store", "k.db", "--resubmit-ambiguous"], "--resubmit-ambiguous applies to a journal"),
        (["--store", "k.db", "--journal", "j"], "not allowed with argument --store"),
        (["--store", "k.db", "--no-journal"], "not allowed with argument"),
    ],
)
def test_store_usage_errors_exit_2_before_anything_is_sent(
    run_cli: RunCli, tmp_path: Path, extra: list[str], message: str
) -> None:
    listing = _listing(tmp_path / "urls.txt", ["https://images.example/cat.jpg"])

    result = run_cli("batch", listing, *extra, "--base-url", "http://127.0.0.1:9", "--api-key", KEY)

    assert 2 == result.code
    assert message in result.err


def test_a_job_that_ends_error_is_resubmitted_under_a_key_of_its_own(
    run_cli: RunCli, tmp_path: Path
) -> None:
    """Every job ends ERROR (not charged): the input is tried 3 times (the default policy),
    each attempt under ``<key>:resubmit-<n>``; a rerun finds all three keys and pays nothing."""
    with running_emulator(fast_config(error_rate=1.0)) as gateway:
        listing = _listing(tmp_path / "urls.txt", [gateway.sample_url("tiny.png")])
        args = ["batch", listing, "--store", tmp_path / "keys.db", "--out", tmp_path / "out"]
        first = run_cli(*args, "--json", *gateway_args(gateway))
        paid = gateway.emulator.stats().jobs_created
        rerun = run_cli(*args, "--json", *gateway_args(gateway))
        paid_after_rerun = gateway.emulator.stats().jobs_created

    assert (1, 1) == (first.code, rerun.code)
    assert 3 == paid == paid_after_rerun
    entry = first.json()["results"][0]
    assert ("errored", "JobSystemError") == (entry["status"], entry["error"]["type"])
    assert entry["request_id"] == rerun.json()["results"][0]["request_id"]


def test_a_refused_key_or_input_with_a_store_is_reported_as_without_one(
    run_cli: RunCli, shared_gateway: RunningEmulator, tmp_path: Path
) -> None:
    wrong = "wrong-key-0123456789abcdef"
    listing = _listing(
        tmp_path / "urls.txt", [shared_gateway.sample_url("tiny.png"), "ftp://example.com/a.png"]
    )
    store = ["--store", tmp_path / "keys.db", "--out", tmp_path / "out"]

    refused = run_cli(
        "batch", listing, *store, *gateway_args(shared_gateway, wrong), secrets=(KEY, wrong)
    )
    rejected = run_cli("batch", listing, *store, "--json", *gateway_args(shared_gateway))

    assert 3 == refused.code
    assert "real-esrgan: error: the run stopped: gateway answered 401" in refused.err
    assert 1 == rejected.code
    statuses = [entry["status"] for entry in rejected.json()["results"]]
    assert ["completed", "rejected"] == statuses


def test_an_unreachable_gateway_with_a_store_exits_4(run_cli: RunCli, tmp_path: Path) -> None:
    listing = _listing(tmp_path / "urls.txt", ["https://images.example/a.png"] * 3)

    result = run_cli(
        "batch", listing, "--store", tmp_path / "keys.db", "--no-preflight",
        "--out", tmp_path / "out", "--base-url", f"http://127.0.0.1:{free_port()}",
        "--api-key", KEY,
    )  # fmt: skip

    assert 4 == result.code
    assert "cannot reach the gateway at http://127.0.0.1:" in result.err


def _age_every_record(store: Path, seconds: float) -> None:
    """Make every finished key of an SQLite store `seconds` older (its output URLs expired)."""
    with sqlite3.connect(store) as db:
        for key, value in db.execute("SELECT key, value FROM keys").fetchall():
            record = json.loads(value)
            record["finished_at"] -= seconds
            db.execute("UPDATE keys SET value = ? WHERE key = ?", (json.dumps(record), key))


def test_a_rerun_after_the_output_urls_expired_keeps_the_saved_outputs(
    run_cli: RunCli, shared_gateway: RunningEmulator, tmp_path: Path
) -> None:
    """Over an hour later the recorded results cannot be downloaded again: an output already
    on disk counts as saved (exit 0, nothing paid); a missing one is an OutputExpiredError."""
    urls = [shared_gateway.sample_url("tiny.png"), shared_gateway.sample_url("gray.png")]
    listing = _listing(tmp_path / "urls.txt", urls)
    store = tmp_path / "keys.db"
    out = tmp_path / "out"
    args = ["batch", listing, "--store", store, "--out", out, "--json"]
    assert 0 == run_cli(*args, *gateway_args(shared_gateway)).code
    _age_every_record(store, 2 * 3600)
    paid = shared_gateway.emulator.stats().jobs_created

    kept = run_cli(*args, *gateway_args(shared_gateway))
    sorted(out.iterdir())[1].unlink()
    lost = run_cli(*args, *gateway_args(shared_gateway))

    assert paid == shared_gateway.emulator.stats().jobs_created  # nothing paid again
    assert 0 == kept.code, kept.err
    assert [True, True] == [entry["ok"] for entry in kept.json()["results"]]
    assert 1 == lost.code
    entry = lost.json()["results"][1]
    assert "OutputExpiredError" == entry["error"]["type"]
    assert entry["request_id"] in entry["error"]["message"]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_an_ambiguous_submit_is_never_paid_again_by_a_rerun(
    run_cli: RunCli, tmp_path: Path, backend: str
) -> None:
    """The gateway creates the job, then the connection drops before its answer: the input is
    reported ambiguous, and a rerun (any machine on the store) reports it again, paying nothing."""
    with running_emulator(fast_config(drop_after_create_rate=1.0)) as gateway:
        listing = _listing(tmp_path / "urls.txt", [gateway.sample_url("tiny.png")])
        args = [
            "batch", listing, "--store", tmp_path / "keys.db", "--out", tmp_path / "out",
            "--json", "--backend", backend, *gateway_args(gateway),
        ]  # fmt: skip
        first = run_cli(*args)
        rerun = run_cli(*args)
        paid = gateway.emulator.stats().jobs_created

    assert (1, 1) == (first.code, rerun.code)
    assert 1 == paid
    for result in (first, rerun):
        entry = result.json()["results"][0]
        assert ("errored", "AmbiguousSubmitError") == (entry["status"], entry["error"]["type"])
