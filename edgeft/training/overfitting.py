"""Telling a user when fine-tuning starts to memorise: validation loss rising epoch after epoch
while training loss falls.

Early stopping (``--patience``) acts on the metric it watches; this looks at the losses, which
move first, and says so whether or not early stopping is on, so a user who asked for 30 epochs
learns that the last ones only fitted the training data (the best checkpoint is kept anyway).
"""

from __future__ import annotations

from typing import Any

RISING_EPOCHS = 2  # consecutive epochs of rising validation loss (and falling training loss)


def overfitting_since(history: list[dict[str, Any]], epochs: int = RISING_EPOCHS) -> int | None:
    """The epoch after which validation loss has risen in every epoch since (at least ``epochs``
    in a row, up to the last) while training loss fell over those epochs, or None. ``history``:
    the run's ``metrics.jsonl`` records."""
    trained = [h for h in history if h.get("train_loss") is not None and (h.get("val") or {}).get("loss") is not None]
    start = len(trained) - 1
    while start > 0 and trained[start]["val"]["loss"] > trained[start - 1]["val"]["loss"]:
        start -= 1
    if not trained or len(trained) - 1 - start < epochs or trained[-1]["train_loss"] >= trained[start]["train_loss"]:
        return None
    return int(trained[start]["epoch"])


def describe(history: list[dict[str, Any]], since: int, best_epoch: int | None) -> str:
    """The note for a run that started to overfit after epoch ``since``."""
    losses = {h["epoch"]: h["val"]["loss"] for h in history if (h.get("val") or {}).get("loss") is not None}
    now = history[-1]["epoch"]
    kept = f"the best checkpoint (epoch {best_epoch}) is kept in best/" if best_epoch else "the checkpoints are kept"
    return (f"overfitting: validation loss rose from {losses[since]:.4f} (epoch {since}) to {losses[now]:.4f} "
            f"(epoch {now}) while training loss fell; {kept}. Fewer epochs, --patience, more data or --l2sp help.")
