"""ONNX files written without copying the weights: the graph is serialised alone, and each
initializer is streamed from its numpy buffer (inline raw data, or external data)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from codenn_convert.errors import OutputError

#: protobuf cannot parse a message of 2 GiB or more; larger models need external data.
PROTOBUF_LIMIT = (1 << 31) - 1

# ONNX protobuf field numbers (onnx.proto), for the streaming writer.
_MODEL_GRAPH = 7
_GRAPH_INITIALIZER = 5
_TENSOR_RAW_DATA = 9


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_header(field: int, length: int) -> bytes:
    """Tag and length of a length-delimited protobuf field."""
    return _varint(field << 3 | 2) + _varint(length)


def write_onnx(
    path: str | os.PathLike[str], model: Any, tensors: Iterable[tuple[str, np.ndarray]]
) -> None:
    """Write ``model`` plus ``tensors`` as raw-data initializers, without copying the arrays.

    The graph and the model are serialised without those initializers; each initializer is
    then encoded by hand as a TensorProto header followed by the array's own buffer. Parsers
    read fields in any order, so the file is a regular ModelProto (``onnx.load`` reads it
    exactly as if ``numpy_helper.from_array`` had built the initializers).
    """
    from onnx import TensorProto, helper

    encoded: list[tuple[bytes, np.ndarray]] = []
    for name, array in tensors:
        header = TensorProto(
            name=name, dims=array.shape,
            data_type=helper.np_dtype_to_tensor_dtype(array.dtype),
        ).SerializeToString()
        tensor = header + _field_header(_TENSOR_RAW_DATA, array.nbytes)
        encoded.append((_field_header(_GRAPH_INITIALIZER, len(tensor) + array.nbytes) + tensor,
                        array))
    graph = model.graph.SerializeToString()
    graph_len = len(graph) + sum(len(h) + a.nbytes for h, a in encoded)
    rest = type(model)()
    rest.CopyFrom(model)
    rest.ClearField("graph")
    head = rest.SerializeToString() + _field_header(_MODEL_GRAPH, graph_len) + graph
    total = len(head) - len(graph) + graph_len
    if total > PROTOBUF_LIMIT:
        raise OutputError(
            f"cannot write {path}: the model needs {total / 2**30:.2f} GiB, "
            f"over protobuf's 2 GiB limit for one ONNX file"
        )
    with open(path, "wb") as f:
        f.write(head)
        for header, array in encoded:
            f.write(header)
            # ONNX raw data is C-order little-endian. A contiguous array is written from its
            # own buffer; a view (a folded transpose) is copied here, one tensor at a time.
            data = np.require(array, dtype=array.dtype.newbyteorder("<"), requirements="C")
            f.write(memoryview(data.reshape(-1)).cast("B"))
            del data


def write_onnx_external(
    path: str | os.PathLike[str], model: Any, tensors: Iterable[tuple[str, np.ndarray]]
) -> None:
    """Write ``model`` with ``tensors`` as external data in ``<path>.data``, one at a time."""
    import onnx
    from onnx import TensorProto, helper

    path = Path(path)
    location = path.name + ".data"
    with open(path.parent / location, "wb") as f:
        for name, array in tensors:
            offset = f.tell()
            data = np.require(array, dtype=array.dtype.newbyteorder("<"), requirements="C")
            f.write(memoryview(data.reshape(-1)).cast("B"))
            tensor = TensorProto(name=name, dims=array.shape,
                                 data_type=helper.np_dtype_to_tensor_dtype(array.dtype),
                                 data_location=TensorProto.EXTERNAL)
            for key, value in (("location", location), ("offset", str(offset)),
                               ("length", str(array.nbytes))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            model.graph.initializer.append(tensor)
            del data
    onnx.save(model, str(path))
