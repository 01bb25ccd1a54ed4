"""The README's recipes run as written: testing with the emulator, FastAPI, fan-out, retries.

Each test takes a ```python block from the README verbatim and runs it against the emulator
(or the fake gateway), changing nothing but what the prose says is yours to provide.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import respx
import uvicorn
from fake_gateway import BASE, FAST_POLL, FAST_RETRY, FakeGateway

from real_esrgan_async import AsyncRealESRGAN
from real_esrgan_async.testing import EmulatorConfig, running_emulator

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)


def python_block(heading: str, *, containing: str = "") -> str:
    """The first ```python block of the section `heading` that contains `containing`."""
    section = README.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    for block in re.findall(r"```python\n(.*?)```", section, re.DOTALL):
        if containing in block:
            return str(block)
    raise AssertionError(f"no python block containing {containing!r} under {heading!r}")


def run_block(block: str, **givens: Any) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "readme_recipe", **givens}
    exec(compile(block, "README.md", "exec"), namespace)
    return namespace


# Testing your app with the emulator ----------------------------------------------------------


@pytest.mark.timeout(120)
def test_the_testing_recipe_passes_under_plain_pytest_on_both_backends(tmp_path: Path) -> None:
    """Saved as a file and run by a bare pytest (no conftest, no config): 2 passed."""
    (tmp_path / "test_thumbnailer.py").write_text(
        python_block("## Testing your app with the emulator"), encoding="utf-8"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_thumbnailer.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert 0 == result.returncode, result.stdout + result.stderr
    assert "2 passed" in result.stdout


# FastAPI with webhooks -------------------------------------------------------------------------


@contextlib.contextmanager
def serving(app: Any, sock: socket.socket) -> Iterator[None]:
    """Serve `app` with uvicorn on `sock` in a thread of its own."""
    server = uvicorn.Server(
        uvicorn.Config(app, lifespan="on", log_config=None, log_level=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive(), "the app stopped during startup"
            assert time.monotonic() < deadline, "the app did not start in 10 s"
            time.sleep(0.01)
        yield
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.mark.anyio
async def test_the_fastapi_recipe_imports_without_a_key_and_maps_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("REAL_ESRGAN_API_KEY", raising=False)
    recipe = run_block(python_block("## FastAPI with webhooks"))  # no key: imports fine
    config = EmulatorConfig(time_scale=0.001, seed=2, error_rate=0.0, allow_http_webhooks=True)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with running_emulator(config) as gateway:

        def make_client() -> AsyncRealESRGAN:  # the recipe's, pointed at the emulator
            return AsyncRealESRGAN(
                gateway.api_key,
                base_url=gateway.base_url,
                webhook_url=f"{url}/hooks/real-esrgan",
                allow_insecure_webhooks=True,  # http to loopback: tests only
            )

        recipe["make_client"] = make_client
        with serving(recipe["app"], sock):
            async with httpx.AsyncClient(base_url=url, timeout=30) as user:
                ok = await user.post("/upscale", params={"image": gateway.sample_url("tiny.png")})
                failed = await user.post(
                    "/upscale", params={"image": gateway.sample_url("corrupt.png")}
                )
                bad_scale = await user.post(
                    "/upscale", params={"image": gateway.sample_url("tiny.png"), "scale": 7}
                )
                bad_url = await user.post("/upscale", params={"image": "not a url"})
        created = gateway.emulator.stats().jobs_created
        delivered = gateway.emulator.stats().webhooks_delivered
    assert 200 == ok.status_code, ok.text
    assert ok.json()["media_url"].startswith(gateway.base_url)
    assert 502 == failed.status_code, failed.text
    detail = failed.json()["detail"]
    request_id = re.search(r"real-esrgan_\w+", detail)
    assert request_id is not None, detail
    assert 1 == detail.count(request_id.group(0))  # the job id is said once
    assert (422, 422) == (bad_scale.status_code, bad_url.status_code)
    assert "scale must be one of" in bad_scale.json()["detail"]
    assert 2 == created  # the bad inputs cost nothing
    assert 2 <= delivered  # the jobs reported through the mounted receiver


# Fan out from a crawler; per-job progress -------------------------------------------------------


class Page:
    def __init__(self, image_urls: list[str]) -> None:
        self.image_urls = image_urls


def emulator_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, base_url: str, key: str) -> None:
    """What the recipes read from the environment, and an out/ folder to write in."""
    monkeypatch.setenv("REAL_ESRGAN_API_KEY", key)
    monkeypatch.setenv("REAL_ESRGAN_BASE_URL", base_url)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()


@pytest.mark.timeout(120)
def test_the_crawler_recipe_saves_every_page_image(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run as a script (its own ``anyio.run``), with a crawler of two pages as `fetch_pages`."""
    with running_emulator(EmulatorConfig(time_scale=0.001, seed=4, error_rate=0.0)) as gateway:
        emulator_env(monkeypatch, tmp_path, gateway.base_url, gateway.api_key)
        samples = [gateway.sample_url(name) for name in ("tiny.png", "gray.png", "photo.jpg")]

        async def fetch_pages() -> AsyncIterator[Page]:
            yield Page(samples[:2])
            yield Page(samples[2:])

        run_block(python_block("## Fan out from a crawler"), fetch_pages=fetch_pages)
    assert ["0.png", "1.png", "2.png"] == sorted(p.name for p in (tmp_path / "out").iterdir())
    assert capsys.readouterr().out.startswith("Stats(submitted=3, completed=3,")


@pytest.mark.timeout(120)
def test_the_progress_recipe_shows_each_job_finished(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with running_emulator(EmulatorConfig(time_scale=0.001, seed=6, error_rate=0.0)) as gateway:
        emulator_env(monkeypatch, tmp_path, gateway.base_url, gateway.api_key)
        recipe = run_block(python_block("## Using the client", containing="on_event=show"))
        anyio.run(recipe["main"], [gateway.sample_url("tiny.png")] * 3)
        created = gateway.emulator.request_ids()
    assert dict.fromkeys(created, "COMPLETED") == recipe["shown"]
    assert 3 == len(list((tmp_path / "out").iterdir()))


# The retry recipe ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_retry_recipe_retries_only_errors_and_keeps_the_original_indices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the fake gateway, whose URLs script their jobs: ERROR always, FAILED, COMPLETED."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    upscale_all: Callable[..., Any] = run_block(
        python_block("## Fan out from a crawler", containing="def upscale_all")
    )["upscale_all"]
    urls = [
        "https://img.test/ok/0.png",
        "https://img.test/error/1.png",
        "https://img.test/fail/2.png",
        "ftp://img.test/rejected.png",
        "https://img.test/ok/4.png",
    ]
    with respx.mock(assert_all_called=False) as router:
        fake = FakeGateway(router)
        router.get(url__startswith="https://cdn.test/").mock(
            return_value=httpx.Response(200, content=PNG, headers={"Content-Type": "image/png"})
        )
        async with AsyncRealESRGAN(
            "key", base_url=BASE, retry=FAST_RETRY, poll=FAST_POLL, resubmit=False
        ) as client:
            failed = await upscale_all(client, urls)
    assert [1, 2, 3] == sorted(failed)
    assert ("JobSystemError", "JobFailedError") == (failed[1][:14], failed[2][:14])
    assert ["0.png", "4.png"] == sorted(p.name for p in (tmp_path / "out").iterdir())
    posts = {url: fake.posts_per_image[url] for url in urls}
    assert [1, 2, 1, 0, 1] == list(posts.values())  # only the ERROR input went again
