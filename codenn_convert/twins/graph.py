"""A functional Keras model's graph, read through public API only.

Which layers feed which comes from ``Model.get_config()``: every layer's ``inbound_nodes``
name the layers whose outputs its first call takes (``keras_history``). Shapes come from the
public ``layer.input`` / ``layer.output``. No private attribute (``_inbound_nodes``,
``_keras_history``) and no ``keras.src`` import is involved.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def _history(value: Any) -> Iterator[str]:
    """The producing layers' names of every Keras tensor in a serialised call argument."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            yield value["config"]["keras_history"][0]
            return
        for item in value.values():
            yield from _history(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _history(item)


class KerasGraph:
    """The layers of a functional model and, for each, the layers feeding its first call."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.layers = {layer.name: layer for layer in model.layers}
        self.inbound: dict[str, list[str]] = {}
        for entry in model.get_config()["layers"]:
            nodes = entry.get("inbound_nodes") or []
            self.inbound[entry["name"]] = list(_history(nodes[0])) if nodes else []

    def source(self, name: str) -> str | None:
        """The one layer feeding ``name`` (None for none or several)."""
        feeding = self.inbound.get(name, [])
        return feeding[0] if len(feeding) == 1 else None

    def hwc_flatten_of(self, name: str) -> tuple[int, int, int] | None:
        """(H, W, C) if layer ``name``'s output is a Flatten of an H,W,C map (H*W > 1).

        Element-wise, weightless layers after the Flatten (Dropout, ReLU) do not change the
        order, so the walk back passes through them.
        """
        layer = self.layers[name]
        while type(layer).__name__ != "Flatten":
            source = self.source(layer.name)
            if layer.weights or source is None:
                return None
            if tuple(layer.input.shape) != tuple(layer.output.shape):
                return None
            layer = self.layers[source]
        shape = tuple(layer.input.shape[1:])
        if len(shape) != 3 or shape[0] * shape[1] == 1:
            return None  # a 1x1 map flattens identically in both orders
        return tuple(int(s) for s in shape)  # type: ignore[return-value]

    def fed_by_flatten(self, name: str) -> tuple[int, int, int] | None:
        """(H, W, C) if layer ``name`` is fed by a Flatten of an H,W,C map (the CHW->HWC
        rule of the first dense after a flatten)."""
        source = self.source(name)
        return None if source is None else self.hwc_flatten_of(source)
