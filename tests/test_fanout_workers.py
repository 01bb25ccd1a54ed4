"""The fan-out's submit workers: at most `limit` at once, reused, every queued item run."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from real_esrgan_async._fanout import _Workers

pytestmark = pytest.mark.anyio


async def test_items_run_in_order_on_at_most_limit_reused_workers() -> None:
    running = 0
    most = 0
    seen: list[int] = []
    release = anyio.Event()

    async def work(item: int) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        seen.append(item)
        await release.wait()
        running -= 1

    async with anyio.create_task_group() as tasks:
        workers = _Workers(tasks, work, limit=2)
        for item in range(5):
            workers.put(item)
        await anyio.wait_all_tasks_blocked()
        assert 2 == running  # the limit, not one task per item
        release.set()
        await anyio.wait_all_tasks_blocked()
        assert [0, 1, 2, 3, 4] == seen
        # Idle workers wait for more rather than ending: a later item is run too.
        workers.put(5)
        await anyio.wait_all_tasks_blocked()
        workers.close()  # the task group can end: the workers leave once idle
    assert [0, 1, 2, 3, 4, 5] == seen
    assert 2 == most


async def test_closing_lets_queued_items_finish_first() -> None:
    seen: list[int] = []

    async def work(item: int) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append(item)

    async with anyio.create_task_group() as tasks:
        workers = _Workers(tasks, work, limit=1)
        for item in range(3):
            workers.put(item)
        workers.close()
    assert [0, 1, 2] == seen


async def test_cancelling_the_task_group_ends_idle_and_busy_workers() -> None:
    started: list[int] = []

    async def work(item: int) -> None:
        started.append(item)
        await anyio.sleep_forever()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            workers = _Workers(tasks, work, limit=2)
            workers.put(0)
            await anyio.wait_all_tasks_blocked()
            tasks.cancel_scope.cancel()
    assert [0] == started
