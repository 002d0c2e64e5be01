"""The run folder (device side): its record (``run.json``) and its checkpoints, which training
writes and evaluation, deployment and ``--resume`` read."""
