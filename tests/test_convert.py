"""File-to-file conversion: exact round trips, safe loading, atomic writes, clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np
import pytest
import torch

from codenn_convert.checkpoints import atomic
from codenn_convert.checkpoints import files as checkpoint
from codenn_convert.convert import convert_checkpoint
from codenn_convert.errors import CheckpointError, OutputError, UsageError
from codenn_convert.registry import get_model
from codenn_convert.twins.build import torch_twin


@pytest.fixture(scope="module")
def alexnet_pt(module_tmp: Path, alexnet_state) -> Path:  # type: ignore[no-untyped-def]
    path = module_tmp / "alexnet.pth"
    torch.save({k: torch.from_numpy(v) for k, v in alexnet_state.items()}, path)
    return path


def _assert_same_state(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


def test_torch_keras_torch_is_bit_identical(alexnet_pt: Path, alexnet_state, tmp_path: Path  # type: ignore[no-untyped-def]
                                            ) -> None:
    h5 = tmp_path / "alexnet.weights.h5"
    res = convert_checkpoint("alexnet", alexnet_pt, h5)
    assert (res.src_layout, res.dst_layout) == ("torch", "keras")
    for name in ("back.pt", "back.safetensors"):
        convert_checkpoint("alexnet", h5, tmp_path / name)
        _assert_same_state(checkpoint.load_torch_state(tmp_path / name), alexnet_state)
    # The torch twin loads the converted file with strict=True.
    torch_twin("alexnet", checkpoint.load_torch_state(tmp_path / "back.pt"))


def test_keras_torch_keras_is_bit_identical(alexnet_pt: Path, tmp_path: Path) -> None:
    h5 = tmp_path / "a.weights.h5"
    convert_checkpoint("alexnet", alexnet_pt, h5)
    convert_checkpoint("alexnet", h5, tmp_path / "a.safetensors")
    convert_checkpoint("alexnet", tmp_path / "a.safetensors", tmp_path / "b.weights.h5")
    w1, _ = checkpoint.read_keras_weights(h5)
    w2, _ = checkpoint.read_keras_weights(tmp_path / "b.weights.h5")
    assert w1.keys() == w2.keys()
    for name in w1:
        assert all(np.array_equal(x, y) for x, y in zip(w1[name], w2[name], strict=True))


def test_written_keras_file_loads_in_keras_with_the_same_values(alexnet_pt: Path,
                                                                tmp_path: Path) -> None:
    """Our h5py reader and Keras's own loader agree on what the file holds."""
    h5 = tmp_path / "a.weights.h5"
    convert_checkpoint("alexnet", alexnet_pt, h5)
    model = get_model("alexnet", "keras")
    model.load_weights(str(h5))
    ours, _ = checkpoint.read_keras_weights(h5)
    for layer in model.layers:
        if layer.weights:
            assert all(np.array_equal(a, b) for a, b in
                       zip(layer.get_weights(), ours[layer.name], strict=True))
    assert isinstance(model, keras.Model)


@pytest.mark.parametrize("name", ["resnet50", "inception_v3"])
def test_batchnorm_models_round_trip_through_keras_files(tmp_path: Path, name: str) -> None:
    """torchvision-layout file -> .weights.h5 -> .pt: bit-identical, BN counters included
    (InceptionV3's aux head too), and in torchvision's key order."""
    from codenn_convert.twins.init import realistic_state

    state = realistic_state(name, seed=3)
    src = tmp_path / "r.pth"
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, src)
    convert_checkpoint(name, src, tmp_path / "r.weights.h5")
    convert_checkpoint(name, tmp_path / "r.weights.h5", tmp_path / "back.pt")
    back = checkpoint.load_torch_state(tmp_path / "back.pt")
    _assert_same_state(back, state)
    assert list(back) == list(state)
    assert all(int(v) > 0 for k, v in back.items() if k.endswith("num_batches_tracked"))
    torch_twin(name, back)  # strict=True


def test_wrong_architecture_lists_missing_and_unexpected(alexnet_pt: Path, tmp_path: Path
                                                         ) -> None:
    with pytest.raises(CheckpointError, match=r"does not match resnet18.*missing keys: conv1"
                                              r".*unexpected keys: features\.0\.weight"):
        convert_checkpoint("resnet18", alexnet_pt, tmp_path / "x.weights.h5")
    assert not (tmp_path / "x.weights.h5").exists()


def test_shape_mismatch_names_key_and_shapes(alexnet_state, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = {**alexnet_state, "classifier.6.weight": np.zeros((10, 4096), np.float32)}
    src = tmp_path / "bad.safetensors"
    checkpoint.save_torch_state(bad, src)
    with pytest.raises(CheckpointError, match=r"classifier\.6\.weight: expected \(1000, 4096\), "
                                              r"found \(10, 4096\)"):
        convert_checkpoint("alexnet", src, tmp_path / "x.weights.h5")


@pytest.mark.parametrize("suffix", [".pt", ".safetensors", ".weights.h5"])
def test_truncated_files_are_refused(alexnet_pt: Path, tmp_path: Path, suffix: str) -> None:
    full = tmp_path / f"full{suffix}"
    if suffix == ".pt":
        full.write_bytes(alexnet_pt.read_bytes())
    else:
        convert_checkpoint("alexnet", alexnet_pt, full)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 3])
    dst = tmp_path / ("out.pt" if suffix == ".weights.h5" else "out.weights.h5")
    with pytest.raises(CheckpointError, match="not a readable|damaged|truncated"):
        convert_checkpoint("alexnet", cut, dst)
    assert not dst.exists()


