"""Inputs really fetched and decoded, outputs really upscaled, samples really served."""

from __future__ import annotations

import importlib.resources
import io
import time

import pytest
from emulator_helpers import (
    fast_config,
    image_of,
    key_headers,
    png_bytes,
    run_job,
    submit,
    sync_client,
    wait_terminal,
)
from PIL import Image

from real_esrgan_async.testing import Emulator, RunningEmulator, running_emulator
from real_esrgan_async.testing._images import UNDECODABLE_MESSAGE, UnprocessableInputError, upscale
from real_esrgan_async.testing._samples_gen import BUNDLED

OVERSIZED_MESSAGE = (
    "Input image of dimensions (2400, 1080, 3) has a total number of pixels 2592000 greater "
    "than the max size that fits in GPU memory on this hardware, 2096704. Resize input image "
    "and try again."
)


def _terminal_outputs(
    gateway: RunningEmulator, jobs: list[tuple[str, int, bool]]
) -> list[Image.Image]:
    """Submit every (sample, scale, face_enhance) at once, then download each output."""
    with sync_client() as client:
        ids = [
            submit(
                client, gateway, gateway.sample_url(name), scale=scale, face_enhance=face
            ).json()["request_id"]
            for name, scale, face in jobs
        ]
        outputs = []
        for request_id in ids:
            body = wait_terminal(client, gateway, request_id)
            assert "COMPLETED" == body["status"], body
            outputs.append(image_of(client.get(body["output"]["media_url"][0]).content))
    return outputs


def test_outputs_are_scale_times_the_input_in_the_inputs_mode(
    shared_gateway: RunningEmulator,
) -> None:
    """For every bundled sample and every scale, the output PNG is exactly ``scale`` times the
    input's width and height, and keeps its mode: RGB, RGBA (alpha), L (grayscale), I;16."""
    expected_modes = {
        "photo.jpg": "RGB",
        "pattern.png": "RGB",
        "logo-rgba.png": "RGBA",
        "gray.png": "L",
        "gray16.png": "I;16",
        "tiny.png": "RGB",
    }
    jobs = [(name, scale, False) for name in sorted(expected_modes) for scale in (1, 2, 3, 4)]
    outputs = _terminal_outputs(shared_gateway, jobs)
    with sync_client() as client:
        inputs = {
            name: image_of(client.get(shared_gateway.sample_url(name)).content).size
            for name in expected_modes
        }
    expected = [
        ((inputs[name][0] * scale, inputs[name][1] * scale), expected_modes[name], "PNG")
        for name, scale, _ in jobs
    ]
    assert expected == [(output.size, output.mode, output.format) for output in outputs]


def test_face_enhance_drops_alpha(shared_gateway: RunningEmulator) -> None:
    """With ``face_enhance`` an RGBA input comes back RGB (GFPGAN has no alpha), same size."""
    [output] = _terminal_outputs(shared_gateway, [("logo-rgba.png", 2, True)])
    assert ((192, 192), "RGB") == (output.size, output.mode)


def test_upscale_is_a_lanczos_resize() -> None:
    """The output is the input resized with Pillow's LANCZOS filter (pixel for pixel)."""
    source = Image.new("RGB", (5, 3))
    source.putdata([(i * 15, 255 - i * 15, (i * 40) % 256) for i in range(15)])
    expected = source.resize((15, 9), Image.Resampling.LANCZOS)
    output = image_of(upscale(png_bytes(source), 3, face_enhance=False).png)
    assert expected.tobytes() == output.tobytes()


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("LA", "LA"), ("P", "RGB"), ("1", "L"), ("CMYK", "RGB"), ("I", "I;16")],
)
def test_less_common_modes_map_to_what_the_model_returns(mode: str, expected: str) -> None:
    """Grayscale+alpha keeps its alpha, palette and CMYK become RGB, 1-bit becomes L,
    32-bit integer becomes 16-bit."""
    source = Image.new(mode, (4, 4))
    buffer = io.BytesIO()
    source.save(buffer, "TIFF" if mode in ("CMYK", "I") else "PNG")
    output = image_of(upscale(buffer.getvalue(), 2, face_enhance=False).png)
    assert ((8, 8), expected) == (output.size, output.mode)


