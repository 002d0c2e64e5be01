#!/usr/bin/env python
"""The PyTorch eager fine-tuning loop a user would otherwise write, for same-work comparisons.

It trains the same MiniLM (initial weights read from an edgeft artifact folder, so both start
identical) with the same layers frozen (frozen part in eval mode, as edgeft exports it), the
same tokenization, batches and data order, the same AdamW settings and learning-rate schedule,
on the same thread count. Prints one JSON object: wall time of training, examples per second,
peak resident memory, and test accuracy (measured after the timed part).

Usage: python tools/torch_baseline.py ARTIFACTS TRAIN_CSV TEST_CSV --epochs 5 --threads 2
       [--label-column category] [--lr 1e-3] [--batch-size 32] [--weight-decay 0.01] [--warmup 0.1]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load_model(manifest, parameters: dict | None = None):  # -> MeanPoolClassifier
    """MiniLM + mean pooling + head with the weights of an artifact folder's forward model.

    ``parameters`` (name -> array, e.g. a trained checkpoint's) replace the exported values.
    """
    import onnx
    import torch
    from onnx import numpy_helper
    from transformers import AutoModel

    from edgeft.exporting.builtin import builtin_path
    from edgeft.exporting.hf_source import MeanPoolClassifier

    labels = manifest.data["labels"]["names"]
    backbone = AutoModel.from_pretrained(builtin_path("minilm"), local_files_only=True, attn_implementation="eager")
    model = MeanPoolClassifier(backbone, backbone.config.hidden_size, len(labels))
    forward = onnx.load(str(manifest.path("forward_model")))
    weights = {i.name: numpy_helper.to_array(i) for i in forward.graph.initializer}
    weights.update(parameters or {})
    state = model.state_dict()
    model.load_state_dict({k: torch.from_numpy(v.copy()).reshape(state[k].shape) for k, v in weights.items()
                           if k in state}, strict=False)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifacts", type=Path)
    parser.add_argument("train_csv", type=Path)
    parser.add_argument("test_csv", type=Path)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--warmup", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--label-column", default="label")
    args = parser.parse_args()

    import torch

    from edgeft.data.batching import length_bucketed_batches, sequential_batches
    from edgeft.data.records import read_records
    from edgeft.machine import peak_rss_mb
    from edgeft.manifest import load_manifest
    from edgeft.data.examples import ExampleSet
    from edgeft.training.schedule import learning_rate

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    manifest = load_manifest(args.artifacts)
    model = load_model(manifest)
    trainable = {t["name"] for t in manifest.data["trainable"]["tensors"]}
    for name, param in model.named_parameters():
        param.requires_grad = name in trainable
    model.eval()  # frozen part as inference; the trainable part trains (dropout on where it has it)
    for name, module in model.named_modules():
        params = [n for n, _ in module.named_parameters(prefix=name)]
        if name and params and all(p in trainable for p in params):
            module.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr,
                                  betas=(0.9, 0.999), eps=1e-6, weight_decay=args.weight_decay)
    train_set = ExampleSet(read_records(args.train_csv, manifest.data, label_column=args.label_column), manifest)
    test_set = ExampleSet(read_records(args.test_csv, manifest.data, label_column=args.label_column), manifest)
    steps_per_epoch = math.ceil(len(train_set) / args.batch_size)
    total = steps_per_epoch * args.epochs
    warmup = int(round(args.warmup * total))

    start = time.perf_counter()
    step = 0
    for epoch in range(args.epochs):
        for indices in length_bucketed_batches(train_set.lengths, args.batch_size,
                                               np.random.default_rng([args.seed, epoch])):
            batch = train_set.inputs(indices)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total, args.lr, warmup, "linear")
            logits = model(torch.from_numpy(batch["input_ids"]), torch.from_numpy(batch["attention_mask"]))
            loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(train_set.labels(indices)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
    seconds = time.perf_counter() - start

    model.eval()
    correct = 0
    with torch.inference_mode():
        order = np.argsort(test_set.lengths)
        for chunk in sequential_batches(len(order), 64):
            indices = order[chunk]
            batch = test_set.inputs(indices)
            logits = model(torch.from_numpy(batch["input_ids"]), torch.from_numpy(batch["attention_mask"]))
            correct += int((logits.argmax(dim=1).numpy() == test_set.labels(indices)).sum())
    print(json.dumps({"way": "pytorch-eager", "seconds": round(seconds, 3), "steps": step,
                      "examples_per_second": round(len(train_set) * args.epochs / seconds, 1),
                      "peak_rss_mb": round(peak_rss_mb(), 1), "test_accuracy": round(correct / len(test_set), 4)}))


if __name__ == "__main__":
    main()
