"""keras.applications VGG16/19, ResNet50/101/152, InceptionV3, EfficientNetB0 and ConvNeXtTiny
into our torch twins, in both file layouts, through the CLI, with parity against keras.applications'
own model.

The Keras 3 ``.weights.h5`` goes through two-argument ``codenn convert`` (the model is
identified from the file) and the torch twin; the legacy HDF5 of the downloads
(``*_weights_tf_dim_ordering_tf_kernels.h5``) through ``codenn identify`` and
``codenn export --weights`` and the ONNX file. Both must agree with the Keras model's logits
(``classifier_activation=None``) within 1e-5 of the largest one.
"""

from __future__ import annotations

import gc
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from codenn_convert.checkpoints import files as checkpoint
from codenn_convert.twins.build import torch_twin
from tests.conftest import max_rel, run_cli_here
from tests.keras_apps import realistic_keras_application

# keras.applications function -> (our model, input size, download file stem). ResNet runs at
# 64x64; VGG's flatten needs 224 (its head is fixed to 7x7x512); InceptionV3 at its own 299:
# at its 75x75 minimum the 1x1 maps calibrate BatchNorm on four values per channel, which
# makes float32 rounding itself reach ~7e-6 of the logits on both sides.
APPS: dict[str, tuple[str, int, str]] = {
    "ResNet50": ("keras_resnet50", 64, "resnet50"),
    "ResNet101": ("keras_resnet101", 64, "resnet101"),
    "ResNet152": ("keras_resnet152", 64, "resnet152"),
    "InceptionV3": ("keras_inception_v3", 299, "inception_v3"),
    "VGG16": ("vgg16", 224, "vgg16"),
    "VGG19": ("vgg19", 224, "vgg19"),
    # In-model Rescaling(1/255) and Normalization (mean, variance, count in the file). At
    # 64x64 its last stages run on 2x2 maps and float32 rounding alone reaches 5e-6 of the
    # logits on both sides (vs float64, measured: Keras 5.2e-6, torch 3.9e-6); at 128, 2.7e-6.
    "EfficientNetB0": ("keras_efficientnet_b0", 128, "efficientnetb0"),
    # include_preprocessing (constants), Conv2D(groups=C) depthwise kernels, LayerScale;
    # the legacy layout nests the stem and downsamplers as Sequential models.
    "ConvNeXtTiny": ("keras_convnext_tiny", 64, "convnext_tiny"),
}
# Full-size VGG (550 MB per copy) runs with the other full-size checks (-m parity).
PARAMS = [pytest.param(app, marks=[pytest.mark.parity] if app.startswith("VGG") else [])
          for app in APPS]


def _notes(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [ln[len("note: "):] for ln in proc.stderr.splitlines() if ln.startswith("note: ")]


def _write_both_layouts(app: str, folder: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """The keras.applications model with trained-looking weights, saved in both layouts;
    its inputs (NHWC) and logits."""
    import h5py
    import keras
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

    _, size, stem = APPS[app]
    model = getattr(keras.applications, app)(
        weights=None, input_shape=(size, size, 3), classifier_activation=None)
    x = realistic_keras_application(model, seed=0)
    logits = np.asarray(model(x, training=False))
    keras3 = folder / f"{stem}.weights.h5"
    model.save_weights(str(keras3))
    legacy = folder / f"{stem}_weights_tf_dim_ordering_tf_kernels.h5"
    with h5py.File(legacy, "w") as f:
        save_weights_to_hdf5_group(f, model)
    del model
    keras.backend.clear_session()
    gc.collect()
    return keras3, legacy, x, logits


@pytest.mark.parametrize("app", PARAMS)
def test_keras_applications_weights_into_torch_and_onnx(app: str, tmp_path: Path) -> None:
    import onnxruntime as ort

    name, size, _ = APPS[app]
    keras3, legacy, x, ref = _write_both_layouts(app, tmp_path)
    assert np.abs(ref).max() > 0.5 and np.isfinite(ref).all()
    nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    pth = tmp_path / f"{name}.pth"
    proc = run_cli_here("convert", str(keras3), str(pth))
    assert proc.returncode == 0, proc.stderr
    assert _notes(proc)[0] == f"identified {name}", proc.stderr
    tmodel = torch_twin(name, checkpoint.load_torch_state(pth))  # strict=True
    with torch.no_grad():
        assert max_rel(ref, tmodel(torch.from_numpy(nchw)).numpy()) <= 1e-5
    del tmodel
    gc.collect()

    proc = run_cli_here("identify", str(legacy))
    assert proc.returncode == 0 and proc.stdout.split() == [name], proc.stdout + proc.stderr
    onnx_file = tmp_path / f"{name}.onnx"
    proc = run_cli_here("export", name, "--weights", str(legacy), "--input-size", str(size),
                   str(size), "-o", str(onnx_file))
    assert proc.returncode == 0, proc.stderr
    got = ort.InferenceSession(str(onnx_file)).run(None, {"input": nchw})[0]
    assert max_rel(ref, got) <= 1e-5
