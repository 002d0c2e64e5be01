"""edgeft: fine-tune pretrained models on edge devices with onnxruntime, then deploy them.

The Python API (see :mod:`edgeft.api` and the README)::

    import edgeft

    artifacts = edgeft.export("minilm", labels=["on", "off"])      # host: needs edgeft[export]
    run = edgeft.train(artifacts, [("lights on", "on"), ("lights off", "off")], epochs=3)
    metrics = edgeft.evaluate(run, "test.csv")
    bundle = edgeft.deploy(run, device="raspberry-pi-5")
    bundle.predict("turn the lights off")[0].label

The package is split into a light *device side* (training, evaluation, deploy-time inference)
that needs only onnxruntime, numpy and small helpers, and a *host side* (``edgeft.exporting``)
that needs torch, transformers and optimum. Importing ``edgeft`` imports neither, and changes
nothing in the process (modules, environment, logging): the API's names load on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"

_API = {"export", "package", "train", "evaluate", "deploy", "Artifacts", "Run", "Metrics", "Bundle", "Prediction"}

__all__ = ["Artifacts", "Bundle", "EdgeftError", "Metrics", "Prediction", "Run", "__version__", "deploy", "evaluate",
           "export", "package", "train"]

TYPE_CHECKING = False  # not typing's: importing edgeft imports nothing else
if TYPE_CHECKING:
    from edgeft.api import Artifacts, Bundle, Metrics, Prediction, Run, deploy, evaluate, export, package, train
    from edgeft.errors import EdgeftError


def __getattr__(name: str) -> object:
    """The API's names, imported when first used (``import edgeft`` stays instant and inert)."""
    if name in _API:
        from edgeft import api

        return getattr(api, name)
    if name == "EdgeftError":
        from edgeft.errors import EdgeftError

        return EdgeftError
    raise AttributeError(f"module 'edgeft' has no attribute {name!r}")
