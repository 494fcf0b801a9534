"""int8 calibration data: an ``.npy`` batch, a directory of photos, or seeded synthetic
photo-like images (a stand-in for real data)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from codenn_convert.checkpoints.npy import load_npy
from codenn_convert.errors import UsageError
from codenn_convert.export.metadata import (
    META_CALIBRATION_DATA,
    META_CALIBRATION_METHOD,
    META_CALIBRATION_SAMPLES,
)
from codenn_convert.verification.images import IMAGENET_MEAN, IMAGENET_STD, load_image

#: Samples in the default (synthetic) calibration batch.
DEFAULT_CALIBRATION_SAMPLES = 16


#: The calibration method recorded in the metadata (ORT's MinMax, per tensor).
CALIBRATION_METHOD = "minmax"


IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


@dataclass(frozen=True)
class Calibration:
    """A calibration batch (float32 NCHW) and where it came from, for the metadata."""

    data: np.ndarray
    source: str
    method: str = CALIBRATION_METHOD

    @property
    def samples(self) -> int:
        return int(self.data.shape[0])

    def metadata(self) -> dict[str, str]:
        return {META_CALIBRATION_METHOD: self.method,
                META_CALIBRATION_SAMPLES: str(self.samples), META_CALIBRATION_DATA: self.source}


def load_calibration(
    source: str | os.PathLike[str] | None, input_size: tuple[int, int], *, seed: int = 0
) -> Calibration:
    """Calibration data from an ``.npy`` file, a directory of images, or (``None``) the
    seeded synthetic stand-in of :func:`synthetic_images`."""
    if source is None:
        n = DEFAULT_CALIBRATION_SAMPLES
        return Calibration(synthetic_images(n, input_size, seed=seed),
                           f"synthetic natural-image stand-in (seed {seed}), not real data")
    path = Path(source)
    if path.is_dir():
        return _calibration_images(path, input_size)
    if not path.exists():
        raise UsageError(f"calibration data not found: {path}")
    if path.suffix.lower() != ".npy":
        raise UsageError(f"calibration data must be a .npy file or a directory of images, got "
                         f"{path}")
    return Calibration(load_npy(path, what="calibration data", input_size=input_size),
                       f"npy:{path.name}")




def _calibration_images(path: Path, input_size: tuple[int, int]) -> Calibration:
    files = sorted(p for p in path.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UsageError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in calibration "
                         f"directory {path}")
    data = np.concatenate([load_image(p, input_size) for p in files])
    return Calibration(data, f"images:{path.name}/ ({len(files)} files, ImageNet "
                             f"pre-processing)")


def synthetic_images(n: int, input_size: tuple[int, int], *, seed: int = 0) -> np.ndarray:
    """``n`` seeded photo-like images, ImageNet-normalised, float32 NCHW.

    A stand-in for real data: smooth colour fields whose amplitude falls as 1/frequency (the
    spectrum of natural images), with random contrast and a little pixel noise, in [0, 1]
    before the ImageNet normalisation. Their activation ranges resemble a photo's far more
    than N(0, 1) noise does, but they are no substitute for samples of the real input data.
    """
    rng = np.random.default_rng(seed)
    h, w = input_size
    out = np.empty((n, 3, h, w), np.float32)
    for i in range(n):
        img = sum(_upsample(rng.random((c + 1, c + 1, 3)), h, w) / c for c in (1, 2, 4, 8, 16, 32))
        img = (img - img.min()) / max(float(np.ptp(img)), 1e-6)
        img = img * rng.uniform(0.5, 1.0) + rng.uniform(0.0, 0.3)  # contrast and brightness
        img = np.clip(img + rng.normal(0.0, 0.02, img.shape), 0.0, 1.0)
        norm = (img - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
        out[i] = norm.transpose(2, 0, 1)
    return out


def _upsample(grid: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear interpolation of a ``[gh, gw, C]`` grid to ``[h, w, C]``."""
    ys, xs = np.linspace(0, grid.shape[0] - 1, h), np.linspace(0, grid.shape[1] - 1, w)
    y0 = np.minimum(ys.astype(int), grid.shape[0] - 2)
    x0 = np.minimum(xs.astype(int), grid.shape[1] - 2)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    g = grid
    top = g[y0][:, x0] * (1 - fx) + g[y0][:, x0 + 1] * fx
    bottom = g[y0 + 1][:, x0] * (1 - fx) + g[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy
