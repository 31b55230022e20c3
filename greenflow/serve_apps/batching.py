"""Dynamic batching without a wait: the calls that reach a replica together share one batch.

``MicroBatcher`` stands where ``@serve.batch(batch_wait_timeout_s=0)`` stood in the stage
and allocator replicas, and batches the same way: a batch is whatever queued while the
previous one ran. It does less per call: no timer task, no queue, no per-batch metrics
(``serve.batch`` records six), which cost ~0.5 ms per call in a replica on a 2-core node —
paid by every request at every hop when the app runs one request at a time.

The batch function runs synchronously on the replica's event loop (models of 1-10 ms per
batch on one thread): requests that arrive meanwhile wait in Ray's queue and form the next
batch. ``CallBatcher`` batches the same way for an async function (a remote call): the
allocator sends the stage calls of the requests that travel together as one Serve call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Batcher(Generic[T, R]):
    """The scheduling shared by both batchers; ``_run`` serves one batch."""

    def __init__(self, max_batch: int, linger_s: float) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._last_size = 0  # items in the last batch: > 1 means load
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._flush_handle: asyncio.Handle | None = None

    async def __call__(self, item: T) -> R:
        return await self.submit(item)

    def submit(self, item: T) -> asyncio.Future[R]:
        """Queue ``item`` now (its batch's flush is scheduled before anything queued on the
        event loop after this call); the future of its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if len(self._pending) >= self._max_batch:
            self._schedule(loop, 0.0)  # a full batch goes at once
        elif self._flush_handle is None:
            self._schedule(loop, self._linger_s if self._last_size > 1 else 0.0)
        return future

    def _schedule(self, loop: asyncio.AbstractEventLoop, delay_s: float) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        if delay_s > 0:
            self._flush_handle = loop.call_later(delay_s, self._flush)
        else:
            self._flush_handle = loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        batch = self._pending[: self._max_batch]
        self._pending = self._pending[self._max_batch :]
        if self._pending:  # more than one batch queued: the rest goes next turn
            self._schedule(asyncio.get_running_loop(), 0.0)
        self._last_size = len(batch)
        self._run(batch)

    def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        raise NotImplementedError


class MicroBatcher(_Batcher[T, R]):
    """``await batcher(item)``: ``fn`` runs on up to ``max_batch`` items per call.

    The first item of an event-loop turn schedules a flush (``loop.call_soon``); every item
    added before it runs joins the batch. A lone request is served at once. Under load
    (the last batch held more than one item) the flush waits ``linger_s`` for more items,
    so batches grow where they save work and one request at a time never waits. ``fn``
    must return one result per item, in order; if it raises, every caller of the batch
    gets the error. A cancelled caller's result is dropped.
    """

    def __init__(self, fn: Callable[[list[T]], Sequence[R]], max_batch: int,
                 linger_s: float = 0.0) -> None:  # fmt: skip
        super().__init__(max_batch, linger_s)
        self._fn = fn

    def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = self._fn([item for item, _ in batch])
        except Exception as err:
            _fail(batch, err)
            return
        _resolve(batch, results)


class CallBatcher(_Batcher[T, R]):
    """``MicroBatcher`` for a remote call: ``fn(items)`` is called at the flush (so a remote
    call it makes goes out then) and returns an awaitable of the results, awaited in a task
    of its own, so a batch in flight does not hold back the next one. Used by the allocator
    to send the stage calls of requests that travel together as one Serve call."""

    def __init__(self, fn: Callable[[list[T]], Awaitable[Sequence[R]]], max_batch: int,
                 linger_s: float = 0.0) -> None:  # fmt: skip
        super().__init__(max_batch, linger_s)
        self._fn = fn
        self._tasks: set[asyncio.Task[None]] = set()  # kept: the loop holds tasks weakly

    def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            call = self._fn([item for item, _ in batch])
        except Exception as err:
            _fail(batch, err)
            return
        task = asyncio.get_running_loop().create_task(self._wait(batch, call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _wait(self, batch: list[tuple[T, asyncio.Future[R]]],
                    call: Awaitable[Sequence[R]]) -> None:  # fmt: skip
        try:
            results = await call
        except Exception as err:
            _fail(batch, err)
            return
        _resolve(batch, results)


def _fail(batch: Sequence[tuple[object, asyncio.Future[R]]], err: Exception) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(err)


def _resolve(batch: Sequence[tuple[object, asyncio.Future[R]]], results: Sequence[R]) -> None:
    """One result per item, in order; else every caller gets the error."""
    if len(results) != len(batch):
        _fail(batch, RuntimeError(f"batch of {len(batch)} got {len(results)} results"))
        return
    for (_, future), result in zip(batch, results, strict=True):
        if not future.done():  # done = cancelled by its caller (a timeout)
            future.set_result(result)
