"""Seeded random weights that look trained, in torch layout.

Unit-variance random weights hide layout bugs behind exploding or vanishing activations, and
identity BatchNorm statistics hide BatchNorm bugs altogether. So:

* conv / linear weights are He-scaled (std = sqrt(2 / fan_in)), biases small but non-zero;
* BatchNorm gamma in [0.5, 1.5], beta ~ N(0, 0.2);
* running statistics are *calibrated*: one forward pass in training mode on a seeded batch
  sets them to the real activation statistics (mean != 0, var != 1), so deep nets stay
  well-scaled, as trained ones are;
* a family may adjust this through its spec's ``init_hooks`` (e.g. ResNet's small gamma on
  the last BatchNorm of each residual branch, or :func:`positive_batchnorm_shift` for deep
  nets without residual connections).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from codenn_convert.registry import _resolve, get_spec


def _init_module(model: Any, gen: Any) -> None:
    import torch
    from torch import nn

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                fan_in = m.weight[0].numel()
                m.weight.normal_(0.0, math.sqrt(2.0 / fan_in), generator=gen)
                if m.bias is not None:
                    m.bias.normal_(0.0, 0.05, generator=gen)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0.0, 0.2, generator=gen)


def positive_batchnorm_shift(model: Any, gen: Any) -> None:
    """Init hook: BatchNorm shifts beta = gamma * U(0.5, 1.5), for deep nets without skips.

    With zero-mean shifts every conv-BN-ReLU layer multiplies a relative perturbation by about
    pi / (pi - 1) = 1.47 (half the units are off, and the next BN discards the ReLU's mean),
    so a deep residual-free trunk turns float32 rounding itself into ~1e-5 of the logits
    (torch float32 vs float64: InceptionV3 2.8e-5, VGG-19-BN 8.4e-6). Trained networks are
    not chaotic like that; mostly active units bring float32 noise to ~1e-6 (measured: 1.6e-6
    and 2.3e-6), so a real semantic bug still stands out by orders of magnitude.
    """
    import torch
    from torch import nn

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                ratio = torch.empty_like(m.bias).uniform_(0.5, 1.5, generator=gen)
                m.bias.copy_(m.weight * ratio)


def _calibrate_batchnorm(model: Any, gen: Any, input_size: tuple[int, int]) -> None:
    import torch
    from torch import nn

    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if not bns:
        return
    model.eval()
    for bn in bns:
        bn.train()
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: one batch sets the statistics exactly
    x = torch.randn(4, 3, *input_size, generator=gen)
    with torch.no_grad():
        model(x)
    for bn in bns:
        bn.momentum = 0.1
        bn.num_batches_tracked.fill_(int(torch.randint(1, 10**6, (1,), generator=gen)))
    model.eval()


def realistic_model(name: str, seed: int = 0, **builder_kwargs: Any) -> Any:
    """The torch twin of ``name`` in eval mode, with seeded, realistically scaled weights."""
    import torch

    from codenn_convert.registry import get_model

    spec = get_spec(name)
    model = get_model(name, "torch", **builder_kwargs)
    gen = torch.Generator().manual_seed(seed)
    _init_module(model, gen)
    for hook in spec.init_hooks:
        _resolve(hook)(model, gen)
    _calibrate_batchnorm(model, gen, spec.input_size)
    return model.eval()


def torch_state_of(model: Any) -> dict[str, np.ndarray]:
    """A torch module's state as independent numpy arrays (torch-layout state)."""
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def realistic_state(name: str, seed: int = 0, **builder_kwargs: Any) -> dict[str, np.ndarray]:
    """A seeded, realistically scaled torch-layout state for model ``name``."""
    return torch_state_of(realistic_model(name, seed, **builder_kwargs))
