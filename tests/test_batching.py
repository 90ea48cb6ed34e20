"""SharedBatcher: many threads' items in shared model calls, with the out-of-memory backoff."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from voxdock.engine.batching import SharedBatcher
from voxdock.engine.oom import (
    GROW_AFTER_SUCCESSES,
    AdaptiveBatch,
    FaultInjector,
    InjectedFault,
    OutOfMemory,
    torch_oom,
)


def _wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.005)


def _queued(batcher: SharedBatcher[Any, Any]) -> int:
    """Items waiting for a model call (the batcher's own queue: no public view of it)."""
    return len(batcher._queue)


def _recorded(
    batcher: SharedBatcher[Any, Any],
) -> tuple[dict[str, Any], Callable[[str, list[Any]], None]]:
    """(outcomes, work): `work(name, items)` maps the items and records the results, or the error,
    under `name`."""
    outcomes: dict[str, Any] = {}

    def work(name: str, items: list[Any]) -> None:
        try:
            outcomes[name] = batcher.map(items)
        except Exception as exc:
            outcomes[name] = exc

    return outcomes, work


class _Holder:
    """Makes the batcher's first model call wait until released, so that other threads' items queue
    up behind it meanwhile (deterministic sharing without sleeps)."""

    def __init__(self, run: Callable[[Sequence[Any]], list[Any]]) -> None:
        self.run = run
        self.calls: list[list[Any]] = []
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, batch: Sequence[Any]) -> list[Any]:
        self.calls.append(list(batch))
        if len(self.calls) == 1:
            self.started.set()
            assert self.release.wait(10)
        return self.run(batch)


def test_results_come_back_in_order_for_many_threads() -> None:
    def run(batch: Sequence[int]) -> list[int]:
        time.sleep(0.001)  # let other threads queue while the model works
        return [x * 10 for x in batch]

    batcher: SharedBatcher[int, int] = SharedBatcher(run, AdaptiveBatch(8))

    def work(thread: int) -> list[int]:
        return batcher.map([thread * 1000 + i for i in range(37)])

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(8)))
    for thread, out in enumerate(results):
        assert out == [(thread * 1000 + i) * 10 for i in range(37)]
    assert batcher.map([]) == []
    assert batcher.calls >= 8 * 37 / 8  # never more than a batch per call


def test_items_of_several_threads_share_model_calls() -> None:
    holder = _Holder(lambda batch: [f"{t}:{i}!" for t, i in batch])
    batcher: SharedBatcher[tuple[int, int], str] = SharedBatcher(holder, AdaptiveBatch(64))
    results: dict[int, list[str]] = {}

    def work(thread: int) -> None:
        results[thread] = batcher.map([(thread, i) for i in range(5)])

    first = threading.Thread(target=work, args=(0,))
    first.start()
    assert holder.started.wait(10)
    others = [threading.Thread(target=work, args=(t,)) for t in range(1, 8)]
    for thread in others:
        thread.start()
    _wait_until(lambda: _queued(batcher) == 7 * 5)
    holder.release.set()
    for thread in [first, *others]:
        thread.join(10)
    # Thread 0's own call, then one call for the 35 items of the seven others (not seven calls).
    assert batcher.calls == 2
    assert {t for t, _ in holder.calls[1]} == set(range(1, 8))
    for number in range(8):
        assert results[number] == [f"{number}:{i}!" for i in range(5)]


def test_out_of_memory_halves_the_batch_and_loses_nothing() -> None:
    faults = FaultInjector()
    # The "GPU" holds at most 3 items: larger calls raise torch's real OutOfMemoryError.
    faults.add(InjectedFault("diarize", error=torch_oom, when=lambda n: n > 3, remaining=None))
    backoffs: list[tuple[int, int]] = []
    batch = AdaptiveBatch(16, on_backoff=lambda failed, now: backoffs.append((failed, now)))

    def run(items: Sequence[int]) -> list[int]:
        faults.check("diarize", len(items))
        return [x + 1 for x in items]

    batcher: SharedBatcher[int, int] = SharedBatcher(run, batch)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda t: batcher.map(list(range(t * 100, t * 100 + 25))), range(4)))
    for thread, out in enumerate(results):
        assert out == [x + 1 for x in range(thread * 100, thread * 100 + 25)]
    assert backoffs[:3] == [(16, 8), (8, 4), (4, 2)]
    # It settles where calls fit (growing back to 4 now and then, which fails again).
    assert 2 <= batch.current <= 4
    # Every item ran exactly once in a call that fitted: nothing lost, nothing run twice.
    assert sum(n for n in faults.batch_sizes["diarize"] if n <= 3) == 100


def test_only_calls_of_the_full_size_grow_the_batch_back() -> None:
    """After a backoff the size grows again only once calls of that full size have fitted: calls of
    fewer items (a remainder, a group of equal lengths) prove nothing about it."""
    batch = AdaptiveBatch(16)
    faults = FaultInjector()
    faults.add(InjectedFault("diarize", error=torch_oom, when=lambda n: n > 2, remaining=1))

    def run(items: Sequence[int]) -> list[int]:
        faults.check("diarize", len(items))
        return list(items)

    batch.map(list(range(4)), run)  # 4 fails once: halved to 2, then two calls of 2
    assert batch.current == 2
    for _ in range(GROW_AFTER_SUCCESSES * 2):
        batch.map([0], run)  # single items fit at any size
    assert batch.current == 2
    for _ in range(GROW_AFTER_SUCCESSES):
        batch.map([0, 1], run)
    assert batch.current == 4


