"""The overfitting note: validation loss rising for two epochs in a row while training loss falls."""

from __future__ import annotations

from edgeft.training.overfitting import describe, overfitting_since


def history(train: list[float], val: list[float]) -> list[dict]:
    return [{"epoch": 0, "step": 0, "val": {"loss": 2.0}}] + [
        {"epoch": i + 1, "train_loss": t, "val": {"loss": v}} for i, (t, v) in enumerate(zip(train, val))]


def test_rising_validation_loss_with_falling_training_loss_is_overfitting():
    runs = history([1.0, 0.6, 0.4, 0.3, 0.2], [0.9, 0.7, 0.72, 0.8, 0.9])
    assert overfitting_since(runs[:-2]) is None  # one rise (0.7 -> 0.72) may be noise
    assert overfitting_since(runs[:-1]) == 2  # two in a row: since epoch 2 (0.7 -> 0.72 -> 0.8)
    assert overfitting_since(runs) == 2  # and still rising: since epoch 2
    note = describe(runs[:-1], 2, 2)
    assert "0.7000 (epoch 2)" in note and "0.8000 (epoch 4)" in note and "best checkpoint (epoch 2)" in note


def test_other_shapes_are_not_overfitting():
    assert overfitting_since(history([1.0, 0.8, 0.7, 0.6], [0.9, 0.8, 0.7, 0.65])) is None  # both fall
    assert overfitting_since(history([1.0, 0.8, 0.9, 1.0], [0.9, 0.8, 0.85, 0.9])) is None  # both rise: diverging
    assert overfitting_since(history([1.0, 0.8, 0.6, 0.5], [0.9, 0.95, 0.9, 1.0])) is None  # rise, fall, rise
    assert overfitting_since(history([1.0, 0.8], [0.9, 1.0])) is None  # too short to tell
    assert overfitting_since([{"epoch": 1, "train_loss": 1.0}, {"epoch": 2, "train_loss": 0.5},
                              {"epoch": 3, "train_loss": 0.2}]) is None  # no validation data
