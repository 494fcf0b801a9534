"""Keras -> ONNX export (through tf2onnx) whose memory follows the graph, not the weights.

``tf2onnx.convert.from_keras`` freezes every variable into a constant and then runs grappler
and its own optimizer passes over graphs holding those constants; each pass deep-copies and
re-serialises them, so the export needs ~50x the weights (VGG-19 does not fit in 24 GB).

Here tf2onnx never sees the big tensors:

1. ``model.stateless_call`` is traced in a ``tf.function`` that takes every *kernel*
   (rank >= 2, or large) as an input. Vectors (biases, BatchNorm statistics) are embedded as
   constants: they are tiny, and tf2onnx needs them constant to fold the BatchNorm arithmetic
   and to push its NHWC<->NCHW layout transposes through it.
2. tf2onnx converts that weight-free graph (``from_function``).
3. The kernels are bound as initializers in place of those graph inputs, by name; pure layout
   ops applied to them (the HWIO->OIHW ``Transpose`` in front of every Conv) are folded with
   numpy. Layout ops move bits without arithmetic, so folding them changes no value.
4. The file is written by streaming the kernels straight from TensorFlow's buffers into the
   protobuf encoding: no ``TensorProto`` copy and no serialised copy of the weights.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from codenn_convert.checkpoints.atomic import atomic_output
from codenn_convert.errors import UsageError
from codenn_convert.export.metadata import META_PRECISION, set_metadata
from codenn_convert.export.onnx_writer import write_onnx, write_onnx_external
from codenn_convert.interface import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME
from codenn_convert.twins.build import inference_view

#: Symbolic batch dimension of the input and the output.
BATCH_DIM = "N"
#: Variables at least this large are fed as graph inputs even when they are vectors.
FEED_MIN_BYTES = 1 << 20


def export_keras_onnx(
    model: Any, path: str | os.PathLike[str], *, opset: int = DEFAULT_OPSET,
    external_data: bool = False,
) -> Path:
    """Export the logits of a built Keras twin to one ONNX file, atomically.

    The file takes ``input`` as float32 NCHW ``[N, 3, H, W]`` (dynamic batch) and returns
    ``logits`` ``[N, num_classes]``; the NCHW->NHWC transpose happens inside the graph.
    ``external_data=True`` is for intermediates in a private directory (the reduced-precision
    exports): the kernels go to ``<path>.data`` beside it, written in place, so that a later
    step can read the graph without them.
    """
    path = Path(path)
    if external_data:
        write_onnx_external(path, *_prepare(model, opset))
        return path
    # Entered first so that an unwritable destination fails before any conversion work.
    with atomic_output(path) as tmp:
        write_onnx(tmp, *_prepare(model, opset))
    return path


def _prepare(model: Any, opset: int) -> tuple[Any, list[tuple[str, np.ndarray]]]:
    """The checked weight-free ModelProto and the kernels to stream into it."""
    onnx_model, weights = _convert_weight_free(inference_view(model), opset)
    tensors = _bind_and_fold(onnx_model, weights)
    del weights
    check_structure(onnx_model, tensors)
    set_metadata(onnx_model, {META_PRECISION: "fp32"})
    return onnx_model, tensors


def check_structure(model: Any, tensors: Sequence[tuple[str, np.ndarray]]) -> None:
    """``onnx.checker`` (with strict shape inference) on everything but the tensors' bytes.

    The streamed initializers are declared as typed, shaped graph inputs of a small copy of
    the model, so the check costs nothing like the weights; checking the written file instead
    would parse all of it (+2x its size in memory for VGG-19, and seconds).
    """
    import onnx
    from onnx import helper

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.input.extend(
        helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
        for name, a in tensors
    )
    onnx.checker.check_model(probe, full_check=True)


def _is_fed(shape: Sequence[int], nbytes: int) -> bool:
    """Whether a variable becomes a graph input (True) or a constant seen by tf2onnx."""
    return len(shape) >= 2 or nbytes >= FEED_MIN_BYTES


def _variable_array(variable: Any) -> np.ndarray:
    """A read-only numpy view of a Keras variable's TensorFlow buffer (no copy)."""
    import tensorflow as tf

    # ``np.asarray`` on an eager tensor shares its buffer; ``.numpy()`` would copy it.
    return np.asarray(tf.convert_to_tensor(variable.value))


def _convert_weight_free(view: Any, opset: int) -> tuple[Any, dict[str, tuple[str, np.ndarray]]]:
    """tf2onnx-convert ``view`` with its kernels as graph inputs.

    Returns the ModelProto and ``{graph input name: (variable path, array)}`` for the kernels.
    """
    import tensorflow as tf
    import tf2onnx

    if len(view.inputs) != 1:
        raise UsageError(f"ONNX export needs a single-input model; {view.name} has "
                         f"{len(view.inputs)}")
    shape = tuple(view.inputs[0].shape)
    if len(shape) != 4 or any(d is None for d in shape[1:]):
        raise UsageError(f"ONNX export needs an NHWC input of static H, W, C; {view.name} takes "
                         f"{shape}")
    h, w, c = (int(d) for d in shape[1:])

    # stateless_call takes the values in exactly this order; the index names each input.
    variables = [*view.trainable_variables, *view.non_trainable_variables]
    n_trainable = len(view.trainable_variables)
    arrays = [_variable_array(v) for v in variables]
    fed = [i for i, a in enumerate(arrays) if _is_fed(a.shape, a.nbytes)]
    fed_set = set(fed)
    dtype = view.inputs[0].dtype

    def forward(x: Any, kernels: list[Any]) -> dict[str, Any]:
        it = iter(kernels)
        values = [next(it) if i in fed_set else tf.constant(a) for i, a in enumerate(arrays)]
        nhwc = tf.transpose(x, [0, 2, 3, 1])
        y, _ = view.stateless_call(
            values[:n_trainable], values[n_trainable:], nhwc, training=False
        )
        return {OUTPUT_NAME: y}  # a dict output makes tf2onnx name the ONNX output after it

    signature = (
        tf.TensorSpec((None, c, h, w), dtype, name=INPUT_NAME),
        [tf.TensorSpec(arrays[i].shape, arrays[i].dtype, name=f"w{i}") for i in fed],
    )
    function = tf.function(forward, autograph=False)
    onnx_model, _ = tf2onnx.convert.from_function(function, input_signature=signature,
                                                  opset=opset)
    del function  # drops the traced TF graphs
    weights = {f"w{i}": (variables[i].path, arrays[i]) for i in fed}
    return onnx_model, weights


