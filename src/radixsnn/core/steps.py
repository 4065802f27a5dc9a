"""Time steps per layer and per channel: reading an assignment against a graph, and the train length of
every spiking node that follows from it.

An assignment is an integer (every layer) or a mapping ``{"default": T, layer: T or [T per channel]}``;
:func:`per_channel` splits the per-channel lists out, :func:`per_layer` reads the rest, and
:func:`train_lengths` / :func:`channel_lengths` give the steps each node's trains last.
"""
from __future__ import annotations

from radixsnn.core.graph import Graph
from radixsnn.errors import ConfigError


def per_layer(graph: Graph, value, what: str, kinds: tuple[str, ...] = ("neuron",)) -> tuple[int, dict[str, int]]:
    """``(default, {layer: value})`` from one integer or a per-layer assignment.

    An assignment is a mapping ``{"default": v, layer: v, ...}``; a layer is named as in the graph
    (``layer3_2_conv2``) or by the model's module name (``layer3.2.conv2``), and must be one of the
    graph's nodes of ``kinds``. Layers set to the default are dropped. Ranges are the caller's to check.

    >>> g = Graph.from_dict({"nodes": [
    ...     {"name": "input", "kind": "input", "shape": [1, 2, 2], "attrs": {"mean": [0.0], "std": [1.0]}},
    ...     {"name": "a_0", "kind": "neuron", "shape": [3], "terms": [{"src": "input", "op": "linear",
    ...      "param": "a_0.w", "weight_shape": [3, 4], "attrs": {"mode": "flatten"}}]},
    ...     {"name": "output", "kind": "output", "shape": [2], "terms": [{"src": "a_0", "op": "linear",
    ...      "param": "fc.w", "weight_shape": [2, 3], "attrs": {"mode": "flatten"}}]}]})
    >>> per_layer(g, 4, "time_steps"), per_layer(g, {"default": 4, "a.0": 6}, "time_steps")
    ((4, {}), (4, {'a_0': 6}))

    Lists (one value per output channel) are :func:`per_channel`'s to split out first:

    >>> per_channel(g, {"default": 4, "a.0": [2, 5, 3]}), per_channel(g, {"default": 4, "a_0": [3, 3, 3]})
    (({'default': 4, 'a.0': 5}, {'a_0': [2, 5, 3]}), ({'default': 4, 'a_0': 3}, {}))
    """
    if isinstance(value, bool):
        raise ConfigError(what, f"must be an integer or a per-layer assignment, got {value!r}")
    if isinstance(value, int):
        return value, {}
    if not isinstance(value, dict) or "default" not in value:
        raise ConfigError(what, f"must be an integer or a mapping with a 'default', got {value!r}")
    names = {n.name for n in graph.nodes if n.kind in kinds}
    default, layers = value["default"], {}
    for key, v in value.items():
        if key == "default":
            continue
        name = _layer_name(names, key, what)
        if not isinstance(v, int) or isinstance(v, bool):
            raise ConfigError(what, f"of layer {key!r} must be an integer, got {v!r}")
        if v != default:
            layers[name] = v
    if not isinstance(default, int) or isinstance(default, bool):
        raise ConfigError(what, f"default must be an integer, got {default!r}")
    return default, layers


def _layer_name(names: set[str], key, what: str) -> str:
    """The graph name of layer ``key`` (a graph name or the model's dotted module name)."""
    name = key if key in names else str(key).replace(".", "_")
    if name not in names:
        raise ConfigError(what, f"names a layer {key!r} that the model does not have (its layers: "
                                f"{', '.join(sorted(names)[:6])}, ...)")
    return name


def per_channel(graph: Graph, value, what: str = "time_steps") -> tuple[int | dict, dict[str, list[int]]]:
    """Split the per-channel values out of an assignment: a neuron layer may hold a list, one value per
    output channel. Returns the assignment with each list replaced by its largest value (what
    :func:`per_layer` then reads: the layer's train length) and ``{layer: list}`` for the layers whose
    channels differ (examples: :func:`per_layer`). Ranges are the caller's to check.
    """
    if not isinstance(value, dict):
        return value, {}
    names = {n.name for n in graph.nodes if n.kind == "neuron"}
    out, channels = {}, {}
    for key, v in value.items():
        if not isinstance(v, (list, tuple)):
            out[key] = v
            continue
        name = _layer_name(names, key, what)
        count = graph[name].channels
        if len(v) != count or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            raise ConfigError(what, f"of layer {key!r} must be an integer or a list of {count} integers (one per "
                                    f"output channel), got a list of {len(v)}")
        out[key] = max(v)
        if min(v) != max(v):
            channels[name] = [int(x) for x in v]
    return out, channels


def train_lengths(graph: Graph, time_steps: int, layer_time_steps: dict[str, int], input_bits: int) -> dict[str, int]:
    """Steps of the trains every spiking node emits: ``input_bits`` for the pixels, a neuron layer's own
    ``T`` (``layer_time_steps``, else ``time_steps``), a max-pool its source's."""
    lengths: dict[str, int] = {}
    for node in graph.nodes:
        if node.kind == "input":
            lengths[node.name] = input_bits
        elif node.kind == "neuron":
            lengths[node.name] = layer_time_steps.get(node.name, time_steps)
        elif node.kind == "maxpool":
            lengths[node.name] = lengths[node.src]
    return lengths


def channel_lengths(graph: Graph, channel_time_steps: dict[str, list[int]]) -> dict[str, list[int]]:
    """Train lengths per channel of the spiking nodes whose channels differ: a neuron layer's own
    (``channel_time_steps``), a max-pool its source's."""
    lengths: dict[str, list[int]] = {}
    for node in graph.nodes:
        if node.kind == "neuron" and node.name in channel_time_steps:
            lengths[node.name] = list(channel_time_steps[node.name])
        elif node.kind == "maxpool" and node.src in lengths:
            lengths[node.name] = lengths[node.src]
    return lengths
