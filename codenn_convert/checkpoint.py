"""Checkpoint files: safe reading, atomic writing, format detection by extension.

* torch layout: ``.pt`` / ``.pth`` (``torch.load(weights_only=True)``) and ``.safetensors``
  (read with safetensors' numpy API, no torch needed).
* Keras layout: ``.weights.h5`` (Keras 3 ``save_weights``), and the Keras 2 HDF5 layout
  (``layer_names`` / ``weight_names``, e.g. keras.applications downloads). Read with h5py
  directly; the values are identical to ``model.load_weights`` and no Keras object is
  deserialised.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from codenn_convert.errors import CheckpointError, OutputError, UsageError

Format = Literal["pt", "safetensors", "keras"]
Layout = Literal["torch", "keras"]

#: h5 root attribute where we keep torch-only BatchNorm counters (Keras ignores it).
TRACKED_ATTR = "codenn_num_batches_tracked"


def checkpoint_format(path: str | os.PathLike[str]) -> Format:
    """Detect the file format from the extension."""
    name = Path(path).name.lower()
    if name.endswith((".pt", ".pth")):
        return "pt"
    if name.endswith(".safetensors"):
        return "safetensors"
    if name.endswith(".h5"):
        return "keras"
    raise UsageError(
        f"cannot tell the format of {path}: use .pt, .pth or .safetensors (torch layout) "
        f"or .weights.h5 (Keras)"
    )


def layout_of(path: str | os.PathLike[str]) -> Layout:
    """``"torch"`` or ``"keras"``: which twin's weight layout a file holds."""
    return "keras" if checkpoint_format(path) == "keras" else "torch"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def ensure_writable(path: str | os.PathLike[str]) -> Path:
    """Fail early, before any work, if ``path`` cannot be created or replaced."""
    dst = Path(path)
    parent = dst.parent
    if not parent.is_dir():
        raise OutputError(f"cannot write {dst}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"cannot write {dst}: directory {parent} is not writable")
    if dst.is_dir():
        raise OutputError(f"cannot write {dst}: it is a directory")
    return dst


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success.

    A failure leaves any existing file at ``path`` untouched and removes the temporary file.
    The temporary name keeps the full suffix (Keras insists on ``.weights.h5``).
    """
    dst = ensure_writable(path)
    parent = dst.parent
    suffix = "".join(dst.suffixes[-2:]) if dst.name.endswith(".weights.h5") else dst.suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.stem}.", suffix=".tmp" + suffix, dir=parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600; give the file the mode a plain open() would (or keep the
        # mode of the file it replaces), so outputs stay readable by the user's tools.
        os.chmod(tmp, dst.stat().st_mode & 0o7777 if dst.exists() else 0o666 & ~_umask())
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")


def _unwrap(obj: Any, path: Path, notes: list[str]) -> dict[str, Any]:
    """The state_dict of a bare one or of a training checkpoint (``{"state_dict": ...}``,
    ``{"model": ...}``, EMA...): see :func:`codenn_convert.filters.unwrap_checkpoint`."""
    from codenn_convert.filters import unwrap_checkpoint

    state = unwrap_checkpoint(obj, notes)
    if not state:
        raise CheckpointError(f"{path} does not hold a state_dict (found {type(obj).__name__})")
    return state


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
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsafe content"
        raise CheckpointError(
            f"refused to load {path}: it holds objects that weights-only loading forbids "
            f"(a pickle that could run code). {first[:160]}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any other failure means an unreadable file
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is not a readable torch checkpoint: {msg[:160]}") from None
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


def _has_str_list(group: Any, name: str) -> bool:
    return name in group.attrs or f"{name}0" in group.attrs


def _h5_str_list(group: Any, name: str) -> list[str]:
    """A list-of-strings attribute as Keras 2 wrote it: whole, or split into ``name0``,
    ``name1``, ... when it exceeded HDF5's 64 KiB object-header limit; bytes or str items."""
    if name in group.attrs:
        chunks = [group.attrs[name]]
    else:
        chunks, i = [], 0
        while f"{name}{i}" in group.attrs:
            chunks.append(group.attrs[f"{name}{i}"])
            i += 1
    return [
        item.decode("utf8") if isinstance(item, bytes) else str(item)
        for chunk in chunks
        for item in np.atleast_1d(chunk)
        if isinstance(item, bytes | str)  # an empty list is stored as a float64 array
    ]


def _read_keras3_layers(f: Any) -> dict[str, list[np.ndarray]]:
    """Keras 3 ``.weights.h5``: ``layers/<object path>/vars`` with the layer's name in the
    ``name`` attribute and its variables as datasets ``0``, ``1``, ... in creation order."""
    import h5py

    weights: dict[str, list[np.ndarray]] = {}

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Group) and name.endswith("vars") and len(obj):
            layer = str(obj.attrs.get("name", name.split("/")[-2]))
            weights[layer] = [obj[str(i)][()] for i in range(len(obj))]

    f["layers"].visititems(visit)
    return weights


