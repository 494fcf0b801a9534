"""torchvision's old DenseNet checkpoints, read as today's.

The DenseNet weights torchvision publishes (``densenet121-a639ec97.pth`` ...), and
checkpoints saved from its early DenseNet, name a dense layer's modules ``norm.1``,
``relu.1``, ``conv.1``, ``norm.2``, ... (``features.denseblock1.denselayer1.norm.1.weight``);
the modules are ``norm1``, ``conv1`` today. torchvision's own ``_load_state_dict`` renames
them with a regular expression before loading; this filter applies the same rule, so such a
file converts, identifies and exports, with one note saying how many keys it renamed.
"""

from __future__ import annotations

import re
from typing import Protocol

import numpy as np

#: torchvision's ``densenet._load_state_dict`` pattern (plus ``num_batches_tracked``, which
#: a re-saved old checkpoint may carry): group 1 + group 2 is the new key.
LEGACY_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
    r"((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


class _Notes(Protocol):
    """What this filter uses of ``codenn_convert``'s ``FilterContext``: its notes."""

    notes: list[str]


def rename_legacy_keys(state: dict[str, np.ndarray], ctx: _Notes) -> dict[str, np.ndarray]:
    """``state`` with ``...denselayerN.norm.1.weight`` keys renamed ``...norm1.weight``; the
    same object, and no note, when there are none."""
    renamed = {key: m[1] + m[2] for key in state if (m := LEGACY_KEY.match(key))}
    if not renamed:
        return state
    ctx.notes.append(f"renamed {len(renamed)} legacy torchvision DenseNet keys "
                     f"('norm.1' -> 'norm1', 'conv.1' -> 'conv1', ...)")
    return {renamed.get(key, key): value for key, value in state.items()}
