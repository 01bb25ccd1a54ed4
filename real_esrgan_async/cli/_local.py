"""Local files on the command line: ``upscale ./photos/*.jpg --image-host s3://bucket/prefix``.

Every argument that is not an http(s) URL is a local file. All of them are
checked (exists, readable, an image by its first bytes) before the first job
is paid for; each is then published through the image host only when the
fan-out pulls it (so at most ``--concurrency`` are up at once), and taken down
when its outcome arrives. Outputs are named after the source files, as URLs'
are after their paths (``0002-cat.png`` for ``./photos/cat.jpg``).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from pathlib import Path

import anyio

from real_esrgan_async import (
    AmbiguousSubmitError,
    ImageHost,
    ImageHostError,
    InvalidRequestError,
    Outcome,
    PublishedImage,
    S3ImageHost,
)
from real_esrgan_async._hosts import (
    check_local_file,
    inspect_local,
    publish_checked,
)

IMAGE_HOST_SCHEMES = ("s3",)
#: The files a folder given on the command line contributes, by suffix (any case).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")


def is_url(text: str) -> bool:
    """Whether a command-line input is a URL (``scheme://...``) rather than a local file.

    Only http(s) URLs are accepted by the gateway; the others are rejected as before.
    """
    return "://" in text


def expand_folders(inputs: Sequence[str]) -> list[str]:
    """`inputs` with each folder replaced by the image files directly in it, by name.

    Files are taken by suffix (`IMAGE_SUFFIXES`), not recursing; each is then
    checked like a file named on the command line.

    Raises:
        InvalidRequestError: A folder holds no image file.
    """
    expanded: list[str] = []
    for text in inputs:
        folder = Path(text)
        if is_url(text) or not folder.is_dir():
            expanded.append(text)
            continue
        images = sorted(
            str(path)
            for path in folder.iterdir()
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
        )
        if not images:
            raise InvalidRequestError(
                f"{text!r} is a folder that holds no image file "
                f"({', '.join(IMAGE_SUFFIXES)}; subfolders are not searched)"
            )
        expanded.extend(images)
    return expanded


def local_inputs(inputs: Sequence[str], *, with_host: bool) -> list[str]:
    """The inputs to treat as local files.

    With an image host, every input that is not a URL. Without one, only those
    that exist: ``example.com/cat.jpg`` (a URL missing its scheme) is left to be
    rejected as a URL, with the message that says so.
    """
    return [text for text in inputs if not is_url(text) and (with_host or Path(text).exists())]


def parse_image_host(uri: str, *, endpoint_url: str | None) -> S3ImageHost:
    """The image host an ``--image-host`` URI names: ``s3://bucket[/prefix]``.

    Raises:
        InvalidRequestError: Another scheme, no bucket, or an invalid endpoint.
    """
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in IMAGE_HOST_SCHEMES or not parts.netloc:
        raise InvalidRequestError(
            f"--image-host must be s3://BUCKET or s3://BUCKET/PREFIX, got {uri!r}"
        )
    return S3ImageHost(parts.netloc, parts.path, endpoint_url=endpoint_url)


def check_local_inputs(paths: Sequence[str]) -> list[str]:
    """One error line per local input that is not a readable image (empty when all are)."""
    errors = []
    for text in paths:
        try:
            check_local_file(Path(text))
        except InvalidRequestError as exc:
            errors.append(str(exc))
    return errors


class Publisher:
    """Publishes local inputs as the fan-out pulls them; takes them all down at the end.

    Kept up for the whole run, so that the same bytes under two names (or twice on
    the command line) are uploaded once, however the jobs interleave.
    """

    def __init__(self, host: ImageHost) -> None:
        self._host = host
        self._published: dict[int, PublishedImage] = {}
        self._done: set[int] = set()  # inputs no job will fetch any more

    async def url_for(self, index: int, text: str) -> str:
        """The URL to submit for input `index`: `text` itself, or the published file's URL.

        Raises:
            ImageHostError: It could not be published or its URL not fetched, or
                it is no longer a readable image (it changed since it was checked).
        """
        if is_url(text):
            return text
        try:
            image = await inspect_local(Path(text))
        except InvalidRequestError as exc:
            raise ImageHostError(str(exc)) from None
        published = await publish_checked(self._host, image)
        self._published[index] = published
        return published.url

    def finished(self, outcome: Outcome) -> None:
        """Note an outcome: its input may go, unless its submit was ambiguous (a job may
        exist and still fetch it)."""
        if not isinstance(outcome.error, AmbiguousSubmitError):
            self._done.add(outcome.index)

    async def aclose(self) -> None:
        """Take down every input published, but those a job may still fetch.

        Those are the ambiguous submits and the inputs without an outcome (a
        stopped run): their URLs expire on their own.
        """
        published, self._published = self._published, {}
        with anyio.CancelScope(shield=True):  # cleanup, also after Ctrl+C
            for index, image in published.items():
                if index in self._done:
                    await self._host.retract(image)
