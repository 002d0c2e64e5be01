"""Which parameters train: ``head``, ``last:N`` or a regular expression.

Selection works on parameter names listed in *forward order* (the order in which the forward
pass first uses them), so the same rules serve PyTorch modules and ONNX graphs. Blocks are the
numbered repeats (``encoder.layer.5.``) of the longest numbered module list; the head is
everything the forward pass uses after the last block.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass

from edgeft.errors import EdgeftError

@dataclass(frozen=True)
class Blocks:
    """The repeated blocks of a model: their common name prefix and the names in each block."""

    prefix: str
    members: dict[int, list[str]]

    @property
    def count(self) -> int:
        return len(self.members)


def find_blocks(names: list[str]) -> Blocks | None:
    """Find the numbered module list that holds the most parameters (at least two blocks)."""
    groups: dict[str, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
    for name in names:
        for match in re.finditer(r"(?:^|\.)(\d+)\.", name):
            prefix = name[: match.start(1)]
            groups[prefix][int(match.group(1))].append(name)
    best = None
    for prefix, members in groups.items():
        if len(members) < 2:
            continue
        size = sum(len(v) for v in members.values())
        if best is None or size > best[0]:
            best = (size, prefix, members)
    if best is None:
        return None
    return Blocks(prefix=best[1], members={k: best[2][k] for k in sorted(best[2])})


def head_names(order: list[str], blocks: Blocks | None) -> list[str]:
    """Parameters used after the last block in forward order.

    A model without blocks has as head the module of its last parameter (``head.weight`` and
    ``head.bias``), or that last parameter alone when names carry no module path.
    """
    if not order:
        return []
    if blocks is None:
        module = order[-1].rpartition(".")[0]
        return [n for n in order if n.rpartition(".")[0] == module] if module else [order[-1]]
    in_blocks = {n for members in blocks.members.values() for n in members}
    last_pos = max(i for i, n in enumerate(order) if n in in_blocks)
    return [n for n in order[last_pos + 1 :] if n not in in_blocks]


def select_trainable(order: list[str], spec: str, shared: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Names (in forward order) that ``spec`` makes trainable; raises a clear error when none.

    ``shared``: parameters the forward pass uses more than once (layers that share weights);
    ``last:N`` on such a model is refused with the reason, since its last layer is every layer.
    """
    spec = spec.strip()
    if not spec:  # as a regex it would match every parameter: most likely an unset shell variable
        raise EdgeftError("--train is empty.", where="--train",
                          hint="use head, last:N, or a regular expression; --train '.*' trains every parameter.")
    blocks = find_blocks(order)
    if spec == "head" or spec.startswith("last:"):
        if blocks is None and spec != "head" and shared:
            common = os.path.commonprefix(list(shared)).rpartition(".")[0]
            raise EdgeftError(
                f"--train {spec}: the model runs one set of layer weights ({common}) as each of its layers (shared "
                "layers, as ALBERT has), so it has no last layers of their own; training them changes every layer.",
                where="--train", hint=f"train the shared layer with --train '{re.escape(common)}' (every layer moves), or "
                                      "only the head with --train head.")
        if blocks is None and spec != "head":
            raise EdgeftError(
                f"--train {spec} needs a model made of numbered blocks, and none were found in its parameter names.",
                where="parameter names such as " + ", ".join(order[:3]),
                hint="choose the parameters with --train REGEX (for example --train 'classifier').")
        chosen = set(head_names(order, blocks))
        if spec.startswith("last:"):
            count_text = spec.split(":", 1)[1]
            if not count_text.isdecimal() or int(count_text) < 1:
                raise EdgeftError(f"--train {spec} is not valid.", where="--train",
                                  hint="write last:N with N a whole number of at least 1, for example last:2.")
            count = int(count_text)
            if count > blocks.count:
                raise EdgeftError(f"--train {spec} asks for {count} blocks but the model has {blocks.count}.",
                                  where="--train", hint=f"use a number from 1 to {blocks.count}.")
            for index in list(blocks.members)[-count:]:
                chosen.update(blocks.members[index])
        if not chosen:
            raise EdgeftError("The model has no parameters after its last block, so it has no head to train.",
                              where="--train head", hint="use --train last:1 or --train REGEX.")
    else:
        try:
            pattern = re.compile(spec)
        except re.error as exc:
            raise EdgeftError(f"--train {spec!r} is not a valid regular expression: {exc}.", where="--train",
                              hint="use head, last:N, or a Python regular expression.") from exc
        chosen = {n for n in order if pattern.search(n)}
        if not chosen:
            raise EdgeftError(f"--train {spec!r} matches no parameter of the model.", where="--train",
                              hint="run `edgeft export MODEL --list-parameters` to see every name and its block; "
                                   "parameter names look like " + ", ".join(order[-3:]) + ".")
    return [n for n in order if n in chosen]
