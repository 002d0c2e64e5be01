"""Holding out a validation set when the user gives none.

Classes are split one by one so that a rare class still appears in both parts; otherwise a
small dataset can lose a class from validation (its metrics then say nothing about it) or from
training (the model never sees it).
"""

from __future__ import annotations

import numpy as np


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_indices, val_indices), both sorted, with about ``fraction`` (0 < fraction < 1) in validation.

    Integer labels (classification) are split per class: a class with at least two examples
    puts round(fraction * count) of them, at least one and at most count - 1, into validation;
    a class with one example stays in training. Float labels (multi-label, regression) get a
    plain random split of the same size rule. The same labels, fraction and seed give the same split.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    if labels.ndim == 1 and np.issubdtype(labels.dtype, np.integer):
        groups = [np.flatnonzero(labels == value) for value in np.unique(labels)]
    else:
        groups = [np.arange(len(labels))]
    val = [rng.permutation(group)[:_held_out(len(group), fraction)] for group in groups]
    val_indices = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    train_indices = np.setdiff1d(np.arange(len(labels)), val_indices)
    return train_indices.astype(np.int64), val_indices.astype(np.int64)


def _held_out(count: int, fraction: float) -> int:
    """How many of ``count`` examples go to validation: round(fraction * count) within 1..count-1."""
    if count < 2:
        return 0
    return min(max(1, round(fraction * count)), count - 1)


def grouped_split(groups: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_indices, val_indices) for the embedding task, where an example is evaluated by
    retrieving the other members of its group: validation needs two members of a group or none.

    A group of at least four examples is split within itself (at least two on each side); groups
    of two or three, such as (text, positive) pairs, go whole to one side, ``fraction`` of them to
    validation (at least one when nothing else is there and two or more exist); a group of one
    stays in training. The same groups, fraction and seed give the same split."""
    groups = np.asarray(groups)
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(groups == value) for value in np.unique(groups)]
    val = [rng.permutation(m)[:min(max(2, round(fraction * len(m))), len(m) - 2)] for m in members if len(m) >= 4]
    small = [m for m in members if 2 <= len(m) < 4]  # a lone text has nothing to be found by: it stays to train
    taken = round(fraction * len(small)) if val else max(1, round(fraction * len(small))) if len(small) >= 2 else 0
    val += [small[i] for i in rng.permutation(len(small))[:taken]]
    val_indices = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    train_indices = np.setdiff1d(np.arange(len(groups)), val_indices)
    return train_indices.astype(np.int64), val_indices.astype(np.int64)
