"""Tiny PyTorch models used as `package.module:factory` sources in tests."""

from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)
        self.dropout = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.dropout(torch.nn.functional.gelu(self.linear(x))))


class TinyMLP(nn.Module):
    """Three residual blocks and a head: enough structure for head / last:N selection."""

    def __init__(self, width: int = 16, outputs: int = 3) -> None:
        super().__init__()
        self.stem = nn.Linear(8, width)
        self.blocks = nn.ModuleList(Block(width) for _ in range(3))
        self.head = nn.Linear(width, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        return self.head(h)


def mlp() -> nn.Module:
    return TinyMLP()


def mlp4() -> nn.Module:
    return TinyMLP(outputs=4)


def not_a_module() -> str:
    return "nope"


class PerPosition(nn.Module):
    """Two residual blocks and a head applied at each of several positions, outputs averaged over them.

    Inputs are (batch, positions, 8), so every Linear is a MatMul, the product ONNX Runtime's
    dynamic int8 quantizer handles (a 2-D Linear exports as Gemm, which it leaves in fp32).
    """

    def __init__(self, outputs: int = 3) -> None:
        super().__init__()
        self.stem = nn.Linear(8, 16)
        self.blocks = nn.ModuleList(Block(16) for _ in range(2))
        self.head = nn.Linear(16, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        return self.head(h).mean(dim=1)


def fragile_head() -> nn.Module:
    """Every class weighs feature 0 by 100: the term cancels between the logits in fp32, but one int8
    scale per weight column (per-tensor or per-channel) then rounds the head's other weights to zero."""
    torch.manual_seed(4)
    model = PerPosition()
    with torch.no_grad():
        model.head.weight[:, 0] = 100.0
    return model


def input_outlier(outputs: int = 3) -> nn.Module:
    """Input feature 0 is ignored (zero weights); a huge value there ruins any quantization of the
    activations (one scale for the whole input tensor) but not fp32 compute on int8 weights."""
    torch.manual_seed(5)
    model = PerPosition(outputs)
    with torch.no_grad():
        model.stem.weight[:, 0] = 0.0
    return model
