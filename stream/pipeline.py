"""The asyncio side of streaming: a bounded queue that drops the oldest block.

Audio producers (a sounddevice callback thread, a file reader) must never
block and must never make memory grow: when the consumer falls behind, the
oldest queued block is dropped and counted, and the newest audio kept.
"""

from __future__ import annotations

import asyncio

import numpy as np

__all__ = ["DropOldestQueue", "END_OF_STREAM"]

END_OF_STREAM = None


class DropOldestQueue:
    """A bounded ``asyncio.Queue`` of audio blocks that drops oldest-first.

    ``put_nowait`` is meant to be called on the event loop's thread (use
    ``loop.call_soon_threadsafe(queue.put_nowait, block)`` from other threads).
    Errors raised by a producer are handed over with :meth:`put_error` and
    re-raised by :meth:`get` in the consumer.
    """

    def __init__(self, maxsize: int = 64):
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self._queue: asyncio.Queue = asyncio.Queue(maxsize)
        self.dropped = 0
        self.overflow_flags = 0

    def qsize(self) -> int:
        return self._queue.qsize()

    def put_nowait(self, block: np.ndarray | BaseException | None) -> None:
        while True:
            try:
                self._queue.put_nowait(block)
                return
            except asyncio.QueueFull:
                try:
                    self._queue.get_nowait()
                    self.dropped += 1
                except asyncio.QueueEmpty:  # pragma: no cover - race-free on one loop
                    pass

    def put_error(self, error: BaseException) -> None:
        self.put_nowait(error)

    def close(self) -> None:
        """Signal the end of the stream."""
        self.put_nowait(END_OF_STREAM)

    async def get(self) -> np.ndarray | None:
        """Next block, or None at the end of the stream; re-raises producer errors."""
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item
