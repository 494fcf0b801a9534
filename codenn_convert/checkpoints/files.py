"""Checkpoint files: safe reading, atomic writing, format detection by extension.

* torch layout: ``.pt`` / ``.pth`` (``torch.load(weights_only=True)``) and ``.safetensors``
  (read with safetensors' numpy API, no torch needed).
* Keras layout: ``.weights.h5`` (Keras 3 ``save_weights``), and the Keras 2 HDF5 layout
  (``layer_names`` / ``weight_names``, e.g. keras.applications downloads). Read with h5py
  directly; the values are identical to ``model.load_weights`` and no Keras object is
  deserialised.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Literal

import numpy as np

from codenn_convert.checkpoints.atomic import atomic_output, ensure_writable
from codenn_convert.checkpoints.filters import unwrap_checkpoint
from codenn_convert.errors import (
    CheckpointError,
    UsageError,
)

Format = Literal["pt", "safetensors", "keras"]
Layout = Literal["torch", "keras"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")

#: h5 root attribute where we keep torch-only BatchNorm counters (Keras ignores it).
TRACKED_ATTR = "codenn_num_batches_tracked"


def checkpoint_format(path: str | os.PathLike[str]) -> Format:
    """Detect the file format from the extension."""
    name = Path(path).name.lower()
    if name.endswith((".pt", ".pth", ".ckpt")):  # .ckpt: Lightning's torch.save
        return "pt"
    if name.endswith(".safetensors"):
        return "safetensors"
    if name.endswith(".h5"):
        return "keras"
    raise UsageError(
        f"cannot tell the format of {path}: use .pt, .pth, .ckpt or .safetensors (torch "
        f"layout) or .weights.h5 (Keras)"
    )


def layout_of(path: str | os.PathLike[str]) -> Layout:
    """``"torch"`` or ``"keras"``: which twin's weight layout a file holds."""
    return "keras" if checkpoint_format(path) == "keras" else "torch"


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")


def _unwrap(obj: Any, path: Path, notes: list[str]) -> dict[str, Any]:
    """The state_dict of a bare one or of a training checkpoint (``{"state_dict": ...}``,
    ``{"model": ...}``, EMA...): see
    :func:`codenn_convert.checkpoints.filters.unwrap_checkpoint`."""
    state = unwrap_checkpoint(obj, notes)
    if not state:
        raise CheckpointError(f"{path} does not hold a state_dict (found {type(obj).__name__})")
    return state


#: Instance attributes every pickled ``nn.Module`` carries; a state_dict has none of them.
_MODULE_MARKERS = (b"_parameters", b"_buffers", b"_modules")
#: A whole-model pickle's records are small; larger ones are not scanned for the markers.
_MAX_PICKLE_SCAN = 64 * 2**20


