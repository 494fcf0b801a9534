"""Seeded random weights that look trained, in torch layout.

Unit-variance random weights hide layout bugs behind exploding or vanishing activations, and
identity BatchNorm statistics hide BatchNorm bugs altogether. So:

* each layer type's rule (:mod:`codenn_convert.twins.rules`) initialises its own weights:
  conv / linear He-scaled (std = sqrt(2 / fan_in)), biases small but non-zero; BatchNorm
  gamma in [0.5, 1.5], beta ~ N(0, 0.2); a weighted module without a rule is an error;
* running statistics are *calibrated*: one forward pass in training mode on a seeded batch
  sets them to the real activation statistics (mean != 0, var != 1), so deep nets stay
  well-scaled, as trained ones are;
* a family may adjust this through its spec's ``init_hooks`` (e.g. ResNet's small gamma on
  the last BatchNorm of each residual branch, or :func:`positive_batchnorm_shift` for deep
  nets without residual connections).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from codenn_convert.registry import _resolve, get_model, get_spec
from codenn_convert.twins.rules import LayerRule, torch_rule


def _weighted_modules(model: Any, free: bool = False) -> list[tuple[str, Any, LayerRule]]:
    """Every module holding parameters or buffers of its own, with its layer rule; a module
    without a rule is a one-line error naming its path and type (it would keep torch's
    default initialisation silently), unless ``free`` (a user's model, whose bare
    parameters keep the user's own initialisation: see ``ModelSpec.free_parameters``)."""
    found = []
    for path, module in model.named_modules():
        if next(module.parameters(recurse=False), None) is None and next(
                module.buffers(recurse=False), None) is None:
            continue
        rule = torch_rule(path, module, required=not free)
        if rule is not None:
            found.append((path, module, rule))
    return found


def _init_module(model: Any, gen: Any, free: bool = False) -> None:
    import torch

    with torch.no_grad():
        for _, module, rule in _weighted_modules(model, free):
            if rule.init is not None:
                rule.init(module, gen)


def _running_stats(model: Any, free: bool = True) -> list[Any]:
    """The modules whose rule keeps running statistics (BatchNorm)."""
    return [m for _, m, rule in _weighted_modules(model, free) if rule.running_stats]


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

    with torch.no_grad():
        for m in _running_stats(model):
            ratio = torch.empty_like(m.bias).uniform_(0.5, 1.5, generator=gen)
            m.bias.copy_(m.weight * ratio)


def _calibrate_batchnorm(model: Any, gen: Any, input_size: tuple[int, int], batch: int) -> None:
    import torch

    bns = _running_stats(model)
    if not bns:
        return
    model.eval()
    for bn in bns:
        bn.train()
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: one batch sets the statistics exactly
    x = torch.randn(batch, 3, *input_size, generator=gen)
    with torch.no_grad():
        model(x)
    for bn in bns:
        bn.momentum = 0.1
        bn.num_batches_tracked.fill_(int(torch.randint(1, 10**6, (1,), generator=gen)))
    model.eval()


def small_calibration_size(name: str) -> tuple[int, int]:
    """A cheap calibration size for tests at small inputs: 64x64, or the minimum if larger.

    Not the test's own minimum: EfficientNet runs at 1x1, where a batch gives each deepest
    channel a handful of numbers, near-zero variances and chaotic logits (V2-L calibrated at
    1x1: logits up to 1,100 and torch vs Keras 2e-3 apart; at 64x64: 1.3 and 1.3e-6).
    """
    mh, mw = get_spec(name).min_input_size
    return max(64, mh), max(64, mw)


def realistic_model(name: str, seed: int = 0, calibration_size: tuple[int, int] | None = None,
                    **builder_kwargs: Any) -> Any:
    """The torch twin of ``name`` in eval mode, with seeded, realistically scaled weights.

    BatchNorm statistics are calibrated on 4 images at the model's full input size, or on
    16 at ``calibration_size`` (see :func:`small_calibration_size`): calibrating
    EfficientNet-B7 at 600x600 costs more than everything else its contract test does.
    """
    import torch

    spec = get_spec(name)
    model = get_model(name, "torch", **builder_kwargs)
    gen = torch.Generator().manual_seed(seed)
    _init_module(model, gen, spec.free_parameters)
    for hook in spec.init_hooks:
        _resolve(hook)(model, gen)
    if calibration_size is None:
        _calibrate_batchnorm(model, gen, spec.input_size, batch=4)
    else:
        _calibrate_batchnorm(model, gen, calibration_size, batch=16)
    return model.eval()


def torch_state_of(model: Any) -> dict[str, np.ndarray]:
    """A torch module's state as independent numpy arrays (torch-layout state)."""
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def realistic_state(name: str, seed: int = 0, **builder_kwargs: Any) -> dict[str, np.ndarray]:
    """A seeded, realistically scaled torch-layout state for model ``name``."""
    return torch_state_of(realistic_model(name, seed, **builder_kwargs))