def _read_legacy_layers(f: Any) -> dict[str, list[np.ndarray]]:
    """Keras 2 HDF5 weights (``save_weights`` to ``.h5``, and the keras.applications
    downloads): root attribute ``layer_names``; group ``<layer>`` with attribute
    ``weight_names``; each variable at ``<layer>/<weight name>``, in that order."""
    weights: dict[str, list[np.ndarray]] = {}
    for layer in _h5_str_list(f, "layer_names"):
        names = _h5_str_list(f[layer], "weight_names")
        if names:  # weightless layers (input, pooling, flatten) list no weights
            weights[layer] = [f[layer][n][()] for n in names]
    return weights


def read_keras_weights(
    path: str | os.PathLike[str],
) -> tuple[dict[str, list[np.ndarray]], dict[str, int]]:
    """Read Keras weights into ``{layer name: [variables]}`` plus BN counters.

    The layout is detected by content: Keras 3 ``.weights.h5`` (a ``layers`` group) or the
    Keras 2 HDF5 layout (a ``layer_names`` attribute, at the root or, in a whole-model
    ``.h5``, under ``model_weights``). Variables come back in Keras's order either way.
    """
    import h5py

    path = Path(path)
    _require_file(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise CheckpointError(f"{path} is not a readable HDF5 file: {exc}") from None
    try:
        with f:
            if "layers" in f:
                weights = _read_keras3_layers(f)
            elif _has_str_list(f, "layer_names"):
                weights = _read_legacy_layers(f)
            elif "model_weights" in f and _has_str_list(f["model_weights"], "layer_names"):
                weights = _read_legacy_layers(f["model_weights"])
            else:
                raise CheckpointError(
                    f"{path} holds no Keras weights (neither a Keras 3 'layers' group nor a "
                    f"Keras 2 'layer_names' attribute)"
                )
            tracked = json.loads(f.attrs.get(TRACKED_ATTR, "{}"))
    except (OSError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{path} is damaged or truncated: {exc}") from None
    return weights, {k: int(v) for k, v in tracked.items()}


def save_keras_model_weights(
    model: Any, path: str | os.PathLike[str], tracked: dict[str, int] | None = None,
    attrs: dict[str, str] | None = None,
) -> Path:
    """``model.save_weights`` atomically; BN counters (and ``attrs``, e.g. the source dtypes)
    go into root attributes."""
    import h5py

    path = Path(path)
    if not path.name.endswith(".weights.h5"):
        raise UsageError(f"Keras weights must be saved as .weights.h5, got {path.name}")
    with atomic_output(path) as tmp:
        tmp.unlink()  # Keras refuses to overwrite silently in some versions
        model.save_weights(str(tmp))
        if tracked or attrs:
            with h5py.File(tmp, "a") as f:
                if tracked:
                    f.attrs[TRACKED_ATTR] = json.dumps(tracked, sort_keys=True)
                for name, value in (attrs or {}).items():
                    f.attrs[name] = value
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