def _pickle_bytes(path: Path) -> bytes:
    """The pickle stream of a torch file (``*/data.pkl`` in a zip archive), bounded."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            info = next((i for i in zf.infolist() if i.filename.endswith("data.pkl")), None)
            if info is None or info.file_size > _MAX_PICKLE_SCAN:
                return b""
            return zf.read(info)
    with open(path, "rb") as fh:
        return fh.read(_MAX_PICKLE_SCAN)


def _refusal(path: Path, exc: Exception) -> CheckpointError:
    """Tell a pickled nn.Module, a forbidden global and a damaged file apart."""
    text = _ANSI.sub("", str(exc))
    match = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", text)
    if match is None:
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
        why = detail[1].strip() if detail else "an unreadable pickle"
        return CheckpointError(f"{path} is not a readable torch checkpoint: the file is "
                               f"damaged or of another kind ({why})")
    if all(m in _pickle_bytes(path) for m in _MODULE_MARKERS):
        return CheckpointError(f"{path} holds a whole pickled nn.Module ({match[1]}), which "
                               f"only code execution could load; save model.state_dict() "
                               f"instead")
    return CheckpointError(f"refused to load {path}: it references the global {match[1]}, "
                           f"which weights-only loading forbids (loading it could run code)")


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``, memory-mapped for zip files so a tensor's storage
    is read only when used; errors become one line saying what the file is."""
    import torch

    is_zip = zipfile.is_zipfile(path)
    if not is_zip:
        with open(path, "rb") as fh:
            head = fh.read(2)
        if head == b"PK":
            raise CheckpointError(f"{path} is not a readable torch checkpoint: a truncated or "
                                  f"damaged zip archive")
        if head[:1] != b"\x80":  # neither a zip archive nor the legacy pickle format
            raise CheckpointError(f"{path} is not a readable torch checkpoint: it is neither a "
                                  f"zip archive nor a pickle (a damaged file, or another kind "
                                  f"of file)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as exc:
        raise _refusal(path, exc) from None
    except MemoryError:
        raise CheckpointError(f"{path} claims more memory than is available: damaged or "
                              f"hostile file") from None
    except Exception as exc:  # noqa: BLE001 - any other failure means an unreadable file
        raise CheckpointError(f"{path} is not a readable torch checkpoint: the file is "
                              f"damaged or truncated ({_first_line(exc)})") from None


def _to_numpy(value: Any) -> np.ndarray:
    """A tensor as numpy, dtype kept; bfloat16 (which numpy lacks) as ml_dtypes' bfloat16."""
    import torch

    value = value.detach().cpu()
    if value.dtype == torch.bfloat16:
        import ml_dtypes

        return value.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return value.numpy()


def load_torch_state(
    path: str | os.PathLike[str], *, notes: list[str] | None = None
) -> dict[str, np.ndarray]:
    """Read a torch-layout checkpoint (.pt/.pth/.safetensors) into numpy arrays, safely.

    Source dtypes are kept (float16, bfloat16 as ml_dtypes', float64); a training checkpoint
    is unwrapped to its state_dict, each step appended to ``notes``.
    """
    path = Path(path)
    _require_file(path)
    fmt = checkpoint_format(path)
    if fmt == "keras":
        raise UsageError(f"{path} is a Keras file, not a torch checkpoint")
    if fmt == "safetensors":
        import ml_dtypes  # noqa: F401 - gives numpy the 'bfloat16' that BF16 tensors need
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            return dict(load_file(str(path)))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from None
    obj = _torch_load(path)
    state = _unwrap(obj, path, [] if notes is None else notes)
    return {key: _to_numpy(value) for key, value in state.items()}


def _to_tensor(value: np.ndarray) -> Any:
    """numpy to torch, dtype kept (ml_dtypes' bfloat16 becomes torch.bfloat16)."""
    import torch

    arr = np.array(value)
    if arr.dtype.name == "bfloat16":
        return torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(arr)


def save_torch_state(state: dict[str, np.ndarray], path: str | os.PathLike[str]) -> Path:
    """Write a torch-layout checkpoint atomically (.pt/.pth via torch.save, or .safetensors)."""
    path = Path(path)
    fmt = checkpoint_format(path)
    if fmt == "keras":
        raise UsageError(f"{path} is a Keras file name; torch layouts are .pt/.pth/.safetensors")
    with atomic_output(path) as tmp:
        if fmt == "safetensors":
            from safetensors.numpy import save_file

            # np.ascontiguousarray would turn 0-d counters into shape (1,).
            save_file({k: np.array(v, order="C") for k, v in state.items()}, str(tmp))
        else:
            import torch

            torch.save({k: _to_tensor(v) for k, v in state.items()}, tmp)
    return path


#: Largest HDF5 attribute we read (layer/weight name lists of the deepest nets are ~100 KiB).
MAX_ATTR_BYTES = 16 * 2**20


def _attr(group: Any, name: str, path: Path) -> Any:
    """Read one attribute after checking its stored size (a name list can't be gigabytes)."""
    import h5py

    aid = h5py.h5a.open(group.id, name.encode())
    try:
        size = aid.get_storage_size()
    except RuntimeError:  # HDF5 reports an empty attribute's size 0 as an error
        size = 0
    if size > MAX_ATTR_BYTES:
        raise CheckpointError(f"{path}: attribute {name!r} of {group.name} claims {size:,} "
                              f"bytes; refusing to read it (limit {MAX_ATTR_BYTES:,})")
    return group.attrs[name]


def _has_str_list(group: Any, name: str) -> bool:
    return name in group.attrs or f"{name}0" in group.attrs


def _h5_str_list(group: Any, name: str, path: Path) -> list[str]:
    """A list-of-strings attribute as Keras 2 wrote it: whole, or split into ``name0``,
    ``name1``, ... when it exceeded HDF5's 64 KiB object-header limit; bytes or str items."""
    if name in group.attrs:
        chunks = [_attr(group, name, path)]
    else:
        chunks, i = [], 0
        while f"{name}{i}" in group.attrs:
            chunks.append(_attr(group, f"{name}{i}", path))
            i += 1
    return [
        item.decode("utf8") if isinstance(item, bytes) else str(item)
        for chunk in chunks
        for item in np.atleast_1d(chunk)
        if isinstance(item, bytes | str)  # an empty list is stored as a float64 array
    ]


def _keras3_datasets(f: Any, path: Path) -> dict[str, list[Any]]:
    """Keras 3 ``.weights.h5``: ``layers/<object path>/vars`` with the layer's name in the
    ``name`` attribute and its variables as datasets ``0``, ``1``, ... in creation order.
    Returns the h5py datasets, unread."""
    import h5py

    found: dict[str, list[Any]] = {}

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Group) and name.endswith("vars") and len(obj):
            layer = str(_attr(obj, "name", path)) if "name" in obj.attrs else name.split("/")[-2]
            found[layer] = [obj[str(i)] for i in range(len(obj))]

    f["layers"].visititems(visit)
    return found


