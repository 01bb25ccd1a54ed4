"""The public surface is exactly what is meant to be public (httpx's own check)."""

from __future__ import annotations

import types

import real_esrgan_async
import real_esrgan_async.testing


def test_all_lists_exactly_the_public_names() -> None:
    expected = {
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
        "ImageHost",
        "ImageHostError",
        "IdempotencyKeyMismatchError",
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
    }
    assert expected == set(real_esrgan_async.__all__)
    assert sorted(real_esrgan_async.__all__) == real_esrgan_async.__all__


def test_public_names_report_the_public_module() -> None:
    for name in real_esrgan_async.__all__:
        member = getattr(real_esrgan_async, name)
        if hasattr(member, "__module__"):
            assert "real_esrgan_async" == member.__module__, name


def test_nothing_else_is_public_by_accident() -> None:
    public = {
        name
        for name, value in vars(real_esrgan_async).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(real_esrgan_async.__all__) - {"__version__"} == public


def test_the_testing_package_exports_the_emulator() -> None:
    assert {
        "DEFAULT_API_KEY",
        "MAX_INPUT_PIXELS",
        "Emulator",
        "EmulatorConfig",
        "EmulatorStats",
        "JobSnapshot",
        "RunningEmulator",
        "TimestampFormat",
        "running_emulator",
        "serve",
    } == set(real_esrgan_async.testing.__all__)
