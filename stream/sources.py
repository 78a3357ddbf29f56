"""Audio sources for ``KeywordSpotter.listen``: microphone, WAV file, any async iterator.

Every source is an async iterator of 1-D float32 chunks at its
``sample_rate_hz`` and an async context manager that releases the device or
file on exit, cancellation or error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np

from voxquant.errors import VoxquantError
from voxquant.stream.pipeline import DropOldestQueue

__all__ = ["Microphone", "WavFile", "AudioSourceError"]


class AudioSourceError(VoxquantError):
    """The audio device failed or reported an error."""


class WavFile:
    """Read an audio file as a stream of chunks.

    Parameters
    ----------
    path : str or Path
        Any file soundfile reads; resampled to ``sample_rate_hz``, mixed to mono.
    sample_rate_hz : int
        Rate of the chunks produced.
    chunk_ms : float
        Chunk length.
    realtime : bool
        Pace the chunks at the speed of real time (as a microphone would);
        otherwise as fast as the consumer takes them.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        sample_rate_hz: int = 16000,
        chunk_ms: float = 100.0,
        realtime: bool = False,
    ):
        self.path = Path(path)
        self.sample_rate_hz = int(sample_rate_hz)
        self.chunk_samples = max(1, int(round(chunk_ms * sample_rate_hz / 1000.0)))
        self.realtime = realtime
        self.overruns = 0

    async def __aenter__(self) -> WavFile:
        return self

    async def __aexit__(self, *exc) -> None:
        return None

    def __aiter__(self) -> AsyncIterator[np.ndarray]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[np.ndarray]:
        from voxquant.stream.audio_io import load_audio

        audio = load_audio(self.path, self.sample_rate_hz)
        start = time.monotonic()
        for pos in range(0, audio.shape[0], self.chunk_samples):
            if self.realtime:
                due = start + pos / self.sample_rate_hz
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)  # let other tasks run between chunks
            yield audio[pos : pos + self.chunk_samples]


class Microphone:
    """Live input through sounddevice (PortAudio).

    The PortAudio callback only copies the block into a preallocated pool and
    hands it to the event loop; a bounded queue drops the oldest block when the
    consumer falls behind (counted in ``overruns``, as are PortAudio's own
    input-overflow flags). Exceptions in the callback are caught and re-raised
    in the consumer: sounddevice would otherwise swallow them silently.

    Parameters
    ----------
    device : int or str, optional
        sounddevice input device (default: the system default input).
    sample_rate_hz : int
        Capture rate; voxquant resamples if the model's differs.
    block_ms : float
        Block size handed over per callback.
    queue_blocks : int
        Queue bound; older blocks are dropped beyond it.
    """

    def __init__(
        self,
        device: int | str | None = None,
        *,
        sample_rate_hz: int = 16000,
        block_ms: float = 20.0,
        queue_blocks: int = 100,
    ):
        self.device = device
        self.sample_rate_hz = int(sample_rate_hz)
        self.block_samples = max(1, int(round(block_ms * sample_rate_hz / 1000.0)))
        self.queue_blocks = int(queue_blocks)
        self._stream = None
        self._queue: DropOldestQueue | None = None
        self._pool = np.zeros((self.queue_blocks + 2, self.block_samples), np.float32)
        self._next = 0
        self.input_overflows = 0
        self.first_block_at: float | None = None

    @property
    def overruns(self) -> int:
        dropped = self._queue.dropped if self._queue is not None else 0
        return dropped + self.input_overflows

    async def __aenter__(self) -> Microphone:
        try:
            import sounddevice as sd
        except OSError as exc:  # PortAudio library missing
            raise AudioSourceError(f"PortAudio is not available: {exc}") from None
        loop = asyncio.get_running_loop()
        self._queue = DropOldestQueue(self.queue_blocks)
        queue = self._queue

        def callback(indata, frames, time_info, status):  # PortAudio thread
            try:
                if status.input_overflow:
                    self.input_overflows += 1
                block = self._pool[self._next % self._pool.shape[0], :frames]
                self._next += 1
                np.copyto(block, indata[:, 0])
                loop.call_soon_threadsafe(queue.put_nowait, block)
            except BaseException as exc:  # never let PortAudio swallow it
                loop.call_soon_threadsafe(queue.put_error, AudioSourceError(repr(exc)))

        try:
            self._stream = sd.InputStream(
                device=self.device,
                channels=1,
                samplerate=self.sample_rate_hz,
                blocksize=self.block_samples,
                dtype="float32",
                callback=callback,
            )
            self._stream.start()
        except Exception as exc:  # sounddevice.PortAudioError, ValueError on bad device
            raise AudioSourceError(f"cannot open input device {self.device!r}: {exc}") from None
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._stream is not None:
            try:
                self._stream.stop()
                self._stream.close()
            finally:
                self._stream = None

    def __aiter__(self) -> AsyncIterator[np.ndarray]:
        return self._blocks()

    async def _blocks(self) -> AsyncIterator[np.ndarray]:
        if self._queue is None:
            raise AudioSourceError("use 'async with Microphone(...)' before iterating")
        while True:
            block = await self._queue.get()
            if block is None:
                return
            if self.first_block_at is None:
                self.first_block_at = time.monotonic()
            yield block