def _legacy_datasets(f: Any, path: Path) -> dict[str, list[Any]]:
    """Keras 2 HDF5 weights (``save_weights`` to ``.h5``, and the keras.applications
    downloads): root attribute ``layer_names``; group ``<layer>`` with attribute
    ``weight_names``; each variable at ``<layer>/<weight name>``, in that order. Unread."""
    found: dict[str, list[Any]] = {}
    for layer in _h5_str_list(f, "layer_names", path):
        names = _h5_str_list(f[layer], "weight_names", path)
        if names:  # weightless layers (input, pooling, flatten) list no weights
            found[layer] = [f[layer][n] for n in names]
    return found


#: Keras writes datasets uncompressed, so their data fits in the file; this much slack
#: still admits any compressed file we know of, and bounds what a hostile header can cost.
MAX_DATA_PER_FILE_BYTE = 8
MIN_DATA_LIMIT = 64 * 2**20


def _weight_dtype(ds: Any) -> bool:
    """Float arrays, or an integer scalar: a counter such as Normalization's ``count``."""
    return ds.dtype.kind == "f" or (ds.dtype.kind in "iu" and ds.shape == ())


def _check_datasets(found: dict[str, list[Any]], path: Path, file_bytes: int) -> None:
    """Refuse, from the headers alone, what no Keras weights file holds: a variable that is
    neither a float array nor an integer scalar, or data claims that dwarf the file (a
    sparse-HDF5 bomb: a tiny file whose datasets claim terabytes)."""
    import h5py

    total = 0
    for layer, datasets in found.items():
        for ds in datasets:
            if not isinstance(ds, h5py.Dataset) or not _weight_dtype(ds) or ds.dtype.itemsize > 8:
                kind = getattr(ds, "dtype", type(ds).__name__)
                raise CheckpointError(f"{path}: {layer}: a variable is {kind}, not a float array")
            total += int(np.prod(ds.shape, dtype=np.float64)) * ds.dtype.itemsize
    limit = MAX_DATA_PER_FILE_BYTE * file_bytes + MIN_DATA_LIMIT
    if total > limit:
        raise CheckpointError(f"{path}: its datasets claim {total:,} bytes, far more than the "
                              f"{file_bytes:,}-byte file holds; refusing to read them (a "
                              f"damaged or hostile file)")


def read_keras_weights(
    path: str | os.PathLike[str],
) -> tuple[dict[str, list[np.ndarray]], dict[str, int]]:
    """Read Keras weights into ``{layer name: [variables]}`` plus BN counters.

    The layout is detected by content: Keras 3 ``.weights.h5`` (a ``layers`` group) or the
    Keras 2 HDF5 layout (a ``layer_names`` attribute, at the root or, in a whole-model
    ``.h5``, under ``model_weights``). Variables come back in Keras's order either way. Every
    dataset's dtype and size is checked from its header before any data is read; shapes are
    then checked against the model by the mapper, with errors that name the layer.
    """
    import h5py

    path = Path(path)
    _require_file(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise CheckpointError(f"{path} is not a readable HDF5 file: {_first_line(exc)}"
                              ) from None
    try:
        with f:
            found = _find_datasets(f, path)
            _check_datasets(found, path, path.stat().st_size)
            weights = {layer: [ds[()] for ds in dss] for layer, dss in found.items()}
            tracked = _json_attr(f, TRACKED_ATTR, path)
            return weights, {str(k): int(v) for k, v in tracked.items()}
    except CheckpointError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path} is damaged or truncated: {_first_line(exc)}") from None


