"""Attack: a gateway string that would steer a file path, a URL or a terminal line.

No path is built from gateway data: ids are checked for shape when parsed, and
`download(state, folder)` uses a request_id as a file name only when it is a
plain one, whoever built the `JobState`.
"""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
from attack_helpers import MEDIA, client_over
from PIL import Image

from real_esrgan_async import DownloadError, Job, JobState, ResponseValidationError, Status

HOSTILE_IDS = [
    "../../x",
    "/tmp/x",
    "a\\b",
    "..",
    " padded",
    "bell\x07",
    "esc\x1b]0;owned\x07",
    "x" * 257,
]


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 30)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("request_id", HOSTILE_IDS)
def test_a_status_answer_with_a_hostile_id_is_refused_naming_the_field(request_id: str) -> None:
    with pytest.raises(ResponseValidationError) as info:
        JobState.from_json({"request_id": request_id, "status": "COMPLETED"})
    assert str(info.value).startswith("field 'request_id' must be at most 256 printable")


@pytest.mark.parametrize("request_id", HOSTILE_IDS)
def test_a_submit_answer_with_a_hostile_id_is_refused_naming_the_field(request_id: str) -> None:
    with pytest.raises(ResponseValidationError, match="field 'request_id' must be"):
        Job.from_json({"request_id": request_id, "status": "QUEUED"})


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"model_id": "a/b"}, "field 'model_id' must be at most 256"),
        ({"output": {"media_url": ["file:///etc/passwd"]}}, "got file:"),
        ({"output": {"media_url": ["https://cdn.example/a b"]}}, "no spaces"),
        ({"output": {"media_url": [MEDIA] * 17}}, "at most 16 are allowed"),
        ({"output": {"media_url": [MEDIA], "media_type": "image/png\n"}}, "media_type"),
    ],
)
def test_other_gateway_strings_are_checked_for_shape(
    change: dict[str, object], fragment: str
) -> None:
    body = {"request_id": "real-esrgan_1", "status": "COMPLETED"} | change
    with pytest.raises(ResponseValidationError) as info:
        JobState.from_json(body)
    assert fragment in str(info.value)


def test_a_foreign_polling_url_scheme_is_refused() -> None:
    with pytest.raises(ResponseValidationError, match="polling_url"):
        Job.from_json({"request_id": "r", "status": "QUEUED", "polling_url": "file:///x"})


def test_a_long_error_text_is_cut_not_refused() -> None:
    """A terminal state must reach the caller whatever its message: the text is cut."""
    state = JobState.from_json({"request_id": "r", "status": "FAILED", "error": "e" * 100_000})
    assert Status.FAILED == state.status
    assert state.error is not None
    assert 2000 + len("… (cut)") == len(state.error)


@pytest.mark.anyio
@pytest.mark.parametrize("request_id", ["../../x", "/tmp/x", "a\\b", "C:x", ".hidden", "a/../../b"])
async def test_download_into_a_folder_never_leaves_it(tmp_path: Path, request_id: str) -> None:
    """A JobState built by hand (or by an older version) can still carry any id."""
    image = png()

    async def media(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=image, headers={"Content-Type": "image/png"})

    folder = tmp_path / "inside" / "deeper"
    folder.mkdir(parents=True)
    state = JobState(request_id, Status.COMPLETED, media_urls=(MEDIA,))
    client, http = client_over(media)
    async with http, client:
        with pytest.raises(DownloadError, match="cannot name a file") as info:
            await client.download(state, folder)

    assert request_id == info.value.request_id
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert ["inside", "inside/deeper"] == written


@pytest.mark.anyio
async def test_download_into_a_folder_uses_a_plain_id_as_the_name(tmp_path: Path) -> None:
    image = png()

    async def media(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=image, headers={"Content-Type": "image/png"})

    state = JobState("real-esrgan_019d-ab.c", Status.COMPLETED, media_urls=(MEDIA,))
    client, http = client_over(media)
    async with http, client:
        written = await client.download(state, tmp_path)

    assert (tmp_path / "real-esrgan_019d-ab.c.png", image) == (written, written.read_bytes())


def test_a_long_signed_output_url_is_accepted() -> None:
    """Output URLs are bounded far above an input's 2,048: a COMPLETED answer is not refused."""
    url = "https://cdn.example/out.png?X-Amz-Signature=" + "a" * 3000
    state = JobState.from_json(
        {"request_id": "r", "status": "COMPLETED", "output": {"media_url": [url]}}
    )
    assert (url,) == state.media_urls


@pytest.mark.anyio
@pytest.mark.parametrize("request_id", [".", ".."])
async def test_a_dot_id_is_not_turned_into_a_status_url(request_id: str) -> None:
    """`status("..")` would GET the parent path once the URL is normalised."""
    sent: list[str] = []

    async def gateway(request: httpx.Request) -> httpx.Response:
        sent.append(str(request.url))
        return httpx.Response(404)

    client, http = client_over(gateway)
    async with http, client:
        with pytest.raises(ValueError, match="is not a job id"):
            await client.status(request_id)
    assert [] == sent
