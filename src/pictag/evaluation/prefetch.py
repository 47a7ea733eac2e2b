"""Decoding overlapped with inference: batches whose items are loaded, and then finished into
the model's input, on a thread pool one batch ahead of the caller (:func:`prefetched`), and
model calls that run several batches at once (:func:`in_flight`).

``pictag predict`` on a CPU spends ~1.5 ms a photo decoding and resizing it and ~0.5-1.5 ms
stacking and normalising it with its batch (200 photos of 224 px: 0.34 s of a 2.8 s command
when the caller did the stacking), and the model's threads leave gaps (Python between calls,
the narrow layers of a small network): with the next batch prepared meanwhile, those gaps do
useful work and the caller only hands batches to the model.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future
from itertools import pairwise
from typing import TypeVar

DECODE_THREADS = 4  # Pillow and torch's resize release the GIL, so threads decode in parallel
ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")
FinishedT = TypeVar("FinishedT")
InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")


def batches(items: Sequence[ItemT], size: int, streams: int = 1) -> list[Sequence[ItemT]]:
    """``items`` in order, in batches of at most ``size``; with several ``streams``, a multiple
    of ``streams`` batches (one per item when there are fewer items) of near-equal size, so
    that the last round of calls keeps every stream busy: 200 images, 32 a batch, 2 streams
    give 8 batches of 25 (not six of 32 and one of 8), 224 give 8 of 28 (not seven of 32, the
    last of which one stream would compute while the other's core waited).
    """
    if size < 1 or streams < 1:
        raise ValueError(f"size and streams must be >= 1, got {size} and {streams}")
    if streams == 1:
        return [items[start : start + size] for start in range(0, len(items), size)]
    count = -(-len(items) // size)  # ceil
    count = min(len(items), -(-count // streams) * streams)
    if count == 0:
        return []
    share, extra = divmod(len(items), count)
    bounds = [0]
    for index in range(count):
        bounds.append(bounds[-1] + share + (index < extra))
    return [items[start:end] for start, end in pairwise(bounds)]


def prefetched(
    load: Callable[[ItemT], ResultT],
    chunks: Sequence[Sequence[ItemT]],
    pool: Executor,
    finish: Callable[[list[ResultT]], FinishedT],
) -> Iterator[FinishedT]:
    """``finish([load(item) for item in chunk])`` for each chunk, in order, the next chunk
    loading and finishing on ``pool`` while the caller works on the current one (two chunks in
    memory at most).

    Args:
        load: Loads one item; an exception it raises comes out of the chunk that holds the item
            (handle per-item errors inside ``load`` to keep the rest of a chunk).
        chunks: The items, batched.
        pool: Runs ``load`` and ``finish``; its worker count is how many items load at once.
        finish: Makes one result of a chunk's loaded items (e.g. stacks them into a batch);
            ``list`` keeps them as they are.
    """

    def submit(chunk: Sequence[ItemT]) -> list[Future]:
        items = [pool.submit(load, item) for item in chunk]
        # Submitted after its items, so a worker takes it up only once each item has been
        # taken up: its wait ends, whatever the pool's size.
        return [*items, pool.submit(lambda: finish([future.result() for future in items]))]

    pending = submit(chunks[0]) if chunks else []
    for index in range(len(chunks)):
        current = pending
        pending = submit(chunks[index + 1]) if index + 1 < len(chunks) else []
        try:
            yield current[-1].result()
        except BaseException:
            # The caller gave up (an error, or it stopped iterating): drop the prefetched chunk
            # rather than decode it for nobody.
            for future in pending:
                future.cancel()
            raise


def in_flight(
    batches: Iterable[tuple[ItemT, InputT | None]],
    call: Callable[[InputT], OutputT],
    pool: Executor,
    streams: int,
) -> Iterator[tuple[ItemT, OutputT | None]]:
    """``(items, call(model_input))`` for each ``(items, model_input)`` of ``batches``, in
    order, with up to ``streams`` calls running on ``pool`` at once (a model input of None, a
    batch with nothing to compute, gives None without a call).

    The next batch is taken from ``batches`` (e.g. :func:`prefetched`) only when fewer than
    ``streams`` of the batches taken have been given back, so ``streams`` model inputs are
    held here at most (plus any that ``batches`` prepares ahead). When the caller stops early
    or a call fails, the calls not yet started are cancelled and ``batches`` is closed (a
    generator such as :func:`prefetched` then drops the batch it prepares ahead).
    """
    pending: deque[tuple[ItemT, Future | None]] = deque()

    def oldest() -> tuple[ItemT, OutputT | None]:
        items, future = pending.popleft()
        return items, None if future is None else future.result()

    try:
        for items, model_input in batches:
            future = None if model_input is None else pool.submit(call, model_input)
            pending.append((items, future))
            if len(pending) >= streams:
                yield oldest()
        while pending:
            yield oldest()
    except BaseException:
        for _, future in pending:
            if future is not None:
                future.cancel()
        close = getattr(batches, "close", None)
        if close is not None:
            close()
        raise
