"""An async client for the hosted Real-ESRGAN image-upscaling gateway, on asyncio or trio.

Fan out thousands of upscales with bounded concurrency and coalesced polling,
with no lost and no doubly-paid jobs::

    async with AsyncRealESRGAN() as client:
        async for outcome in client.upscale_many(urls, scale=2):
            ...
"""

from ._client import AsyncRealESRGAN
from ._events import EventKind, JobEvent
from ._exceptions import (
    AmbiguousSubmitError,
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    DownloadError,
    IdempotencyKeyMismatchError,
    ImageHostError,
    InsufficientBalanceError,
    InvalidRequestError,
    JobError,
    JobFailedError,
    JobsUnfinishedError,
    JobSystemError,
    JobTimeoutError,
    JournalError,
    JournalLockedError,
    JournalMismatchError,
    NotFoundError,
    OutputExpiredError,
    PermissionDeniedError,
    RateLimitError,
    RealESRGANError,
    ResponseValidationError,
    ServerError,
    StoreError,
    StoreMismatchError,
    StoreUnavailableError,
)
from ._fanout import UpscaleRun
from ._hosts import ImageHost, S3ImageHost
from ._journal import Journal, JournalEntry, JournalState
from ._journal_sqlite import SQLiteJournal
from ._local_images import LocalImage, PublishedImage
from ._models import Job, JobState, Outcome, Status, UpscaleRequest
from ._resubmit import ResubmitPolicy
from ._retry import RetryPolicy
from ._scheduler import PollPolicy
from ._stats import Stats
from ._store import SQLiteStore, Store
from ._store_redis import RedisStore
from ._sync import RealESRGAN, SyncUpscaleRun
from ._version import __version__
from ._webhooks import WebhookReceiver, WebhookTokenFilter, parse_webhook

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AmbiguousSubmitError",
    "AsyncRealESRGAN",
    "AuthenticationError",
    "BadRequestError",
    "DownloadError",
    "EventKind",
    "IdempotencyKeyMismatchError",
    "ImageHost",
    "ImageHostError",
    "InsufficientBalanceError",
    "InvalidRequestError",
    "Job",
    "JobError",
    "JobEvent",
    "JobFailedError",
    "JobState",
    "JobSystemError",
    "JobTimeoutError",
    "JobsUnfinishedError",
    "Journal",
    "JournalEntry",
    "JournalError",
    "JournalLockedError",
    "JournalMismatchError",
    "JournalState",
    "LocalImage",
    "NotFoundError",
    "Outcome",
    "OutputExpiredError",
    "PermissionDeniedError",
    "PollPolicy",
    "PublishedImage",
    "RateLimitError",
    "RealESRGAN",
    "RealESRGANError",
    "RedisStore",
    "ResponseValidationError",
    "ResubmitPolicy",
    "RetryPolicy",
    "S3ImageHost",
    "SQLiteJournal",
    "SQLiteStore",
    "ServerError",
    "Stats",
    "Status",
    "Store",
    "StoreError",
    "StoreMismatchError",
    "StoreUnavailableError",
    "SyncUpscaleRun",
    "UpscaleRequest",
    "UpscaleRun",
    "WebhookReceiver",
    "WebhookTokenFilter",
    "__version__",
    "parse_webhook",
]

# Objects report the public module, as httpx does (nicer reprs and docs).
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("real_esrgan_async._"):
        _obj.__module__ = "real_esrgan_async"
del _name, _obj
