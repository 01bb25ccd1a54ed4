"""The calibrated timing model of the hosted service (see domain-notes.md), in model seconds.

Rules of this module: pure functions of their arguments. No clock, no global random state: the
caller passes a ``random.Random`` and multiplies the results by its ``time_scale``. Every random
draw of a job happens when it is created, so a seeded emulator plans the same jobs whatever the
order in which their inputs finish downloading.
"""

from __future__ import annotations

import math
import random

__all__ = [
    "FAILURE_SECONDS",
    "SYNC_POLL_DELAY_CAP",
    "cuda_oom_message",
    "duration_factor",
    "processing_seconds",
    "queue_wait_seconds",
    "sync_poll_delay",
]

QUEUE_WAIT_MEDIAN = 1.5
# Spread of the lognormal queue wait: 90% of waits fall between about 0.5 s and 4 s.
QUEUE_WAIT_SIGMA = 0.6
COLD_START_RANGE = (20.0, 90.0)

PROCESSING_BASE = 1.5
PER_INPUT_MEGAPIXEL = 7.0
PER_OUTPUT_MEGAPIXEL = 0.05
FACE_ENHANCE_EXTRA = 1.0
# Model runs are not perfectly repeatable; a little noise keeps clients from relying on exact
# durations.
PROCESSING_NOISE_SIGMA = 0.1

# A job that fails on its input (download error, undecodable, too large) fails early: the model
# loads the image and gives up before any inference.
FAILURE_SECONDS = 1.0

# The provider's queue polls its workers with a growing delay; webhook sync mode caps it at 15 s.
SYNC_POLL_FIRST_DELAY = 1.0
SYNC_POLL_DELAY_CAP = 15.0


def queue_wait_seconds(rng: random.Random, cold_start_rate: float) -> float:
    """Draw the QUEUED duration: lognormal around 1.5 s, plus sometimes a 20-90 s cold start."""
    wait = rng.lognormvariate(math.log(QUEUE_WAIT_MEDIAN), QUEUE_WAIT_SIGMA)
    if cold_start_rate > 0 and rng.random() < cold_start_rate:
        wait += rng.uniform(*COLD_START_RANGE)
    return wait


def processing_seconds(
    input_pixels: int, output_pixels: int, *, face_enhance: bool, factor: float = 1.0
) -> float:
    """The PROCESSING duration of a job.

    Args:
        input_pixels: Width times height of the input.
        output_pixels: Width times height of the output.
        face_enhance: Whether GFPGAN runs too.
        factor: The job's draw from ``duration_factor``.

    Returns:
        Model seconds: 1.5 s + 7 s per input megapixel + 0.05 s per output megapixel, plus 1 s
        with face enhancement, times ``factor``.
    """
    seconds = (
        PROCESSING_BASE
        + PER_INPUT_MEGAPIXEL * input_pixels / 1e6
        + PER_OUTPUT_MEGAPIXEL * output_pixels / 1e6
    )
    if face_enhance:
        seconds += FACE_ENHANCE_EXTRA
    return seconds * factor


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
