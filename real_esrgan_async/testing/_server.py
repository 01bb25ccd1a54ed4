"""Serving the emulator with uvicorn: in a background thread for tests, or blocking for the CLI.

The background server runs its own asyncio loop in its own thread, so it works whatever the
caller runs (plain sync code, asyncio, trio). It only ever listens on a loopback address: the
emulator downloads whatever URL a submit names and accepts a published default key, so exposing
it to a network would make it an open proxy.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
from collections.abc import Iterator

import attrs
import uvicorn

from ._config import EmulatorConfig
from ._emulator import Emulator

__all__ = ["RunningEmulator", "running_emulator", "serve"]

_STARTUP_POLL = 0.005
_SHUTDOWN_TIMEOUT = 10.0


@attrs.frozen
class RunningEmulator:
    """A served emulator.

    Attributes:
        emulator: The emulator being served (counters, wallet, reset).
        host: The loopback address it listens on.
        port: The port it listens on (the real one, also when 0 was asked for).
        api_key: A key it accepts.
    """

    emulator: Emulator
    host: str
    port: int
    api_key: str

    @property
    def base_url(self) -> str:
        """``http://host:port``, with no trailing slash."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def sample_urls(self) -> list[str]:
        """The URLs of the bundled sample images."""
        return self.emulator.sample_urls(self.base_url)

    def sample_url(self, name: str) -> str:
        """The URL of one sample (bundled, or ``oversized.png``/``corrupt.png``/``missing.png``)."""
        return self.emulator.sample_url(self.base_url, name)


def _check_loopback(host: str) -> None:
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"the emulator only listens on loopback addresses (127.0.0.1, ::1, localhost), "
            f"got {host!r}"
        )


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only disables Nagle (TCP_NODELAY) on connections whose
    # socket says it is TCP, and accepted sockets inherit the listener's proto. With proto 0,
    # every response on a kept-alive connection waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _run_quietly(server: uvicorn.Server, sock: socket.socket) -> None:
    # uvicorn reports a failed startup (logged already) with sys.exit(3); in a thread that would
    # surface as an unhandled thread exception. running_emulator() notices the dead thread.
    with contextlib.suppress(SystemExit):
        server.run(sockets=[sock])


def _as_emulator(config: EmulatorConfig | Emulator | None) -> Emulator:
    return config if isinstance(config, Emulator) else Emulator(config)


@contextlib.contextmanager
def running_emulator(
    config: EmulatorConfig | Emulator | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout: float = 10.0,
) -> Iterator[RunningEmulator]:
    """Serve an emulator on loopback in a background thread for the duration of a ``with``.

    Args:
        config: The knobs, or an existing ``Emulator`` to serve (not served anywhere else).
        host: A loopback address.
        port: The port; 0 picks a free one.
        startup_timeout: Seconds to wait for the server to listen.

    Yields:
        The served emulator, its ``base_url`` and an ``api_key``.

    Raises:
        ValueError: If ``host`` is not a loopback address.
        RuntimeError: If the server does not start.
    """
    _check_loopback(host)
    emulator = _as_emulator(config)
    sock = _bind(host, port)
    bound_port: int = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            emulator.app,
            lifespan="on",
            loop="asyncio",
            http="h11",
            ws="none",
            # Leave the process's logging configuration alone: this runs inside other people's
            # test suites.
            log_config=None,
            log_level=None,
            access_log=False,
            timeout_graceful_shutdown=5,
        )
    )
    thread = threading.Thread(
        target=_run_quietly,
        args=(server, sock),
        name=f"real-esrgan-emulator:{bound_port}",
        daemon=True,
    )
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the emulator's server stopped during startup (see its log)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the emulator did not start within {startup_timeout} s")
            time.sleep(_STARTUP_POLL)
        yield RunningEmulator(
            emulator=emulator,
            host=host,
            port=bound_port,
            api_key=min(emulator.config.api_keys),
        )
    finally:
        server.should_exit = True
        thread.join(_SHUTDOWN_TIMEOUT)
        sock.close()


def serve(
    config: EmulatorConfig | Emulator | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
) -> None:
    """Serve an emulator on loopback until interrupted: for the ``emulator`` command.

    Returns after a graceful shutdown on Ctrl+C (SIGINT); SIGTERM shuts down gracefully too.

    Args:
        config: The knobs, or an existing ``Emulator``.
        host: A loopback address.
        port: The port (0 picks a free one; uvicorn logs which).
        log_level: uvicorn's log level.

    Raises:
        ValueError: If ``host`` is not a loopback address.
    """
    _check_loopback(host)
    emulator = _as_emulator(config)
    server = uvicorn.Server(
        uvicorn.Config(
            emulator.app,
            host=host,
            port=port,
            lifespan="on",
            loop="asyncio",
            http="h11",
            ws="none",
            log_level=log_level,
        )
    )
    # uvicorn shuts down gracefully on Ctrl+C, then re-raises the interrupt; like uvicorn.run(),
    # treat it as the normal end of serving.
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
