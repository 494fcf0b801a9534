"""The registry, and every registered model's metadata against its twins."""

from __future__ import annotations

import pytest

from codenn_convert.errors import UsageError
from codenn_convert.registry import ModelSpec, get_model, get_spec, list_models, register_model

MODELS = list_models()


def test_default_set_is_registered() -> None:
    assert "alexnet" in list_models(default_only=True)
    assert set(list_models(default_only=True)) <= set(MODELS)


def test_duplicate_registration_is_an_error() -> None:
    spec = get_spec("alexnet")
    with pytest.raises(ValueError, match="already registered"):
        register_model(spec)
    with pytest.raises(ValueError, match="already registered"):
        register_model(ModelSpec(**{**spec.__dict__}))


def test_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(UsageError, match=r"unknown model 'alexnett'.*alexnet"):
        get_spec("alexnett")


def test_too_small_input_is_refused_before_building() -> None:
    spec = get_spec("alexnet")
    h, w = spec.min_input_size
    with pytest.raises(UsageError, match=f"minimum is {h}x{w}"):
        get_model("alexnet", "keras", input_size=(h - 1, w))



@pytest.mark.parametrize("name", MODELS)
def test_min_input_size_is_tight(name: str) -> None:
    """The torch twin runs at the minimum size and fails one pixel below it."""
    import torch

    spec = get_spec(name)
    model = get_model(name, "torch").eval().to("meta")  # shapes only, no memory
    h, w = spec.min_input_size
    with torch.no_grad():
        model(torch.zeros(1, 3, h, w, device="meta"))
        with pytest.raises(RuntimeError):
            model(torch.zeros(1, 3, h - 1, w - 1, device="meta"))


def test_options_parse_for_both_twins() -> None:
    from codenn_convert.registry import parse_options

    assert parse_options("inception_v3", ["transform_input=true", "num_classes=10",
                                          "dropout=0.25"]) == {
        "transform_input": True, "num_classes": 10, "dropout": 0.25}
    assert parse_options("alexnet", []) == {}
    with pytest.raises(UsageError, match="unknown option.*transform_input.*accepted:.*dropout"):
        parse_options("alexnet", ["transform_input=true"])
    with pytest.raises(UsageError, match="not KEY=VALUE"):
        parse_options("alexnet", ["dropout"])
