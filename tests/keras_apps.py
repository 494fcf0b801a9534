"""keras.applications models with weights that look trained, for the import tests.

There is no network, so the models are built with ``weights=None`` and then given He-scaled
kernels, small biases, BatchNorm shifts, and BatchNorm statistics calibrated on a seeded
batch (one training-mode call with momentum 0 sets each moving statistic to the batch's).
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: The last BatchNorm of a residual branch: ResNet v1's ``_3_bn``, EfficientNet's
#: ``_project_bn`` (trained nets have small gammas there; see ``realistic_keras_application``).
RESIDUAL_BN = ("_3_bn", "_project_bn")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

def _he(rng: np.random.Generator, shape: tuple[int, ...],
        fan_shape: tuple[int, ...] | None = None) -> np.ndarray:
    fan_in = int(np.prod(shape[:-1] if fan_shape is None else fan_shape))
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def realistic_keras_application(model: Any, seed: int = 0, *, positive_shift: bool = False
                                ) -> np.ndarray:
    """Give ``model`` trained-looking weights in place; return a seeded N(0,1) NHWC batch.

    Residual branches end in a BatchNorm with a small gamma (:data:`RESIDUAL_BN`), as in
    trained ResNets and EfficientNets; BatchNorms without gamma (InceptionV3) get positive
    shifts, see ``codenn_convert.twins.init.positive_batchnorm_shift``, as do all BatchNorms
    with ``positive_shift`` (deep trunks with few skips, e.g. MobileNets, the same hook's
    reason). A model with in-model preprocessing (EfficientNet's ``Rescaling(1/255)`` and
    ``Normalization``) gets ImageNet statistics there and raw pixels in [0, 255) as inputs.
    """
    import keras

    rng = np.random.default_rng(seed)
    bns = []
    pixels = False
    for layer in model.layers:
        if isinstance(layer, keras.layers.Normalization):
            pixels = True  # ConvNeXt's has constants, EfficientNet's weights
            if layer.weights:
                layer.set_weights([np.array(IMAGENET_MEAN, np.float32),
                                   np.square(np.array(IMAGENET_STD, np.float32)),
                                   np.array(1_281_167)])
                layer.finalize_state()  # Keras only refreshes its constants here
        elif isinstance(layer, keras.layers.LayerNormalization):
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32) if i == 0
                               else rng.normal(0, 0.2, w.shape).astype(np.float32)
                               for i, w in enumerate(layer.get_weights())])
        elif layer.name.endswith("_layer_scale"):  # ConvNeXt: trained scales in (0, 1)
            layer.set_weights([rng.uniform(0.05, 0.5, w.shape).astype(np.float32)
                               for w in layer.get_weights()])
        elif isinstance(layer, keras.layers.BatchNormalization):
            bns.append(layer)
            values = []
            for var in layer.weights:
                n = var.shape[0]
                kind = var.path.rsplit("/", 1)[-1]
                if kind == "gamma":
                    low, high = (0.0, 0.2) if layer.name.endswith(RESIDUAL_BN) else (0.5, 1.5)
                    values.append(rng.uniform(low, high, n).astype(np.float32))
                elif kind == "beta":
                    beta = rng.uniform(0.5, 1.5, n) if not layer.scale else rng.normal(0, 0.2, n)
                    if positive_shift and layer.scale:
                        beta = values[0] * rng.uniform(0.5, 1.5, n)
                    values.append(beta.astype(np.float32))
                else:
                    values.append(np.asarray(var.numpy()))
            layer.set_weights(values)
            layer.momentum = 0.0
        elif layer.weights:
            kernel, *rest = layer.get_weights()
            # A depthwise filter sees one channel: fan_in is kh * kw, not kh * kw * C.
            depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
            layer.set_weights([_he(rng, kernel.shape, kernel.shape[:2] if depthwise else None),
                               *(rng.normal(0, 0.05, b.shape).astype(np.float32) for b in rest)])

    def batch(n: int) -> np.ndarray:
        shape = (n, *model.input_shape[1:])
        x = rng.uniform(0, 255, shape) if pixels else rng.standard_normal(shape)
        return x.astype(np.float32)

    model(batch(16), training=True)  # calibrate
    for layer in bns:
        layer.momentum = 0.99
    return batch(2)


def untrained_keras_application(app: str, size: int, seed: int = 0) -> Any:
    """keras.applications ``app`` at ``size`` x ``size`` as Keras builds it (its own
    initialisers), BatchNorm statistics set from one seeded batch of 16 (one training-mode
    call with momentum 0): a badly conditioned net, whose float32 rounding is amplified far
    above 1e-5 of the logits in every runtime alike."""
    import keras

    keras.utils.set_random_seed(seed)  # Keras' initialisers draw from the global seed
    model = getattr(keras.applications, app)(
        weights=None, input_shape=(size, size, 3), classifier_activation=None)
    bns = [layer for layer in model.layers
           if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in bns:
        layer.momentum = 0.0
    rng = np.random.default_rng(seed)
    model(rng.standard_normal((16, size, size, 3)).astype(np.float32), training=True)
    for layer in bns:
        layer.momentum = 0.99
    return model
