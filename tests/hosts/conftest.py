"""Fixtures of the image-host tests: a real S3-compatible store and the emulator, on loopback.

The store (`s3_server`) is started once per test session; each test gets credentials
through the environment, the way users give them (`aws_env`), and its own key prefix.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from s3_server import S3Server, running_s3_server

from real_esrgan_async.testing import EmulatorConfig, RunningEmulator, running_emulator

_prefixes = itertools.count()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """SeaweedFS on 127.0.0.1 with one bucket and one set of credentials."""
    with running_s3_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture
def aws_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The store's credentials in the standard AWS variables, and nothing else of the shell's."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    return s3_server


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own: objects of other tests never collide with its."""
    return f"test-{next(_prefixes)}/"


@pytest.fixture
def emulator() -> Iterator[RunningEmulator]:
    """The gateway emulator; it fetches inputs, and only from loopback (where the store is)."""
    with running_emulator(EmulatorConfig(time_scale=0.002, seed=7, error_rate=0.0)) as running:
        yield running