def test_non_checkpoint_file_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_text("hello, not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        checkpoint.load_torch_state(junk)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def test_code_running_pickle_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"features.0.weight": _Evil(marker)}, evil)
    with pytest.raises(CheckpointError, match="refused to load"):
        convert_checkpoint("alexnet", evil, tmp_path / "x.weights.h5")
    assert not marker.exists()


def test_failed_conversion_keeps_the_existing_destination(alexnet_state, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dst = tmp_path / "keep.weights.h5"
    dst.write_bytes(b"precious")
    bad = tmp_path / "bad.safetensors"
    checkpoint.save_torch_state({"features.0.weight": alexnet_state["features.0.weight"]}, bad)
    with pytest.raises(CheckpointError):
        convert_checkpoint("alexnet", bad, dst)
    assert dst.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.safetensors", "keep.weights.h5"]


def test_atomic_output_cleans_up_on_failure(tmp_path: Path) -> None:
    dst = tmp_path / "f.safetensors"
    dst.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic.atomic_output(dst) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert dst.read_bytes() == b"old" and list(tmp_path.iterdir()) == [dst]


def test_unwritable_destination(alexnet_pt: Path, tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="does not exist"):
        convert_checkpoint("alexnet", alexnet_pt, tmp_path / "no" / "such" / "x.weights.h5")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):  # root ignores permission bits; use a path under a file
            target = alexnet_pt / "x.weights.h5"
            with pytest.raises(OutputError):
                convert_checkpoint("alexnet", alexnet_pt, target)
        else:
            with pytest.raises(OutputError, match="not writable"):
                convert_checkpoint("alexnet", alexnet_pt, ro / "x.weights.h5")
    finally:
        ro.chmod(0o700)


def test_unknown_extension_and_model(alexnet_pt: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot tell the format"):
        convert_checkpoint("alexnet", alexnet_pt, tmp_path / "x.bin")
    with pytest.raises(UsageError, match="unknown model"):
        convert_checkpoint("alexnetz", alexnet_pt, tmp_path / "x.weights.h5")


def test_wrapped_state_dict_is_unwrapped(alexnet_state, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in alexnet_state.items()},
                "epoch": 3}, path)
    _assert_same_state(checkpoint.load_torch_state(path), alexnet_state)


def test_keras_to_torch_files_keep_torchvision_key_order(tmp_path: Path) -> None:
    """Keras layer order differs from torch's (the downsample branch); files must not."""
    from codenn_convert.twins.init import realistic_state

    state = realistic_state("resnet18", seed=0)
    checkpoint.save_torch_state(state, tmp_path / "a.pt")
    convert_checkpoint("resnet18", tmp_path / "a.pt", tmp_path / "a.weights.h5")
    convert_checkpoint("resnet18", tmp_path / "a.weights.h5", tmp_path / "b.pt")
    assert list(checkpoint.load_torch_state(tmp_path / "b.pt")) == list(state)


def test_atomic_output_gives_normal_permissions(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.pt"
    with atomic.atomic_output(fresh) as tmp:
        tmp.write_bytes(b"x")
    mask = os.umask(0)
    os.umask(mask)
    assert fresh.stat().st_mode & 0o777 == 0o666 & ~mask
    kept = tmp_path / "kept.pt"
    kept.write_bytes(b"old")
    kept.chmod(0o640)
    with atomic.atomic_output(kept) as tmp:
        tmp.write_bytes(b"new")
    assert kept.stat().st_mode & 0o777 == 0o640 and kept.read_bytes() == b"new"


def test_options_convert_a_checkpoint_without_aux_head(tmp_path: Path) -> None:
    """torchvision's inception_v3(aux_logits=False) has no AuxLogits keys: the option is
    inferred from the file (an agreeing explicit one is fine, a contradicting one an error)."""
    from codenn_convert.errors import UsageError
    from codenn_convert.twins.init import realistic_state

    state = realistic_state("inception_v3", seed=1, aux_logits=False)
    assert not any(k.startswith("AuxLogits.") for k in state)
    src = tmp_path / "noaux.safetensors"
    checkpoint.save_torch_state(state, src)
    with pytest.raises(UsageError, match=r"aux_logits=true contradicts the checkpoint "
                                         r"\(no AuxLogits\.\* keys: aux_logits=false\)"):
        convert_checkpoint("inception_v3", src, tmp_path / "x.weights.h5",
                           options={"aux_logits": True})
    res = convert_checkpoint("inception_v3", src, tmp_path / "x.weights.h5")
    assert res.options == {"aux_logits": False}
    assert "inferred aux_logits=false from the checkpoint (no AuxLogits.* keys)" in res.notes
    opts = {"aux_logits": False}
    convert_checkpoint("inception_v3", tmp_path / "x.weights.h5", tmp_path / "back.pt",
                       options=opts)
    _assert_same_state(checkpoint.load_torch_state(tmp_path / "back.pt"), state)
