"""GPU out-of-memory handling shared by every batched stage.

On out-of-memory a stage halves its batch and retries the same items, then grows back after a run of
successes. It never switches to a one-item-at-a-time mode for the rest of the run (the 20x slower
path the old pipeline fell into), never empties the CUDA cache per batch, and never drops an item:
only when a single item does not fit does the error reach the file.

The same path runs on CPU: tests make the model call raise the real error types through a
FaultInjector.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

GROW_AFTER_SUCCESSES = 8


class OutOfMemory(RuntimeError):
    """A single item did not fit in device memory even alone."""


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's OutOfMemoryError, or CTranslate2/cuBLAS/cuDNN's RuntimeError that says so."""
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    if isinstance(exc, (RuntimeError, MemoryError)):
        text = str(exc).lower()
        return any(
            marker in text
            for marker in (
                "out of memory",
                "cuda_error_out_of_memory",
                "cublas_status_alloc_failed",
                "cudnn_status_alloc_failed",
                "cufft_alloc_failed",
                "cublas_status_not_initialized",  # cuBLAS could not allocate its handle's workspace
                "failed to allocate",
            )
        )
    return False


def release_cached_memory() -> None:
    """Hand torch's cached CUDA blocks back to the driver before a retry: torch and CTranslate2 keep
    separate caches, and what one holds idle the other cannot use (halving a batch then never fits)."""
    try:
        import torch

        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()
    except Exception:  # pragma: no cover - best effort: the retry still halves the batch
        pass


def retry_after_release(run: Callable[[], R]) -> R:
    """`run()`; after out-of-memory, torch's cache handed back and `run()` once more. For device work
    that cannot be made smaller (a filterbank over a block's audio): it fails only if the card is
    full without the cache, and then as OutOfMemory."""
    try:
        return run()
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
    release_cached_memory()
    try:
        return run()
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        raise OutOfMemory(f"does not fit in device memory: {exc}") from exc


class AdaptiveBatch:
    """The batch size a stage runs with right now: the configured one, or less after out-of-memory."""

    def __init__(
        self,
        configured: int,
        on_backoff: Callable[[int, int], None] | None = None,
        measure: Callable[[int], AbstractContextManager[object]] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._configured = configured
        self._current = configured
        self._successes = 0
        self._on_backoff = on_backoff
        # Wraps each model call with its item count: the engine's VRAM meter (engine/vram.py).
        self._measure = measure or (lambda _items: nullcontext())

    @property
    def configured(self) -> int:
        return self._configured

    def report_to(
        self,
        on_backoff: Callable[[int, int], None] | None,
        measure: Callable[[int], AbstractContextManager[object]] | None = None,
    ) -> None:
        """Send back-offs to `on_backoff` and wrap each call in `measure` from now on (for a batch made
        before the engine that watches it: the VAD's, made when the models load)."""
        self._on_backoff = on_backoff
        self._measure = measure or (lambda _items: nullcontext())

    @property
    def current(self) -> int:
        return self._current

    def configure(self, size: int) -> None:
        with self._lock:
            self._configured = size
            self._current = size
            self._successes = 0

    def _backoff(self, failed_size: int) -> int:
        with self._lock:
            new = max(1, failed_size // 2)
            self._current = min(self._current, new)
            self._successes = 0
            size = self._current
        if self._on_backoff:
            self._on_backoff(failed_size, size)
        return size

    def _succeeded(self, size: int) -> None:
        """A call of `size` items fitted. Only a call of the full current size counts towards growing
        again: smaller ones (a remainder, a group of equal lengths) prove nothing about it."""
        with self._lock:
            if self._current >= self._configured or size < self._current:
                return
            self._successes += 1
            if self._successes >= GROW_AFTER_SUCCESSES:
                self._current = min(self._configured, self._current * 2)
                self._successes = 0

    def map(self, items: Sequence[T], run: Callable[[Sequence[T]], list[R]]) -> list[R]:
        """Run `run` over `items` in chunks of the current size; on out-of-memory halve and retry the
        same chunk. Returns one result per item, in order."""
        results: list[R] = []

        def part(start: int, stop: int) -> None:
            out = run(items[start:stop])
            if len(out) != stop - start:
                raise RuntimeError(f"batch of {stop - start} gave {len(out)} results")
            results.extend(out)

        self.spans(len(items), part)
        return results

    def spans(self, total: int, run: Callable[[int, int], None]) -> None:
        """Call `run(start, stop)` over [0, total) in consecutive spans of the current size, in order;
        on out-of-memory halve and retry the same span (for work that carries state from one span to
        the next, such as a recurrent network over a file's windows: `run` keeps it only once done)."""
        position = 0
        while position < total:
            stop = min(total, position + self._current)
            fitted = True
            try:
                with self._measure(stop - position):
                    run(position, stop)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                if stop - position == 1:
                    raise OutOfMemory(f"one item does not fit in device memory: {exc}") from exc
                fitted = False
            if not fitted:  # out of the handler: its traceback no longer holds the span's tensors
                release_cached_memory()
                self._backoff(stop - position)
                continue
            self._succeeded(stop - position)
            position = stop

    def call(self, run: Callable[[int], R]) -> R:
        """For a model that batches internally (the ASR pipeline): call with the current size and
        halve on out-of-memory until it fits."""
        while True:
            size = self._current
            fitted = True
            try:
                with self._measure(size):
                    out = run(size)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                if size == 1:
                    raise OutOfMemory(f"does not fit in device memory at batch size 1: {exc}") from exc
                fitted = False
            if not fitted:  # out of the handler, as in `spans`
                release_cached_memory()
                self._backoff(size)
                continue
            self._succeeded(size)
            return out


@dataclass
class InjectedFault:
    stage: str
    error: Callable[[], BaseException]
    when: Callable[[int], bool]  # batch size -> raise?
    remaining: int | None  # None: for ever


class FaultInjector:
    """Makes a stage's model call raise, to exercise the out-of-memory path without a GPU."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[InjectedFault] = []
        self.raised: dict[str, int] = {}
        self.batch_sizes: dict[str, list[int]] = {}  # every model call's batch size, per stage

    def add(self, fault: InjectedFault) -> None:
        with self._lock:
            self._faults.append(fault)

    def check(self, stage: str, batch_size: int) -> None:
        with self._lock:
            self.batch_sizes.setdefault(stage, []).append(batch_size)
            for fault in self._faults:
                if fault.stage != stage or not fault.when(batch_size):
                    continue
                if fault.remaining is not None:
                    if fault.remaining <= 0:
                        continue
                    fault.remaining -= 1
                self.raised[stage] = self.raised.get(stage, 0) + 1
                raise fault.error()


def torch_oom(message: str = "CUDA out of memory. Tried to allocate 2.00 GiB (injected)") -> BaseException:
    import torch

    return torch.OutOfMemoryError(message)


def ctranslate2_oom() -> BaseException:
    return RuntimeError("CUDA failed with error out of memory (injected)")
