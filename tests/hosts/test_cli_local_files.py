"""``real-esrgan upscale ./photos/*.jpg --image-host s3://bucket/prefix``, through the real
command, against the S3 store and the emulator on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import obstore
import pytest
from obstore.store import S3Store
from PIL import Image
from s3_server import S3Server

from real_esrgan_async.cli import main
from real_esrgan_async.testing import EmulatorConfig, RunningEmulator, running_emulator

KEY = "cli-local-files-key-5up3r-53cr3t"


@pytest.fixture
def gateway() -> Iterator[RunningEmulator]:
    config = EmulatorConfig(api_keys=KEY, time_scale=0.001, seed=3, error_rate=0.0)
    with running_emulator(config) as running:
        yield running


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    assert KEY not in out + err
    assert "X-Amz-Signature" not in out + err  # signed URLs are never printed
    return code, out, err


def size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def keys_under(server: S3Server, prefix: str) -> list[str]:
    store = S3Store(
        server.bucket,
        endpoint=server.endpoint_url,
        access_key_id=server.access_key,
        secret_access_key=server.secret_key,
        region="us-east-1",
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )
    return sorted(meta["path"] for batch in obstore.list(store, prefix) for meta in batch)


def photos(folder: Path) -> list[Path]:
    folder.mkdir()
    made = []
    for name, size in [("beach.jpg", (10, 6)), ("cat.jpg", (7, 7)), ("same-cat.jpg", (7, 7))]:
        path = folder / name
        Image.new("RGB", size, (10, 200, 90)).save(path, format="JPEG", quality=95)
        made.append(path)
    return made


def test_upscale_local_files_saves_outputs_named_after_them_with_one_upload_per_content(
    capsys: pytest.CaptureFixture[str],
    aws_env: S3Server,
    prefix: str,
    gateway: RunningEmulator,
    tmp_path: Path,
) -> None:
    sources = photos(tmp_path / "photos")
    out = tmp_path / "upscaled"
    puts_before = aws_env.requests("PUT")
    code, stdout, err = run(
        capsys,
        "upscale",
        *sources,
        "--scale",
        "2",
        "--out",
        out,
        "--image-host",
        f"s3://{aws_env.bucket}/{prefix}",
        "--endpoint-url",
        aws_env.endpoint_url,
        "--base-url",
        gateway.base_url,
        "--api-key",
        KEY,
    )
    assert 0 == code, err
    names = sorted(path.name for path in out.iterdir())
    assert ["0000-beach.png", "0001-cat.png", "0002-same-cat.png"] == names
    assert (20, 12) == size(out / "0000-beach.png")
    assert (14, 14) == size(out / "0001-cat.png")
    assert (14, 14) == size(out / "0002-same-cat.png")
    assert "3 of 3 inputs upscaled and saved" in stdout
    # cat.jpg and same-cat.jpg are the same bytes: one upload for both.
    assert 2 == aws_env.requests("PUT") - puts_before
    assert 3 == gateway.emulator.stats().jobs_created
    assert [] == keys_under(aws_env, prefix)  # all taken down at the end of the run


def test_upscale_a_folder_takes_its_images_by_name(
    capsys: pytest.CaptureFixture[str],
    aws_env: S3Server,
    prefix: str,
    gateway: RunningEmulator,
    tmp_path: Path,
) -> None:
    """A folder stands for the image files directly in it (sorted by name): other files and
    subfolders are left alone, and outputs are named after the sources."""
    folder = tmp_path / "photos"
    photos(folder)
    (folder / "notes.txt").write_text("not an image\n")
    photos(folder / "nested")  # not searched
    out = tmp_path / "upscaled"
    code, stdout, err = run(
        capsys,
        "upscale",
        folder,
        "--scale",
        "2",
        "--out",
        out,
        "--image-host",
        f"s3://{aws_env.bucket}/{prefix}",
        "--endpoint-url",
        aws_env.endpoint_url,
        "--base-url",
        gateway.base_url,
        "--api-key",
        KEY,
    )
    assert 0 == code, err
    assert ["0000-beach.png", "0001-cat.png", "0002-same-cat.png"] == sorted(
        path.name for path in out.iterdir()
    )
    assert (20, 12) == size(out / "0000-beach.png")
    assert "3 of 3 inputs upscaled and saved" in stdout
    assert 3 == gateway.emulator.stats().jobs_created


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "missing.jpg", "does not exist"),
        (lambda tmp: _folder(tmp / "notes", "a.txt"), "is a folder that holds no image file"),
        (lambda tmp: _text(tmp / "list.txt"), "is not a PNG, JPEG, WebP, GIF, BMP or TIFF image"),
    ],
)
def test_a_bad_local_file_stops_the_command_before_any_job(
    capsys: pytest.CaptureFixture[str],
    aws_env: S3Server,
    prefix: str,
    gateway: RunningEmulator,
    tmp_path: Path,
    make: object,
    message: str,
) -> None:
    good = photos(tmp_path / "photos")[0]
    bad = make(tmp_path)  # type: ignore[operator]
    code, _, err = run(
        capsys,
        "upscale",
        good,
        bad,
        "--image-host",
        f"s3://{aws_env.bucket}/{prefix}",
        "--endpoint-url",
        aws_env.endpoint_url,
        "--base-url",
        gateway.base_url,
        "--api-key",
        KEY,
        "--out",
        tmp_path / "out",
    )
    assert 2 == code
    assert message in err
    assert repr(str(bad)) in err
    assert 0 == gateway.emulator.stats().jobs_created


def _folder(path: Path, *names: str) -> Path:
    path.mkdir()
    for name in names:
        (path / name).write_text("not an image\n")
    return path


def _text(path: Path) -> Path:
    path.write_text("https://example.com/a.jpg\n")
    return path


def test_a_local_file_without_image_host_says_how_to_publish_it(
    capsys: pytest.CaptureFixture[str], gateway: RunningEmulator, tmp_path: Path
) -> None:
    source = photos(tmp_path / "photos")[0]
    code, _, err = run(capsys, "upscale", source, "--base-url", gateway.base_url, "--api-key", KEY)
    assert 2 == code
    assert "is a local file, and the gateway fetches only URLs: pass --image-host" in err
    assert 0 == gateway.emulator.stats().jobs_created


def test_an_image_host_that_is_not_s3_is_refused(
    capsys: pytest.CaptureFixture[str], gateway: RunningEmulator, tmp_path: Path
) -> None:
    source = photos(tmp_path / "photos")[0]
    code, _, err = run(
        capsys,
        "upscale",
        source,
        "--image-host",
        "gs://bucket/prefix",
        "--base-url",
        gateway.base_url,
        "--api-key",
        KEY,
    )
    assert 2 == code
    assert "--image-host must be s3://BUCKET or s3://BUCKET/PREFIX, got 'gs://bucket/prefix'" in err


def test_a_store_that_refuses_the_upload_stops_the_run_before_any_job(
    capsys: pytest.CaptureFixture[str],
    aws_env: S3Server,
    prefix: str,
    gateway: RunningEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wrong = "wrong-secret-for-this-store-0123456789"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    source = photos(tmp_path / "photos")[0]
    code, stdout, err = run(
        capsys,
        "upscale",
        source,
        "--image-host",
        f"s3://{aws_env.bucket}/{prefix}",
        "--endpoint-url",
        aws_env.endpoint_url,
        "--base-url",
        gateway.base_url,
        "--api-key",
        KEY,
        "--out",
        tmp_path / "out",
    )
    assert wrong not in stdout + err
    assert f"could not publish {str(source)!r} to bucket 'inputs'" in stdout + err
    assert "the run stopped: could not publish" in err
    assert 1 == code
    assert 0 == gateway.emulator.stats().jobs_created
