"""Evaluation (device side): metrics, and the loss and metrics of a model over an example set,
used by training (validation each epoch), deployment (the accuracy guard) and the API."""
