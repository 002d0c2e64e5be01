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
