"""What is pruned: the linear weight matrices of every encoder layer (METHOD.md).

Query, key, value, attention output, FFN up and FFN down; embeddings, LayerNorms, pooler, classifier
and all biases stay dense.
"""

from __future__ import annotations

import re

from torch import nn

ENCODER_LINEARS = re.compile(
    r"encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)$"
)


def find_targets(model: nn.Module, pattern: re.Pattern = ENCODER_LINEARS) -> dict[str, nn.Linear]:
    """Target modules by name, in model order. Their `.weight` is what gets masked."""
    targets = {name: module for name, module in model.named_modules()
               if isinstance(module, nn.Linear) and pattern.search(name)}
    if not targets:
        raise ValueError("no prunable encoder linear layers found; is this a BERT-family model?")
    return targets
