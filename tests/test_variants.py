"""Variants are data: one builder per twin reads the variant table; builder_kwargs carry the
variant, and keras.applications' networks are options of the same family builders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from codenn_convert.errors import UsageError
from codenn_convert.models.inception.keras_applications import (
    keras_applications_filter as inception_filter,
)
from codenn_convert.models.resnet import KERAS_VARIANTS, VARIANTS
from codenn_convert.models.resnet.keras_applications import (
    keras_applications_filter as resnet_filter,
)
from codenn_convert.registry import get_model, get_spec, list_models, parse_options


@pytest.mark.parametrize("name", [*VARIANTS, *KERAS_VARIANTS, "vgg11", "vgg19_bn"])
def test_one_builder_per_twin_reads_the_table(name: str) -> None:
    spec = get_spec(name)
    family = spec.family
    assert spec.torch_builder.endswith(f"torch_{family}:{family}")
    assert spec.keras_builder.endswith(f"keras_{family}:{family}")
    assert spec.builder_kwargs["variant"] in (VARIANTS if family == "resnet" else [name])


def test_keras_variants_are_registered_with_torchvision_style_keys() -> None:
    names = list_models()
    assert {"keras_resnet50", "keras_resnet101", "keras_resnet152",
            "keras_inception_v3"} <= set(names)
    with torch.device("meta"):
        keys = get_model("keras_resnet50", "torch").state_dict().keys()
    assert "layer2.0.downsample.0.bias" in keys and "layer4.2.conv3.bias" in keys


def test_options_still_work_and_the_variant_fixes_its_own() -> None:
    assert parse_options("resnet50", ["num_classes=10"]) == {"num_classes": 10}
    assert parse_options("inception_v3", ["aux_logits=false", "transform_input=true"]) == {
        "aux_logits": False, "transform_input": True}
    assert parse_options("keras_resnet50", ["bn_eps=1.001e-5"]) == {"bn_eps": 1.001e-5}
    with pytest.raises(UsageError, match=r"bn_eps are fixed by the variant keras_resnet50"):
        parse_options("keras_resnet50", ["bn_eps=1e-5"])
    with pytest.raises(UsageError, match=r"variant are fixed by the variant vgg16"):
        parse_options("vgg16", ["variant=vgg19"])


def test_keras_resnet_is_v1_with_biases_and_keras_eps() -> None:
    with torch.device("meta"):
        v1, v15 = get_model("keras_resnet50", "torch"), get_model("resnet50", "torch")
    assert v1.layer2[0].conv1.stride == (2, 2) and v1.layer2[0].conv2.stride == (1, 1)
    assert v15.layer2[0].conv1.stride == (1, 1) and v15.layer2[0].conv2.stride == (2, 2)
    assert v1.conv1.bias is not None and v15.conv1.bias is None
    assert v1.layer3[1].bn2.eps == 1.001e-5 and v15.layer3[1].bn2.eps == 1e-5


def test_keras_inception_pools_exclude_padding_and_have_no_aux_head() -> None:
    from torch.nn import functional as F  # noqa: N812

    model = get_model("keras_inception_v3", "torch").eval()
    assert model.AuxLogits is None and not model.Mixed_5b.count_include_pad
    # A corner window of a constant map averages to the constant only without the padding.
    x = torch.ones(1, 1, 4, 4)
    assert F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)[0, 0, 0, 0] == 1.0


def test_resnet_filter_renames_keras_applications_layers() -> None:
    w = [np.zeros(1)]
    out = resnet_filter({"conv1_conv": w, "conv1_bn": w, "conv2_block1_0_conv": w,
                         "conv2_block1_0_bn": w, "conv3_block4_3_conv": w, "predictions": w})
    assert out is not None and set(out) == {"conv1", "bn1", "layer1.0.downsample.0",
                                            "layer1.0.downsample.1", "layer2.3.conv3", "fc"}
    assert resnet_filter({"layer1.0.conv1": w, "conv1": w}) is None


def test_inception_filter_orders_by_creation_and_adds_gamma() -> None:
    from codenn_convert.models.inception.keras_applications import basic_conv_paths

    n = len(basic_conv_paths())
    weights = {"predictions": [np.zeros((2048, 3)), np.zeros(3)]}
    for i in range(n):  # Keras 2 downloads count from 1; Keras 3 from none
        weights[f"conv2d_{i + 1}"] = [np.full((1, 1, 1, 1), i)]
        weights[f"batch_normalization_{i + 1}"] = [np.full(2, i), np.zeros(2), np.ones(2)]
    out = inception_filter(weights)
    assert out is not None
    # conv2d_10 sorts after conv2d_9 (numerically, not as text).
    assert out[f"{basic_conv_paths()[9]}.conv"][0].item() == 9
    gamma, beta, _, _ = out[f"{basic_conv_paths()[9]}.bn"]
    assert gamma.tolist() == [1, 1] and beta.tolist() == [9, 9]
    del weights["conv2d_5"]
    assert inception_filter(weights) is None
