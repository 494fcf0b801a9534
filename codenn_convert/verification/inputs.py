"""Input sources of the verifier: one list of ``(label, NCHW float32 batch)``.

* the seeded N(0,1) batch, label ``normal(0,1)``;
* photos with ImageNet pre-processing (:mod:`codenn_convert.verification.images`),
  ``image:<file name>``;
* the user's own batches in ``.npy`` files, ``npy:<file name>``: float32 ``[N, 3, H, W]``,
  whose H, W set the input size.

A ``.npy`` file is read by :mod:`codenn_convert.checkpoints.npy` (header first, no pickles).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from codenn_convert.checkpoints.npy import load_npy, npy_header
from codenn_convert.errors import UsageError
from codenn_convert.verification.images import load_image

#: The ``inputs`` label of the seeded batch; photos are ``image:<file name>``.
NORMAL_INPUTS = "normal(0,1)"

Batch = tuple[str, np.ndarray]


def seeded_batch(batch: int, input_size: tuple[int, int], seed: int) -> np.ndarray:
    """The verifier's NCHW float32 N(0,1) batch."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, 3, *input_size), dtype=np.float32)




def npy_input_size(files: Sequence[str | os.PathLike[str]],
                   input_size: tuple[int, int] | None) -> tuple[int, int] | None:
    """The H, W all ``files`` share (None without files); a contradicting ``input_size``
    or two files of different sizes are errors."""
    sizes = {Path(f).name: npy_header(f)[0][2:] for f in files}
    distinct = set(sizes.values())
    if len(distinct) > 1:
        raise UsageError("--inputs files differ in H, W: " + ", ".join(
            f"{n} {h}x{w}" for n, (h, w) in sizes.items()))
    if not distinct:
        return input_size
    size = tuple(distinct.pop())
    if input_size is not None and tuple(input_size) != size:
        raise UsageError(f"--input-size {input_size[0]} {input_size[1]} contradicts the "
                         f"--inputs files, which are {size[0]}x{size[1]}")
    return size  # type: ignore[return-value]




def collect_inputs(*, normal: bool, batch: int, seed: int, size: tuple[int, int],
                   images: Sequence[str | os.PathLike[str]] = (),
                   npy: Sequence[str | os.PathLike[str]] = ()) -> list[Batch]:
    """Every input source as ``(label, NCHW batch)``, in order: seeded, photos, npy files."""
    found: list[Batch] = [(NORMAL_INPUTS, seeded_batch(batch, size, seed))] if normal else []
    found += [(f"image:{Path(p).name}", load_image(p, size)) for p in images]
    found += [(f"npy:{Path(p).name}", load_npy(p)) for p in npy]
    labels = [label for label, _ in found]
    if len(set(labels)) != len(labels):
        raise UsageError("two inputs share a file name: " + ", ".join(labels))
    if not found:
        raise UsageError("nothing to verify: no seeded batch, image or --inputs file")
    return found
