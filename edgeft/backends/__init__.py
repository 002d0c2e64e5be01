"""Training backends that run a train step on the device (no torch needed)."""