def test_oversized_input_fails_with_the_models_message(shared_gateway: RunningEmulator) -> None:
    """An input over 2,096,704 pixels FAILs with the hosted model's message verbatim, shape
    (height, width, channels) included."""
    with sync_client() as client:
        body = run_job(client, shared_gateway, shared_gateway.sample_url("oversized.png"))
    assert ("FAILED", OVERSIZED_MESSAGE, None) == (body["status"], body["error"], body["output"])


def test_oversized_grayscale_shape_has_no_channel_axis() -> None:
    """numpy gives a grayscale image a 2-D shape, and so does the message."""
    data = png_bytes(Image.new("L", (1500, 1500)))
    with pytest.raises(UnprocessableInputError) as failure:
        upscale(data, 4, face_enhance=False)
    assert failure.value.message.startswith(
        "Input image of dimensions (1500, 1500) has a total number of pixels 2250000 greater"
    )


def test_largest_allowed_input_is_1448_squared() -> None:
    """Exactly 2,096,704 pixels (1448 x 1448) passes the check."""
    result = upscale(png_bytes(Image.new("L", (1448, 1448))), 1, face_enhance=False)
    assert 1448 * 1448 == result.input_pixels


def test_undecodable_input_fails_with_the_models_message(shared_gateway: RunningEmulator) -> None:
    """Bytes that are not an image FAIL with ``'NoneType' object has no attribute 'shape'``."""
    with sync_client() as client:
        body = run_job(client, shared_gateway, shared_gateway.sample_url("corrupt.png"))
    assert ("FAILED", UNDECODABLE_MESSAGE) == (body["status"], body["error"])
    assert "'NoneType' object has no attribute 'shape'" == UNDECODABLE_MESSAGE


