"""What to verify and how: :class:`VerifyOptions`, every field with the CLI's default."""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from codenn_convert.errors import UsageError
from codenn_convert.export.precision import LOSSY_PRECISIONS
from codenn_convert.verification.lossy import check_thresholds
from codenn_convert.verification.runners import RUNTIMES as RUNTIME_TABLE

#: Our runtimes, in order (the table of :mod:`codenn_convert.verification.runners`).
RUNTIMES: tuple[str, ...] = tuple(RUNTIME_TABLE)


#: Reduced precisions the verifier can add to our ONNX runtimes.


PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class VerifyOptions:
    """What to verify and how; every field has the CLI's default."""

    weights: PathLike | None = None  # both sides, either layout
    torch_weights: PathLike | None = None  # torch side (torch, onnx-torch)
    keras_weights: PathLike | None = None  # Keras side (keras, onnx-keras)
    onnx: Sequence[PathLike] = ()  # given ONNX files, runtimes onnx:<file name>
    batch: int = 2
    seed: int = 0
    input_size: tuple[int, int] | None = None
    runtimes: Sequence[str] = RUNTIMES  # which of our runtimes run
    rtol: float | None = None  # default: the model's
    #: Compare every mapped layer of all pairs (True) or of the given pairs.
    layers: bool | Collection[tuple[str, str]] = False
    localise_failures: bool = True
    normal: bool = True  # run the seeded batch
    images: Sequence[PathLike] = ()
    inputs: Sequence[PathLike] = ()  # .npy batches, float32 [N, 3, H, W]
    options: Mapping[str, Any] = field(default_factory=dict)  # builder options, both twins
    work_dir: PathLike | None = None  # keep our ONNX exports here
    save_golden: PathLike | None = None
    #: Reduced precisions (fp16, int8) of our ONNX runtimes to add: onnx-torch-fp16, ...
    precisions: Sequence[str] = ()
    #: Overrides of the lossy thresholds (LossyThresholds fields, e.g. min_sqnr_db).
    thresholds: Mapping[str, float] = field(default_factory=dict)

    def check(self) -> None:
        """Reject impossible combinations before any model work."""
        if self.rtol is not None and not (math.isfinite(self.rtol) and self.rtol > 0):
            raise UsageError(f"rtol must be a positive finite number, got {self.rtol}")
        if self.batch < 1:
            raise UsageError("batch must be at least 1")
        unknown = [r for r in self.runtimes if r not in RUNTIMES]
        if unknown or len(self.runtimes) + len(self.onnx) < 2:
            raise UsageError(f"runtimes must be two or more of {', '.join(RUNTIMES)} and ONNX "
                             f"files" + (f"; unknown: {', '.join(unknown)}" if unknown else ""))
        if self.weights is not None and (self.torch_weights or self.keras_weights):
            raise UsageError("give --weights (both sides) or --torch-weights/--keras-weights, "
                             "not both")
        if self.save_golden is not None and "torch" not in self.runtimes:
            raise UsageError("--save-golden records the torch logits: keep torch in runtimes")
        self.check_lossy()

    def check_lossy(self) -> None:
        """Known reduced precisions, an ONNX runtime to convert, finite thresholds."""

        bad = [p for p in self.precisions if p not in LOSSY_PRECISIONS]
        if bad:
            raise UsageError(f"unknown precision {bad[0]!r}; use {' or '.join(LOSSY_PRECISIONS)}"
                             f" (float32 runtimes always run)")
        if self.precisions and not {"onnx-torch", "onnx-keras"} & set(self.runtimes):
            raise UsageError("--precision converts our ONNX exports: keep onnx-torch or "
                             "onnx-keras in runtimes")
        check_thresholds(self.thresholds)
