"""Learning-rate schedules: linear warm-up, then constant, linear or cosine decay.

The loop sets the rate before every optimizer step, so the schedule is a pure function of the
step number and a resumed run continues on exactly the same curve.
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "linear", "cosine")


def learning_rate(step: int, total_steps: int, base: float, warmup_steps: int = 0, kind: str = "linear",
                  floor: float = 0.0) -> float:
    """Rate for optimizer step ``step`` (0-based) of ``total_steps``; decays towards ``floor * base``."""
    if warmup_steps > 0 and step < warmup_steps:
        return base * (step + 1) / warmup_steps
    if kind == "constant" or total_steps <= warmup_steps:
        return base
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if kind == "linear":
        factor = 1.0 - progress
    elif kind == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        raise ValueError(f"unknown schedule {kind!r}")
    return base * (floor + (1.0 - floor) * factor)