def test_truncated_image_is_undecodable() -> None:
    """A real PNG cut in half fails like any undecodable input."""
    data = png_bytes(Image.effect_noise((64, 64), 50))
    with pytest.raises(UnprocessableInputError) as failure:
        upscale(data[: len(data) // 2], 2, face_enhance=False)
    assert UNDECODABLE_MESSAGE == failure.value.message


def test_input_answering_404_fails_naming_the_status(shared_gateway: RunningEmulator) -> None:
    """A non-2xx download FAILs with a message naming the HTTP status and the URL."""
    url = shared_gateway.sample_url("missing.png")
    with sync_client() as client:
        body = run_job(client, shared_gateway, url)
    expected = f"Failed to download input image: 404 Client Error: Not Found for url: {url}"
    assert ("FAILED", expected) == (body["status"], body["error"])


def test_unreachable_input_fails(shared_gateway: RunningEmulator) -> None:
    """A download that cannot connect FAILs with a message naming the URL."""
    with running_emulator(fast_config()) as gone:
        url = gone.sample_url("tiny.png")  # its server stops at the end of this block
    with sync_client() as client:
        body = run_job(client, shared_gateway, url)
    assert "FAILED" == body["status"]
    assert body["error"].startswith("Failed to download input image: ConnectError")
    assert body["error"].endswith(f"for url: {url}")


def test_bundled_samples_are_small_and_varied() -> None:
    """Six bundled samples, each at most 30 KB, covering RGB, RGBA, grayscale and 16-bit."""
    folder = importlib.resources.files("real_esrgan_async.testing").joinpath("samples")
    files = {entry.name: entry.read_bytes() for entry in folder.iterdir() if entry.is_file()}
    assert sorted(BUNDLED) == sorted(files)
    assert all(len(data) <= 30_000 for data in files.values())
    modes = {name: image_of(data).mode for name, data in files.items()}
    assert {"RGB", "RGBA", "L", "I;16"} == set(modes.values())
    assert (8, 8) == image_of(files["tiny.png"]).size


def test_bundled_png_samples_are_what_the_generator_draws() -> None:
    """The committed PNGs decode to exactly the generator's pixels (JPEG: same size)."""
    folder = importlib.resources.files("real_esrgan_async.testing").joinpath("samples")
    for name, (draw, fmt, _) in BUNDLED.items():
        committed = image_of(folder.joinpath(name).read_bytes())
        drawn = draw()
        assert (drawn.size, drawn.mode) == (committed.size, committed.mode)
        if fmt == "PNG":
            assert drawn.tobytes() == committed.tobytes(), name


def test_samples_endpoint(shared_gateway: RunningEmulator) -> None:
    """``/samples/<name>`` serves the bundled files with their type, an oversized PNG made on
    request (1080x2400, small), bytes that are not an image, and 404 for ``missing.png``."""
    with sync_client() as client:
        listed = [client.get(url) for url in shared_gateway.sample_urls()]
        oversized = client.get(shared_gateway.sample_url("oversized.png"))
        corrupt = client.get(shared_gateway.sample_url("corrupt.png"))
        missing = client.get(shared_gateway.sample_url("missing.png"))
    assert 6 == len(listed)
    assert all(200 == response.status_code for response in listed)
    types = {
        response.url.path.rsplit("/", 1)[1]: response.headers["content-type"] for response in listed
    }
    assert "image/jpeg" == types["photo.jpg"]
    assert "image/png" == types["tiny.png"]
    assert (1080, 2400) == image_of(oversized.content).size
    assert len(oversized.content) <= 30_000
    assert 200 == corrupt.status_code
    with pytest.raises(Exception, match=r"cannot identify|Truncated"):
        image_of(corrupt.content)
    assert 404 == missing.status_code


def test_media_expires_after_its_ttl() -> None:
    """An output is downloadable for ``media_ttl`` real seconds after completion, then 404;
    the status keeps saying COMPLETED with the same URL."""
    with running_emulator(fast_config(media_ttl=1.0)) as gateway, sync_client() as client:
        body = run_job(client, gateway, gateway.sample_url("tiny.png"))
        url = body["output"]["media_url"][0]
        first = client.get(url)
        time.sleep(1.2)
        later = client.get(url)
        status = client.get(
            f"{gateway.base_url}/v2/requests/status/{body['request_id']}",
            headers=key_headers(gateway),
        ).json()
        stats = gateway.emulator.stats()
    assert (200, 404) == (first.status_code, later.status_code)
    assert ("COMPLETED", url) == (status["status"], status["output"]["media_url"][0])
    assert (1, 1) == (stats.media_downloads, stats.not_found)


def test_media_of_unknown_jobs_is_404(shared_gateway: RunningEmulator) -> None:
    """No media exists for an unknown id."""
    with sync_client() as client:
        response = client.get(shared_gateway.base_url + "/media/real-esrgan_nope/output.png")
    assert 404 == response.status_code


def test_samples_index_lists_everything_served(shared_gateway: RunningEmulator) -> None:
    """``GET /samples/`` (no key) lists every bundled sample with its URL and type, and every
    failure sample with what a job on it does; each listed URL answers as listed."""
    with sync_client() as client:
        index = client.get(shared_gateway.base_url + "/samples/")
        body = index.json()
        served = {
            entry["name"]: client.get(entry["url"])
            for entry in body["samples"] + body["failure_samples"]
        }
    assert 200 == index.status_code
    assert shared_gateway.sample_urls() == [entry["url"] for entry in body["samples"]]
    listed_types = {entry["name"]: entry["media_type"] for entry in body["samples"]}
    assert listed_types == {name: served[name].headers["content-type"] for name in listed_types}
    assert dict(Emulator.FAILURE_SAMPLES) == {
        entry["name"]: entry["outcome"] for entry in body["failure_samples"]
    }
    assert ["corrupt.png", "missing.png", "oversized.png"] == sorted(Emulator.FAILURE_SAMPLES)
    assert {"corrupt.png": 200, "missing.png": 404, "oversized.png": 200} == {
        name: served[name].status_code for name in Emulator.FAILURE_SAMPLES
    }


def test_failure_samples_do_what_the_index_says(shared_gateway: RunningEmulator) -> None:
    """A job on each failure sample FAILs, as ``FAILURE_SAMPLES`` announces."""
    with sync_client() as client:
        outcomes = {
            name: run_job(client, shared_gateway, shared_gateway.sample_url(name))["status"]
            for name in Emulator.FAILURE_SAMPLES
        }
    assert dict.fromkeys(Emulator.FAILURE_SAMPLES, "FAILED") == outcomes
