"""Host side: turn pretrained models into training artifacts (needs torch, transformers, onnx).

Modules import torch lazily where they can, but nothing here is meant to run on a device.
"""
