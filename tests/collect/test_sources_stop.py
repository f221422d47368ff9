"""Stopping the queue consumers is bounded (collect/sources.py `_stop`): a consumer whose
cleanup awaits a socket after the cancel (a redis pipeline's reset in `__aexit__`) is
cancelled again, and one that never stops is left behind with a warning, so a SIGTERM is
never ignored for the socket timeout. No Redis needed."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from gumshoe.collect import sources


async def _cleanup_waits() -> None:
    try:
        await asyncio.sleep(100)
    finally:
        await asyncio.sleep(100)  # like an await on a socket in __aexit__


async def _never_stops() -> None:
    for _ in range(3):  # ignores _stop's two cancels (and asyncio.run's final one)
        try:
            await asyncio.sleep(100)
        except asyncio.CancelledError:
            continue


async def _quick() -> None:
    await asyncio.sleep(100)


def test_stop_is_bounded(monkeypatch: pytest.MonkeyPatch,
                         caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(sources, "STOP_WAIT", 0.2)

    async def main() -> tuple[float, list[asyncio.Task[None]]]:
        tasks = [asyncio.create_task(f(), name=f.__name__)
                 for f in (_quick, _cleanup_waits, _never_stops)]
        await asyncio.sleep(0.01)
        t = time.monotonic()
        await sources._stop(tasks)
        return time.monotonic() - t, tasks

    with caplog.at_level(logging.WARNING, logger="gumshoe.collect.sources"):
        took, tasks = asyncio.run(main())
    assert took < 1.0  # 2 x STOP_WAIT at most, not the 100 s the cleanup would take
    assert tasks[0].cancelled() and tasks[1].done()
    assert "_never_stops: still stopping after 0s; left behind" in caplog.text
