"""``batch --store``: each input under an idempotency key, shared by every process on the store.

**The key.** An input's key is derived from what its job would be, and from
nothing local: ``real-esrgan-cli:<sha256 of the URL>:x<scale>`` (plus
``:face`` with ``--face-enhance``). So every ``batch`` process that shares the
store, on any machine, fed any file in any order, names one input the same way
and pays for it at most once; a rerun finds each key where the last run left
it (in flight: waited on; finished: its recorded result; ambiguous: reported).
A job that ends ERROR (not charged) is resubmitted as the client's
`ResubmitPolicy` says, under ``<key>:resubmit-<n>``: still one paid attempt per
key across the fleet.

**The run.** `KeyedRun` has the shape of the `UpscaleRun` that
`AsyncRealESRGAN.upscale_many` returns (an async context manager and iterator
of `Outcome`, in completion order, with `unconsumed_outcomes` and
`unfinished_request_ids`), so that the batch runner consumes either the same
way. It drives the client's public ``upscale(..., idempotency_key=...)``, one
task per input in a task group the run owns, at most `max_in_flight` inputs
taken and not yet handed over. When ``upscale_many`` takes an
``idempotency_key`` callable, `_batch._Runner.consume` can call it with
`idempotency_key` instead of building this run: the one line that changes.

Errors that end the run (the key refused, an empty wallet, the store lost, the
batch file unreadable) stop the pulling and give the input that met them no
outcome (nothing was paid for it); jobs already in flight are still awaited and
handed over, then the error is raised, as ``upscale_many`` does for a 402.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Self

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from real_esrgan_async import (
    AsyncRealESRGAN,
    AuthenticationError,
    InsufficientBalanceError,
    InvalidRequestError,
    JobSystemError,
    Outcome,
    OutputExpiredError,
    PermissionDeniedError,
    RealESRGANError,
    Status,
    StoreError,
    UpscaleRequest,
)
from real_esrgan_async._resubmit import resubmit_delay

__all__ = ["KEY_NAMESPACE", "KeyedRun", "idempotency_key", "resubmit_key"]

#: The first part of every key the command derives (a Python worker can derive the same).
KEY_NAMESPACE = "real-esrgan-cli"
#: Errors after which every further submit would fail alike, or could pay twice.
_ENDS_RUN = (AuthenticationError, PermissionDeniedError, InsufficientBalanceError)


def idempotency_key(url: str, *, scale: int, face_enhance: bool) -> str:
    """The key of the job that upscales `url` so: the same on every machine.

    ``real-esrgan-cli:<sha256 of the URL's UTF-8 bytes, hex>:x<scale>``, and
    ``:face`` with face enhancement. A hash keeps keys short (a signed URL
    can be kilobytes) and keeps the URLs themselves out of the store's key names.
    """
    digest = hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{KEY_NAMESPACE}:{digest}:x{scale}" + (":face" if face_enhance else "")


def resubmit_key(key: str, resubmits: int) -> str:
    """The key of the `resubmits`-th resubmission of `key`'s input (0: `key` itself)."""
    return key if resubmits == 0 else f"{key}:resubmit-{resubmits}"


