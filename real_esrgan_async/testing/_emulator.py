"""``Emulator``: the state of one emulated gateway and the ASGI app that serves it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import attrs
from starlette.types import ASGIApp

from ._app import build_app
from ._config import EmulatorConfig
from ._core import Core
from ._faults import install_drop_log_filter
from ._jobs import JobStatus, status_at
from ._samples import FAILURE_SAMPLES, SAMPLE_NAMES, sample_url
from ._stats import EmulatorStats

__all__ = ["Emulator", "JobSnapshot"]


@attrs.frozen(kw_only=True)
class JobSnapshot:
    """One job as the emulator sees it at the moment of the call.

    Attributes:
        request_id: The id the submit returned.
        status: The status a status call would return now.
        image: The input URL.
        scale: The requested scale.
        face_enhance: Whether face enhancement was requested.
        error: The job's error message, once FAILED or ERROR.
        webhook_url: The callback URL, if any.
        webhook_mode: ``"terminal"`` or ``"sync"`` with a webhook, else None.
    """

    request_id: str
    status: JobStatus
    image: str
    scale: int
    face_enhance: bool
    error: str | None
    webhook_url: str | None
    webhook_mode: str | None


class Emulator:
    """An in-process emulator of the hosted Real-ESRGAN gateway.

    Serve ``app`` with any ASGI server (lifespan enabled), or use ``running_emulator()``. The
    methods are thread-safe: a test may read ``stats()`` while the server runs in another thread.

    Args:
        config: The knobs; the defaults behave like the real gateway.

    Attributes:
        FAILURE_SAMPLES: The failure samples served under ``/samples/`` (name -> what a job on
            it does), for a banner or a help text to list; ``sample_url`` builds their URLs.
    """

    FAILURE_SAMPLES: ClassVar[Mapping[str, str]] = FAILURE_SAMPLES

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self._core = Core(config if config is not None else EmulatorConfig())
        self._app = build_app(self._core)
        install_drop_log_filter()

    @property
    def config(self) -> EmulatorConfig:
        """The knobs this emulator was made with."""
        return self._core.config

    @property
    def app(self) -> ASGIApp:
        """The ASGI application (one server at a time)."""
        return self._app

    def stats(self) -> EmulatorStats:
        """A consistent snapshot of every counter, settled up to now."""
        with self._core.locked() as state:
            return state.snapshot(self._core.now())

    def job(self, request_id: str) -> JobSnapshot | None:
        """The job ``request_id`` as it is now, or None if there is no such job."""
        now = self._core.now()
        with self._core.locked() as state:
            state.advance(now)
            job = state.jobs.get(request_id)
            if job is None:
                return None
            status = status_at(job, now)
            return JobSnapshot(
                request_id=job.request_id,
                status=status,
                image=job.image,
                scale=job.scale,
                face_enhance=job.face_enhance,
                error=job.error if status in ("FAILED", "ERROR") else None,
                webhook_url=job.webhook_url,
                webhook_mode=job.webhook_mode,
            )

    def request_ids(self) -> list[str]:
        """Every job's id, in creation order."""
        with self._core.locked() as state:
            return list(state.jobs)

    def top_up(self, amount_usd: float) -> None:
        """Add ``amount_usd`` to the wallet.

        Raises:
            ValueError: If the amount is negative or the wallet is unlimited.
        """
        with self._core.locked() as state:
            state.wallet.top_up(amount_usd)

    def reset(self) -> None:
        """Forget every job and counter and restore the configured wallet and seed.

        Callbacks still scheduled for forgotten jobs are not sent.
        """
        self._core.reset()

    @staticmethod
    def sample_urls(base_url: str) -> list[str]:
        """The URLs of the bundled sample images on the emulator at ``base_url``.

        Failure samples are not listed: ``oversized.png`` (1080x2400, over the pixel limit),
        ``corrupt.png`` (not an image) and ``missing.png`` (404) live under the same prefix
        (``FAILURE_SAMPLES``); ``GET /samples/`` lists both kinds.
        """
        return [sample_url(base_url, name) for name in SAMPLE_NAMES]

    @staticmethod
    def sample_url(base_url: str, name: str) -> str:
        """The URL of one sample, bundled or failure sample, on the emulator at ``base_url``.

        Raises:
            ValueError: If ``name`` is neither.
        """
        if name not in SAMPLE_NAMES and name not in FAILURE_SAMPLES:
            known = ", ".join((*SAMPLE_NAMES, *FAILURE_SAMPLES))
            raise ValueError(f"unknown sample {name!r}; known samples: {known}")
        return sample_url(base_url, name)
