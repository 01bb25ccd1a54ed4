"""The public surface is exactly what is meant to be public (httpx's own check)."""

from __future__ import annotations

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
        "InsufficientBalanceError",
        "InvalidRequestError",
        "Job",
        "JobError",
        "JobFailedError",
        "JobState",
        "JobSystemError",
        "JobTimeoutError",
        "JobsUnfinishedError",
        "NotFoundError",
        "Outcome",
        "PermissionDeniedError",
        "PollPolicy",
        "RateLimitError",
        "RealESRGANError",
        "ResponseValidationError",
        "RetryPolicy",
        "ServerError",
        "Stats",
        "Status",
        "UpscaleRequest",
        "UpscaleRun",
        "__version__",
    }
    assert expected == set(real_esrgan_async.__all__)
    assert sorted(real_esrgan_async.__all__) == real_esrgan_async.__all__


def test_public_names_report_the_public_module() -> None:
    for name in real_esrgan_async.__all__:
        member = getattr(real_esrgan_async, name)
        if hasattr(member, "__module__"):
            assert "real_esrgan_async" == member.__module__, name


def test_private_modules_are_not_reexported_by_accident() -> None:
    public = {name for name in dir(real_esrgan_async) if not name.startswith("_")}
    assert set(real_esrgan_async.__all__) - {"__version__"} == public


def test_the_testing_package_has_a_sorted_all() -> None:
    assert sorted(real_esrgan_async.testing.__all__) == real_esrgan_async.testing.__all__
