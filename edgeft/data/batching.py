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


def token_pieces(batch: np.ndarray, lengths: np.ndarray, max_tokens: int) -> list[np.ndarray]:
    """``batch`` cut into consecutive pieces whose padded size (examples x longest length) is at
    most ``max_tokens`` (a piece holds one example at least; 0: no limit). Training runs a long
    batch piece by piece with the gradients weighted by each piece's share, which is the same
    update with the memory of a short batch: activation memory grows with the padded tokens."""
    if max_tokens <= 0 or len(batch) * int(np.max(lengths[batch], initial=0)) <= max_tokens:
        return [batch]
    pieces, start, longest = [], 0, 0
    for end in range(len(batch)):
        longest = max(longest, int(lengths[batch[end]]))
        if end > start and (end - start + 1) * longest > max_tokens:
            pieces.append(batch[start:end])
            start, longest = end, int(lengths[batch[end]])
    pieces.append(batch[start:])
    return pieces


def grouped_batches(groups: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches for the embedding task's in-batch contrastive loss (every index once).

    An example teaches only when a member of its group shares its batch, and random batches of
    32 from 77 groups would rarely hold one. So each group's members (in random order) are dealt
    in twos (an odd group ends with a three; a group of one stays alone and serves as a negative),
    the units are shuffled, and batches are filled with whole units, which keeps the other units
    of a batch as its negatives. The result depends only on ``groups``, ``batch_size`` and the
    state of ``rng``."""
    groups = np.asarray(groups)
    order = rng.permutation(len(groups))
    members: dict[int, list[int]] = {}
    for index in order:
        members.setdefault(int(groups[index]), []).append(int(index))
    units: list[list[int]] = []
    for group in members.values():
        cut = [group[start:start + 2] for start in range(0, len(group), 2)]
        if len(cut) > 1 and len(cut[-1]) == 1:
            last = cut.pop()
            cut[-1] += last
        units += cut
    batches: list[list[int]] = []
    current: list[int] = []
    for unit in (units[i] for i in rng.permutation(len(units))):
        if current and len(current) + len(unit) > batch_size:
            batches.append(current)
            current = []
        current = current + unit
    if current:
        batches.append(current)
    return [np.array(batch, dtype=np.int64) for batch in batches]
