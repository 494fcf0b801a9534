"""The ``metadata_props`` our ONNX files carry: their precision and, for int8, how they were
calibrated."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

#: metadata_props keys written into every file we export.
META_PRECISION = "codenn.precision"


META_CALIBRATION_METHOD = "codenn.calibration.method"


META_CALIBRATION_SAMPLES = "codenn.calibration.samples"


META_CALIBRATION_DATA = "codenn.calibration.data"


def set_metadata(model: Any, entries: Mapping[str, str]) -> None:
    """Set ``entries`` in a ModelProto's ``metadata_props``, replacing same-named ones."""
    kept = [p for p in model.metadata_props if p.key not in entries]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in entries.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """An ONNX file's ``metadata_props`` as a dict."""
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False)
            .metadata_props}