def _json_attr(f: Any, name: str, path: Path) -> dict[str, Any]:
    """A JSON-object root attribute we wrote (size-checked; ``{}`` when absent)."""
    value = json.loads(_attr(f, name, path)) if name in f.attrs else {}
    if not isinstance(value, dict):
        raise ValueError(f"attribute {name} is not a JSON object")
    return value


def read_json_attr(path: str | os.PathLike[str], name: str) -> dict[str, Any]:
    """One JSON-object root attribute of an HDF5 file, read as safely as the weights."""
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            return _json_attr(f, name, path)
    except CheckpointError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path} is damaged or truncated: {_first_line(exc)}") from None


def _find_datasets(f: Any, path: Path) -> dict[str, list[Any]]:
    if "layers" in f:
        return _keras3_datasets(f, path)
    if _has_str_list(f, "layer_names"):
        return _legacy_datasets(f, path)
    if "model_weights" in f and _has_str_list(f["model_weights"], "layer_names"):
        return _legacy_datasets(f["model_weights"], path)
    raise CheckpointError(
        f"{path} holds no Keras weights (neither a Keras 3 'layers' group nor a "
        f"Keras 2 'layer_names' attribute)"
    )


def _first_line(exc: BaseException) -> str:
    """An exception's first line, whole (never cut mid-sentence)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _NamedBuffer(io.BytesIO):
    """An in-memory file Keras accepts as a ``.weights.h5`` path (its H5 store takes a
    BytesIO; its name check reads ``str()``)."""

    def __str__(self) -> str:
        return "memory.weights.h5"


def save_keras_model_weights(
    model: Any, path: str | os.PathLike[str], tracked: dict[str, int] | None = None,
    attrs: dict[str, str] | None = None,
) -> Path:
    """``model.save_weights`` atomically; BN counters (and ``attrs``, e.g. the source dtypes)
    go into root attributes.

    The HDF5 file is built in memory and its bytes written by :func:`atomic_output`: HDF5's
    own writer crashes the process (SIGSEGV) when the disk fills up under it, while a plain
    write fails with ENOSPC, which is a clean one-line error with the old file kept.
    """
    import h5py

    path = Path(path)
    if not path.name.endswith(".weights.h5"):
        raise UsageError(f"Keras weights must be saved as .weights.h5, got {path.name}")
    ensure_writable(path)
    buffer = _NamedBuffer()
    model.save_weights(buffer)
    if tracked or attrs:
        with h5py.File(buffer, "a") as f:
            if tracked:
                f.attrs[TRACKED_ATTR] = json.dumps(tracked, sort_keys=True)
            for name, value in (attrs or {}).items():
                f.attrs[name] = value
    with atomic_output(path) as tmp, tmp.open("wb") as out:
        out.write(buffer.getbuffer())
    return path


def nonfinite_tensors(state: dict[str, np.ndarray]) -> list[tuple[str, int]]:
    """``(key, number of NaN/Inf values)`` for every floating tensor that holds any, in order.

    One NaN weight turns every logit NaN in every runtime, which would then "agree"; callers
    refuse (convert, export) or report (verify) such a state instead.
    """
    found = []
    for key, value in state.items():
        arr = np.asarray(value)
        if arr.dtype.kind in "fc":
            bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
            if bad:
                found.append((key, bad))
    return found


def describe_nonfinite(found: list[tuple[str, int]], limit: int = 3) -> str:
    """``"layer1.0.conv1.weight (1 value), fc.bias (2 values)"``, at most ``limit`` named."""
    parts = [f"{k} ({n} value{'s' if n != 1 else ''})" for k, n in found[:limit]]
    more = f" and {len(found) - limit} more tensors" if len(found) > limit else ""
    return ", ".join(parts) + more


def refuse_nonfinite(state: dict[str, np.ndarray], src: str | os.PathLike[str]) -> None:
    """Raise a one-line error naming the first NaN/Inf tensor of ``state`` and the count."""
    found = nonfinite_tensors(state)
    if found:
        key, count = found[0]
        raise CheckpointError(
            f"{src} holds non-finite values: {key} has {count} NaN/Inf value"
            f"{'s' if count != 1 else ''} ({len(found)} tensor{'s' if len(found) != 1 else ''}"
            f" in all); nothing written (--allow-nonfinite to go on anyway)")