def _fold_transpose(node: Any, x: np.ndarray) -> np.ndarray:
    return np.transpose(x, _attr(node, "perm"))  # no perm: reversed axes, as in numpy


def _fold_reshape(node: Any, x: np.ndarray, shape: np.ndarray) -> np.ndarray:
    target = [int(s) for s in shape]
    if not _attr(node, "allowzero"):  # ONNX: 0 copies the input's dimension
        target = [x.shape[k] if s == 0 else s for k, s in enumerate(target)]
    return x.reshape(target)


def _fold_squeeze(node: Any, x: np.ndarray, axes: np.ndarray | None = None) -> np.ndarray:
    return np.squeeze(x, axis=None if axes is None else tuple(int(a) for a in axes))


def _fold_unsqueeze(node: Any, x: np.ndarray, axes: np.ndarray) -> np.ndarray:
    return np.expand_dims(x, tuple(int(a) for a in axes))


#: Pure layout ops folded on initializers: they only move bits, so folding is exact.
_LAYOUT_FOLDS: dict[str, Callable[..., np.ndarray]] = {
    "Transpose": _fold_transpose,
    "Reshape": _fold_reshape,
    "Squeeze": _fold_squeeze,
    "Unsqueeze": _fold_unsqueeze,
    "Identity": lambda node, x: x,
}


def _attr(node: Any, name: str) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return None


def _bind_and_fold(
    model: Any, weights: dict[str, tuple[str, np.ndarray]]
) -> list[tuple[str, np.ndarray]]:
    """Turn the kernel inputs of ``model`` into initializers and fold layout ops on them.

    Edits ``model`` in place (inputs, nodes, small initializers, names) and returns the big
    initializers that the writer streams, named after their Keras variable paths.
    """
    from onnx import numpy_helper

    graph = model.graph
    small = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    big: dict[str, np.ndarray] = {name: a for name, (_, a) in weights.items()}
    # ``origin`` tracks which fed kernel each big tensor derives from, to name it after it.
    origin = {name: name for name in big}
    kept = []
    for node in graph.node:
        fold = _LAYOUT_FOLDS.get(node.op_type)
        args = [n for n in node.input if n]
        if fold is None or not args or not all(n in big or n in small for n in args):
            kept.append(node)
            continue
        value = fold(node, *(big[n] if n in big else small[n] for n in args))
        big[node.output[0]] = value  # often a view: the writer copies one tensor at a time
        if args[0] in origin:
            origin[node.output[0]] = origin[args[0]]
    del graph.node[:]
    graph.node.extend(kept)  # copies the messages: edit graph.node from here on
    del kept
    used = {n for node in graph.node for n in node.input} | {o.name for o in graph.output}

    renames = _rename_kernels(graph, weights, big, origin, used, set(small))

    inputs = [i for i in graph.input if i.name not in weights]
    if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in graph.output] != [
        OUTPUT_NAME
    ]:
        # The kernels are bound by name: a tf2onnx that named its inputs differently would
        # leave them unbound, so refuse rather than write a model that wants its weights fed.
        raise RuntimeError(
            f"tf2onnx produced inputs {[i.name for i in inputs]} and outputs "
            f"{[o.name for o in graph.output]} besides the kernels; expected [{INPUT_NAME!r}] "
            f"and [{OUTPUT_NAME!r}]"
        )
    del graph.input[:]
    graph.input.extend(inputs)
    smalls = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(smalls)
    _name_batch_dim(graph)
    return [(renames.get(name, name), a) for name, a in big.items() if name in used]


def _rename_kernels(graph: Any, weights: dict[str, tuple[str, np.ndarray]],
                    big: dict[str, np.ndarray], origin: dict[str, str], used: set[str],
                    small: set[str]) -> dict[str, str]:
    """Each kernel that ends up in the file once takes its Keras variable path as its name
    (unless another tensor already uses that name); the graph's nodes are renamed to match.
    Returns ``{old name: new name}``."""
    taken = {n for node in graph.node for n in node.output} | small | set(big)
    finals: dict[str, list[str]] = {}
    for name in big:
        if name in used and name in origin:
            finals.setdefault(origin[name], []).append(name)
    renames = {}
    for feed, names in finals.items():
        var_path = weights[feed][0]
        if len(names) == 1 and var_path not in taken:
            renames[names[0]] = var_path
            taken.add(var_path)
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name in renames:
                node.input[k] = renames[name]
    return renames


def _name_batch_dim(graph: Any) -> None:
    """Give the input's and output's batch dimension one symbolic name."""
    for value in (*graph.input, *graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = BATCH_DIM