class KeyedRun:
    """Upscale a stream of URLs, each under its idempotency key; yield one `Outcome` each.

    Args:
        client: An open client with a ``store``.
        images: The URLs, pulled lazily; the n-th pulled is ``Outcome.index == n``.
        scale: Upscaling factor.
        face_enhance: Apply face enhancement.
        max_in_flight: Inputs taken and not yet handed over, at most.
        job_timeout: Seconds to wait on each job (per attempt), or None.
    """

    def __init__(
        self,
        client: AsyncRealESRGAN,
        images: AsyncIterator[str],
        *,
        scale: int,
        face_enhance: bool,
        max_in_flight: int,
        job_timeout: float | None = None,
    ) -> None:
        self._client = client
        self._images = images
        self._scale = scale
        self._face_enhance = face_enhance
        self._job_timeout = job_timeout
        self._slots = anyio.Semaphore(max_in_flight)
        send, receive = anyio.create_memory_object_stream[Outcome](math.inf)
        self._send: MemoryObjectSendStream[Outcome] = send
        self._receive: MemoryObjectReceiveStream[Outcome] = receive
        self._group: anyio.abc.TaskGroup | None = None
        self._error: BaseException | None = None
        self._unconsumed: tuple[Outcome, ...] = ()

    @property
    def unfinished_request_ids(self) -> tuple[str, ...]:
        """Always empty: the client itself keeps every job it paid for or waited on
        and has not seen finish (`AsyncRealESRGAN.unfinished_request_ids`)."""
        return ()

    @property
    def unconsumed_outcomes(self) -> tuple[Outcome, ...]:
        """Outcomes finished but not handed over when the run was left."""
        return self._unconsumed

    async def __aenter__(self) -> Self:
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        self._group.start_soon(self._feed)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        group, self._group = self._group, None
        assert group is not None
        group.cancel_scope.cancel()  # the consumer left: nothing more is pulled or awaited
        try:
            if exc is None or isinstance(exc, anyio.get_cancelled_exc_class()):
                return await group.__aexit__(exc_type, exc, tb)
            # The consumer's own error (the run's, or one it raised) goes on as it is,
            # not wrapped in an ExceptionGroup by the task group it passes through.
            await group.__aexit__(None, None, None)
            return None
        finally:
            left = []
            while True:
                try:
                    left.append(self._receive.receive_nowait())
                except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                    break
            self._unconsumed = tuple(left)
            self._receive.close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Outcome:
        try:
            outcome = await self._receive.receive()
        except anyio.EndOfStream:
            if self._error is not None:
                error, self._error = self._error, None
                raise error from None
            raise StopAsyncIteration from None
        self._slots.release()
        return outcome

    async def _feed(self) -> None:
        """Pull inputs while slots are free; close the stream once every job has ended."""
        async with self._send, anyio.create_task_group() as jobs:
            index = 0
            while True:
                await self._slots.acquire()
                if self._error is not None:  # an error ended the run: nothing more is pulled
                    break
                try:
                    image = await anext(self._images)
                except StopAsyncIteration:
                    break
                except Exception as exc:  # noqa: BLE001 (any error of the input stream ends the run, as in upscale_many)
                    self._error = exc
                    break
                jobs.start_soon(self._one, index, image)
                index += 1

    async def _one(self, index: int, image: str) -> None:
        client = self._client
        try:
            request: UpscaleRequest | None = client.make_request(
                image, scale=self._scale, face_enhance=self._face_enhance
            )
        except InvalidRequestError as exc:  # refused before anything is sent
            await self._send.send(Outcome(index, None, error=exc))
            return
        key = idempotency_key(image, scale=self._scale, face_enhance=self._face_enhance)
        earlier: list[str] = []
        resubmits = 0
        while True:
            try:
                state = await client.upscale(
                    image,
                    scale=self._scale,
                    face_enhance=self._face_enhance,
                    timeout=self._job_timeout,
                    idempotency_key=resubmit_key(key, resubmits),
                )
            except JobSystemError as exc:  # ERROR, not charged: a new key, a new attempt
                delay = resubmit_delay(client.resubmit_policy, Status.ERROR, resubmits)
                if delay is None or self._error is not None:
                    await self._send.send(self._failed(index, request, exc, earlier))
                    return
                earlier.append(exc.request_id)
                resubmits += 1
                await anyio.sleep(delay)
                continue
            except (RealESRGANError, InvalidRequestError) as exc:  # (a preflight refusal too)
                if isinstance(exc, _ENDS_RUN) or (
                    isinstance(exc, StoreError) and not isinstance(exc, OutputExpiredError)
                ):
                    # Nothing was paid for this input (a refused or unrecorded submit
                    # sends nothing): no outcome, as in upscale_many; the run reports it
                    # unfinished, stopped by this error.
                    self._error = self._error or exc
                    return
                await self._send.send(self._failed(index, request, exc, earlier))
                return
            outcome = Outcome(
                index,
                request,
                result=state,
                request_id=state.request_id,
                earlier_request_ids=tuple(earlier),
            )
            await self._send.send(outcome)
            return

    @staticmethod
    def _failed(
        index: int,
        request: UpscaleRequest | None,
        error: RealESRGANError | InvalidRequestError,
        earlier: list[str],
    ) -> Outcome:
        request_id = getattr(error, "request_id", None)
        return Outcome(
            index,
            request,
            error=error,
            request_id=request_id if isinstance(request_id, str) else None,
            earlier_request_ids=tuple(earlier),
        )