def test_an_item_too_large_even_alone_fails_its_caller_only() -> None:
    faults = FaultInjector()
    faults.add(InjectedFault("diarize", error=torch_oom, when=lambda n: True, remaining=None))

    def run(items: Sequence[int]) -> list[int]:
        faults.check("diarize", len(items))
        return list(items)

    batcher: SharedBatcher[int, int] = SharedBatcher(run, AdaptiveBatch(4))
    with pytest.raises(OutOfMemory, match="one item does not fit"):
        batcher.map([1, 2, 3])
    faults._faults.clear()  # the device has room again
    assert batcher.map([4, 5]) == [4, 5]


def test_a_model_error_reaches_exactly_the_callers_in_that_call() -> None:
    def answer(batch: Sequence[Any]) -> list[Any]:
        if "bad" in batch:
            raise ValueError("the model failed on this batch")
        return [x.upper() if isinstance(x, str) else x * 2 for x in batch]

    holder = _Holder(answer)
    # Strings and numbers never share a call (their group keys differ).
    batcher: SharedBatcher[Any, Any] = SharedBatcher(
        holder, AdaptiveBatch(64), group=lambda item: type(item).__name__
    )
    outcomes, work = _recorded(batcher)

    holding = threading.Thread(target=work, args=("holder", ["h"]))
    holding.start()
    assert holder.started.wait(10)
    queued: dict[str, list[Any]] = {
        "poisoned": ["b1", "bad"],
        "beside the poison": ["c1"],
        "numbers": [7, 8],
    }
    threads = [threading.Thread(target=work, args=item) for item in queued.items()]
    expected = 0
    for thread, items in zip(threads, queued.values(), strict=True):  # queued in this order
        thread.start()
        expected += len(items)
        _wait_until(functools.partial(lambda n: _queued(batcher) == n, expected))
    holder.release.set()
    for thread in [holding, *threads]:
        thread.join(10)
    assert outcomes["holder"] == ["H"]
    # The failing call held the poisoned caller's items and its neighbour's: both get the error.
    assert isinstance(outcomes["poisoned"], ValueError)
    assert isinstance(outcomes["beside the poison"], ValueError)
    assert outcomes["numbers"] == [14, 16]  # another call: unaffected
    assert [sorted(map(str, c)) for c in holder.calls] == [["h"], ["b1", "bad", "c1"], ["7", "8"]]
    # The batcher keeps working for the next callers.
    assert batcher.map(["d1", "d2"]) == ["D1", "D2"]
    assert batcher.map([]) == []


def test_an_error_does_not_reach_callers_of_other_calls_of_the_same_take() -> None:
    def answer(batch: Sequence[str]) -> list[str]:
        if "bad" in batch:
            raise ValueError("the model failed on this batch")
        return [x.upper() for x in batch]

    holder = _Holder(answer)
    batcher: SharedBatcher[str, str] = SharedBatcher(holder, AdaptiveBatch(2))  # two items a call
    outcomes, work = _recorded(batcher)

    holding = threading.Thread(target=work, args=("holder", ["h"]))
    holding.start()
    assert holder.started.wait(10)
    poisoned = threading.Thread(target=work, args=("poisoned", ["bad", "b2"]))
    poisoned.start()
    _wait_until(lambda: _queued(batcher) == 2)
    clean = threading.Thread(target=work, args=("clean", ["c1", "c2"]))
    clean.start()
    _wait_until(lambda: _queued(batcher) == 4)
    holder.release.set()
    for thread in (holding, poisoned, clean):
        thread.join(10)
    assert isinstance(outcomes["poisoned"], ValueError)
    assert outcomes["clean"] == ["C1", "C2"]  # its items were in a call of their own


def test_group_keys_keep_different_shapes_apart() -> None:
    shapes: list[set[tuple[int, ...]]] = []

    def run(batch: Sequence[np.ndarray]) -> list[float]:
        shapes.append({a.shape for a in batch})
        return [float(x) for x in np.stack(batch).sum(axis=1)]  # stacking needs one shape

    batcher: SharedBatcher[np.ndarray, float] = SharedBatcher(run, AdaptiveBatch(16), group=lambda a: a.shape)

    def work(thread: int) -> list[float]:
        rng = np.random.default_rng(thread)
        items = [rng.standard_normal(3 if (thread + i) % 2 else 5) for i in range(20)]
        out = batcher.map(items)
        np.testing.assert_allclose(out, [a.sum() for a in items])
        return out

    with ThreadPoolExecutor(6) as pool:
        assert all(len(out) == 20 for out in pool.map(work, range(6)))
    assert shapes and all(len(s) == 1 for s in shapes)
