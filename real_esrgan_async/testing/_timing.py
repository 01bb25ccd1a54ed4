"""The calibrated timing model of the hosted service, in model seconds.

Every figure here, where it comes from and what depends on it is in ``docs/gateway-model.md``
("Timing"); change them together. With inputs drawn as ``nominal_megapixels`` draws them
(0.3-2 MP, log-uniform) the model gives a median job of about 16 s, a p95 of about 33 s and a p99
of about 84 s, 3% of jobs hitting a cold start.

Rules of this module: pure functions of their arguments. No clock, no global random state: the
caller passes a ``random.Random`` and multiplies the results by its ``time_scale``. Every random
draw of a job happens when it is created, so a seeded emulator plans the same jobs whatever the
order in which their inputs finish downloading.
"""

from __future__ import annotations

import math
import random

__all__ = [
    "DEFAULT_NOMINAL_MEGAPIXELS",
    "FAILURE_SECONDS",
    "NETWORK_SCALE",
    "SYNC_POLL_DELAY_CAP",
    "cuda_oom_message",
    "duration_factor",
    "nominal_input_pixels",
    "processing_seconds",
    "queue_wait_seconds",
    "sync_poll_delay",
]

QUEUE_WAIT_MEDIAN = 1.5
# Spread of the lognormal queue wait: 90% of waits fall between about 0.5 s and 4 s.
QUEUE_WAIT_SIGMA = 0.6
COLD_START_RANGE = (20.0, 90.0)

PROCESSING_BASE = 2.7
PER_INPUT_MEGAPIXEL = 12.8
PER_OUTPUT_MEGAPIXEL = 0.09
# The network always upscales 4x (smaller scales are a resize of its result), so the output it
# computes, and what it costs, does not depend on the requested scale.
NETWORK_SCALE = 4
FACE_ENHANCE_EXTRA = 1.0
# Model runs are not perfectly repeatable; a little noise keeps clients from relying on exact
# durations.
PROCESSING_NOISE_SIGMA = 0.1

# Web-sized inputs: the sizes a job is timed by when the emulator does not fetch its input.
DEFAULT_NOMINAL_MEGAPIXELS = (0.3, 2.0)

# A job that fails on its input (download error, undecodable, too large) fails early: the model
# loads the image and gives up before any inference. An assumption, not calibrated.
FAILURE_SECONDS = 1.0

# The provider's queue polls its workers with a growing delay; webhook sync mode caps it at 15 s
# (API reference). The doubling before the cap is this emulator's assumption.
SYNC_POLL_FIRST_DELAY = 1.0
SYNC_POLL_DELAY_CAP = 15.0


def queue_wait_seconds(rng: random.Random, cold_start_rate: float) -> float:
    """Draw the QUEUED duration: lognormal around 1.5 s, plus sometimes a 20-90 s cold start."""
    wait = rng.lognormvariate(math.log(QUEUE_WAIT_MEDIAN), QUEUE_WAIT_SIGMA)
    if cold_start_rate > 0 and rng.random() < cold_start_rate:
        wait += rng.uniform(*COLD_START_RANGE)
    return wait


def processing_seconds(input_pixels: int, *, face_enhance: bool, factor: float = 1.0) -> float:
    """The PROCESSING duration of a job.

    Args:
        input_pixels: Width times height of the input.
        face_enhance: Whether GFPGAN runs too.
        factor: The job's draw from ``duration_factor``.

    Returns:
        Model seconds: 2.7 s + 12.8 s per input megapixel + 0.09 s per megapixel of the
        network's 4x output, plus 1 s with face enhancement, times ``factor``. The requested
        scale plays no part: the network always computes the 4x output.
    """
    output_pixels = input_pixels * NETWORK_SCALE * NETWORK_SCALE
    seconds = (
        PROCESSING_BASE
        + PER_INPUT_MEGAPIXEL * input_pixels / 1e6
        + PER_OUTPUT_MEGAPIXEL * output_pixels / 1e6
    )
    if face_enhance:
        seconds += FACE_ENHANCE_EXTRA
    return seconds * factor


def nominal_input_pixels(rng: random.Random, megapixels: float | tuple[float, float]) -> int:
    """Draw the size a job is timed by when its input is not fetched.

    Args:
        rng: The job-planning generator.
        megapixels: A fixed size, or a ``(low, high)`` range drawn log-uniformly (web images
            spread over orders of magnitude: as many between 0.3 and 0.6 MP as between 1 and
            2 MP). A fixed size consumes no randomness.

    Returns:
        Width times height of the nominal input.
    """
    if isinstance(megapixels, tuple):
        low, high = megapixels
        drawn = math.exp(rng.uniform(math.log(low), math.log(high)))
    else:
        drawn = megapixels
    return max(1, round(drawn * 1e6))


def duration_factor(rng: random.Random, *, errors: bool) -> float:
    """Draw a job's processing-time multiplier: lognormal noise of median 1 (model runs are not
    perfectly repeatable), and for a job that will ERROR, the fraction of the run it gets
    through (somewhere in the second half) before the out-of-memory strikes."""
    factor = rng.lognormvariate(0.0, PROCESSING_NOISE_SIGMA)
    if errors:
        factor *= rng.uniform(0.5, 1.0)
    return factor


def sync_poll_delay(cycle: int) -> float:
    """Model seconds between queue poll cycles ``cycle`` and ``cycle + 1`` (from 0): 1, 2, 4, 8,
    then 15 s (the sync-mode cap)."""
    return min(SYNC_POLL_FIRST_DELAY * 2.0 ** min(cycle, 16), SYNC_POLL_DELAY_CAP)


def cuda_oom_message(rng: random.Random) -> str:
    """A transient out-of-memory message in PyTorch's words, with plausible figures."""
    total = 15.78
    tried = round(rng.uniform(0.5, 3.5), 2)
    allocated = round(rng.uniform(8.0, 12.0), 2)
    free = round(rng.uniform(0.1, max(0.2, tried - 0.05)), 2)
    reserved = round(min(total - free, allocated + rng.uniform(0.5, 2.5)), 2)
    return (
        f"CUDA out of memory. Tried to allocate {tried:.2f} GiB (GPU 0; {total:.2f} GiB total "
        f"capacity; {allocated:.2f} GiB already allocated; {free:.2f} GiB free; "
        f"{reserved:.2f} GiB reserved in total by PyTorch) If reserved memory is >> allocated "
        "memory try setting max_split_size_mb to avoid fragmentation.  See documentation for "
        "Memory Management and PYTORCH_CUDA_ALLOC_CONF"
    )
