#!/usr/bin/env python
"""The README's support table: which architectures and tasks train with which backend and --train.

Builds small random-weight models of each architecture locally (``tests/architectures.py``, the
tiny BERT and ViT of the tests), exports each with every ``--train`` form and training format,
and runs a real training step and an evaluation on each artifact set, with the backend the
format is for. A cell is "yes" when export and the step succeed, else the reason export gave.
The portable cells run on this environment's onnxruntime (the current one the portable backend
is for); ONNX Runtime's training format runs in the ort-training environment (``--ort-python``,
by default ``.venv-ort``, which ``make test`` builds), where its training API is installed.

Usage: python tools/support_table.py [--write-readme] [--ort-python .venv-ort/bin/python]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402

START, END = "<!-- support-table: tools/support_table.py -->", "<!-- /support-table -->"
TRAIN_FORMS = ("head", "last:1")


def _models(root: Path) -> list[tuple[str, str, Path, dict]]:
    """(architecture, task, model path, export options) of every row."""
    import architectures
    from conftest import make_tiny_bert

    bert = make_tiny_bert(root / "bert")
    rows = [("BERT (bare encoder, mean pooling + new head)", "text classification", bert, {"num_labels": 3}),
            ("BERT", "sentence embedding", bert, {"task": "embedding"})]
    vit = root / "vit"
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(2)
    ViTForImageClassification(ViTConfig(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=2, intermediate_size=64, num_labels=3)).save_pretrained(vit)
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(vit)
    rows.append(("ViT", "image classification", vit, {}))
    for name, build in architectures.BUILDERS.items():
        rows.append((name, architectures.TASKS[name], build(root / name.split()[0]), {}))
    return rows


def _batch(manifest) -> dict[str, np.ndarray]:
    from edgeft.deployment.measure import sample_feed

    feed = sample_feed(manifest.data, manifest.folder, 4, 8)
    spec = manifest.data["labels"]["input"]
    feed["labels"] = np.array([0, 0, 1, 1], dtype=np.int64) if spec["dtype"] == "int64" else \
        np.zeros([4, *spec["shape"][1:]], dtype=spec["dtype"])
    return feed


def _cell(model: Path, options: dict, train: str, fmt: str, out: Path) -> str:
    from edgeft.backends.select import open_trainer
    from edgeft.errors import EdgeftError
    from edgeft.exporting.artifacts import ExportOptions, export_artifacts

    try:
        result = export_artifacts(ExportOptions(model=str(model), train=train, formats=(fmt,), output=out, force=True,
                                                **options))
        trainer = open_trainer(result.manifest, fmt if fmt == "ort-training" else "portable", threads=1)
        batch = _batch(result.manifest)
        loss, _ = trainer.train_step(batch)
        trainer.optimizer_step()
        trainer.eval_step(batch)
        return "yes" if np.isfinite(loss) else f"non-finite loss {loss}"
    except EdgeftError as exc:
        if "has no head" in exc.what:
            return "n/a (no head: the encoder trains)"
        if "runs one set of layer weights" in exc.what:
            return "n/a (one layer shared by all: train it by name, `--train REGEX`)"
        reason = exc.what.replace("The portable training step cannot be built: ", "").split(" (node")[0]
        reason = reason.split(", which")[0].rstrip(".").replace("|", "/")
        return f"no: {reason if len(reason) <= 90 else reason[:89] + '...'}"


CELL_SECONDS = 300  # ONNX Runtime 1.19's training step on EfficientNet last:1 runs for more than 10 minutes


def _cell_into(queue, *args) -> None:  # noqa: ANN001
    queue.put(_cell(*args))


def _timed_cell(model: Path, options: dict, train: str, fmt: str, out: Path) -> str:
    """:func:`_cell`, for ONNX Runtime's training format in a fresh process stopped after
    CELL_SECONDS (a forked one would inherit the parent's thread pools and can hang)."""
    if fmt != "ort-training":
        return _cell(model, options, train, fmt, out)
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    worker = context.Process(target=_cell_into, args=(queue, model, options, train, fmt, out))
    worker.start()
    worker.join(CELL_SECONDS)
    if worker.is_alive():
        worker.kill()
        worker.join()
        return f"no: the training step did not finish in {CELL_SECONDS} s"
    return queue.get() if not queue.empty() else f"no: the check exited with code {worker.exitcode}"


def _rows(formats: list[str]) -> list[list[str]]:
    """[architecture, task, cell per format and --train form] of every model."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeft-support-") as tmp:
        root = Path(tmp)
        for name, task, model, options in _models(root):
            rows.append([name, task, *(_timed_cell(model, options, train, fmt, root / "out") for fmt in formats
                                       for train in TRAIN_FORMS)])
            print("| " + " | ".join(rows[-1]) + " |", file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write-readme", action="store_true", help="replace the table in README.md")
    parser.add_argument("--ort-python", type=Path, default=ROOT / ".venv-ort" / "bin" / "python",
                        help="the Python of the ort-training environment (its column is left out when it is absent)")
    parser.add_argument("--format", dest="only", help=argparse.SUPPRESS)  # one format's rows as JSON (the ort half)
    args = parser.parse_args()
    if args.only:
        print(json.dumps(_rows([args.only])))
        return
    rows = _rows(["portable"])
    formats = ["portable"]
    if args.ort_python.exists():
        out = subprocess.run([str(args.ort_python), __file__, "--format", "ort-training"], stdout=subprocess.PIPE,
                             text=True, check=True)
        for row, ort_row in zip(rows, json.loads(out.stdout)):
            assert row[0] == ort_row[0], (row[0], ort_row[0])
            row += ort_row[2:]
        formats.append("ort-training")
    header = ["architecture", "task"] + [f"{fmt} `--train {train}`" for fmt in formats for train in TRAIN_FORMS]
    table = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                      + ["| " + " | ".join(row) + " |" for row in rows])
    print(table)
    if args.write_readme:
        readme = ROOT / "README.md"
        text = readme.read_text(encoding="utf-8")
        before, rest = text.split(START, 1)
        _, after = rest.split(END, 1)
        readme.write_text(f"{before}{START}\n{table}\n{END}{after}", encoding="utf-8")


if __name__ == "__main__":
    main()
