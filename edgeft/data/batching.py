"""Cutting examples into batches.

Text batches are padded to their longest sequence, so a batch mixing short and long texts
spends most of its compute on padding. Training batches are therefore formed from examples of
similar length, chosen within large random chunks and served in random order, which keeps
most of the benefit of shuffling while padding far less.
"""

from __future__ import annotations

import numpy as np

# Batches per length-sorted chunk: large enough to find similar lengths, small enough to stay random.
BUCKET_BATCHES = 50


def length_bucketed_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                            bucket: bool = True) -> list[np.ndarray]:
    """Shuffled batches of example indices (every index exactly once, last batch may be short).

    With ``bucket`` the shuffled order is cut into chunks of ``batch_size * 50`` examples, each
    chunk is sorted by length (stably), cut into batches, and the batch order is shuffled. The
    result depends only on ``lengths``, ``batch_size`` and the state of ``rng``.
    """
    lengths = np.asarray(lengths)
    order = rng.permutation(len(lengths))
    if bucket:
        chunk = batch_size * BUCKET_BATCHES
        pieces = [order[start:start + chunk] for start in range(0, len(order), chunk)]
        order = np.concatenate([piece[np.argsort(lengths[piece], kind="stable")] for piece in pieces] or [order])
    batches = [order[batch] for batch in sequential_batches(len(order), batch_size)]
    if bucket:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def sequential_batches(n: int, batch_size: int) -> list[np.ndarray]:
    """Indices 0..n-1 in order, in batches of ``batch_size`` (the last may be short): for evaluation."""
    return [np.arange(start, min(start + batch_size, n), dtype=np.int64) for start in range(0, n, batch_size)]
