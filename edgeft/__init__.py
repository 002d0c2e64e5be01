"""edgeft: fine-tune pretrained models on edge devices with ONNX Runtime, then deploy them.

The package is split into a light *device side* (training, evaluation, deploy-time inference)
that needs only onnxruntime, numpy and small helpers, and a *host side* (``edgeft.export``)
that needs torch, transformers and optimum. Importing ``edgeft`` itself imports neither.
"""

from edgeft.ortimport import skip_ortmodule

__version__ = "0.1.0"

skip_ortmodule()
