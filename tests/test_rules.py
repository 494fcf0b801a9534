"""The layer-rule registry: one rule per layer type, duplicates refused, and a layer type
with no rule a one-line error naming the layer, through the real CLI."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from codenn_convert.twins import rules
from codenn_convert.twins.rules import RULES, UnknownLayerError, layer_rule, torch_rule
from tests.conftest import ROOT

#: A family of one tiny model with a GroupNorm, a layer type no rule covers, registered in
#: the CLI's own process (a family folder is just such a module registering its specs).
FAMILY = '''
import keras
from torch import nn

from codenn_convert.registry import ModelSpec, register_model


def torch_tiny(num_classes: int = 3) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, num_classes))


def keras_tiny(input_size: tuple[int, int], num_classes: int = 3) -> keras.Model:
    inp = keras.Input((*input_size, 3))
    x = keras.layers.Conv2D(4, 3, name="0")(inp)
    x = keras.layers.GroupNormalization(2, epsilon=1e-5, name="1")(x)
    x = keras.layers.GlobalAveragePooling2D(name="2")(x)
    return keras.Model(inp, keras.layers.Dense(num_classes, name="4")(x))


register_model(ModelSpec(name="tiny_groupnorm", family="tiny",
                         torch_builder="tiny_family:torch_tiny",
                         keras_builder="tiny_family:keras_tiny", input_size=(8, 8),
                         min_input_size=(3, 3), num_params=135))
'''


def _cli(folder: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """``codenn ARGV`` in a fresh interpreter that has the tiny family registered."""
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(folder)!r})
        import tiny_family  # registers tiny_groupnorm
        from codenn_convert.cli import main
        sys.argv = ["codenn", *{list(argv)!r}]
        main()
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_a_layer_type_without_a_rule_is_a_one_line_error_through_the_cli(tmp_path: Path) -> None:
    (tmp_path / "tiny_family.py").write_text(FAMILY)
    # The family's torch twin, built here without registering it in this process.
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.GroupNorm(2, 4),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, 3))
    ckpt = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), ckpt)
    out = tmp_path / "tiny.weights.h5"
    line = _one_error_line(_cli(tmp_path, "convert", "tiny_groupnorm", str(ckpt), str(out)))
    assert "no weight-mapping rule for Keras layer '1' of type GroupNormalization" in line
    assert not out.exists() and not list(tmp_path.glob(".codenn-partial*"))
    # Seeded weights need a rule for every weighted torch module too.
    line = _one_error_line(_cli(tmp_path, "export", "tiny_groupnorm", "-o",
                                str(tmp_path / "tiny.onnx")))
    assert "no weight-mapping rule for torch layer '1' of type GroupNorm" in line
    assert not (tmp_path / "tiny.onnx").exists()


def test_registering_a_rule_twice_is_an_error() -> None:
    def one(p, ws):  # type: ignore[no-untyped-def]
        return ws

    with pytest.raises(ValueError, match="'conv' is already registered"):
        layer_rule("conv", torch=None, keras=None)(
            type("Again", (), {"torch_shapes": one, "to_keras": one, "to_torch": one}))
    with pytest.raises(ValueError, match="torch.nn.Conv2d already has the layer rule 'conv'"):
        layer_rule("conv2", torch="torch.nn.Conv2d", keras=None)(
            type("Again", (), {"torch_shapes": one, "to_keras": one, "to_torch": one}))
    assert "conv2" not in RULES


def test_a_subclass_takes_its_base_types_rule() -> None:
    class MyConv(torch.nn.Conv2d):
        pass

    assert torch_rule("c", MyConv(3, 4, 1)) is RULES["conv"]
    with pytest.raises(UnknownLayerError, match="torch layer 'n' of type GroupNorm"):
        torch_rule("n", torch.nn.GroupNorm(2, 4))
    assert torch_rule("n", torch.nn.GroupNorm(2, 4), required=False) is None
    assert rules.RULES["batchnorm"].folds_into_source and rules.RULES["batchnorm"].running_stats
