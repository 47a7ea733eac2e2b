"""Decoding overlapped with inference: batches whose items are loaded on a thread pool one batch
ahead of the caller.

``pictag predict`` on a CPU spends ~1.5 ms a photo decoding, resizing and normalising it, and
the model's threads leave gaps (Python between calls, the narrow layers of a small network):
with the next batch decoding meanwhile, those gaps do useful work instead of the whole batch's
decoding waiting for the model, and the model for the decoding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future
from typing import TypeVar

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


def prefetched(
    load: Callable[[ItemT], ResultT], chunks: Sequence[Sequence[ItemT]], pool: Executor
) -> Iterator[list[ResultT]]:
    """``[load(item) for item in chunk]`` for each chunk, in order, the next chunk loading on
    ``pool`` while the caller works on the current one (two chunks in memory at most).

    Args:
        load: Loads one item; an exception it raises comes out of the chunk that holds the item
            (handle per-item errors inside ``load`` to keep the rest of a chunk).
        chunks: The items, batched.
        pool: Runs ``load``; its worker count is how many items load at once.
    """

    def submit(chunk: Sequence[ItemT]) -> list[Future[ResultT]]:
        return [pool.submit(load, item) for item in chunk]

    pending = submit(chunks[0]) if chunks else []
    for index in range(len(chunks)):
        current = pending
        pending = submit(chunks[index + 1]) if index + 1 < len(chunks) else []
        try:
            yield [future.result() for future in current]
        except BaseException:
            # The caller gave up (an error, or it stopped iterating): drop the prefetched chunk
            # rather than decode it for nobody.
            for future in pending:
                future.cancel()
            raise
