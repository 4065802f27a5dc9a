r"""Rate-coded integrate-and-fire conversion: the standard baseline the radix SNN is compared with.

This is the classic ANN-to-SNN conversion of Rueckauer et al. (2017), applied to the float network's
torch.fx graph:

* **BatchNorm folded** into the preceding convolution (``torch.fx.experimental.optimization.fuse``).
* **Integrate-and-fire neurons with reset by subtraction** replace every ReLU. Neuron ``l`` has
  threshold ``lambda_l``, the ``percentile`` (99.99 by default) of that ReLU's non-zero outputs on
  calibration images (*threshold balancing*; the same as data-based weight normalization). Its
  membrane ``v`` starts at ``init_membrane * lambda_l``; each step ``v += z``, and the neuron fires
  when ``v >= lambda_l`` and then subtracts ``lambda_l``. A spike carries the value ``lambda_l``, so
  the spike rate times ``lambda_l`` approximates the ReLU output clipped to ``[0, lambda_l]``.
* **Analog input**: the normalized image is the constant input current of the first layer at
  every step.
* Everything between neurons is the float network's own linear code, applied to one time step of
  spikes: convolutions and linear layers (their bias is a constant current per step), average
  pooling, flattening, shortcut slicing/padding and **residual additions** -- both branches of an
  addition add into the membrane of the neuron that replaces the ReLU after it.
* **Max pooling** passes, in each window, the current spike of the input with the largest
  accumulated input so far (gating by accumulated spike count, Rueckauer et al. 2017; ties go to
  the first position, as in ``max_pool2d``).
* **Output**: the last layer has no neurons; its input currents are accumulated, and the logits
  after ``t`` steps are that sum divided by ``t``.

One simulation runs to the largest requested ``T`` and reads the accuracy at every requested ``T``
on the way. It also counts, per image, the spikes, the *synaptic operations* they trigger (one
accumulate per spike and outgoing non-zero synapse: through convolutions and linear layers, through
average pooling into the next layer, and one per spike that reaches a neuron through a residual
shortcut) and the dense multiply-accumulates of the analog first layer (per step, times ``T``).
Operations are counted for ``nn.Conv2d`` and ``nn.Linear`` layers.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.experimental.optimization import fuse
from tqdm import tqdm

from radixsnn.core.inputs import model_normalization, normalize
from radixsnn.errors import ConfigError, ConversionError, RadixSNNError
from radixsnn.experiments.activations import activation_scales, relu_nodes, trace

#: Longest rate-coded simulation run (the paper's baselines use up to 2,500 steps).
MAX_RATE_STEPS = 4096

_MAXPOOL_FUNCTIONS = {F.max_pool2d, torch.max_pool2d}
_AVGPOOL_FUNCTIONS = {F.avg_pool2d, F.adaptive_avg_pool2d, torch.mean}


@dataclass
class RateCheckpoint:
    """Accuracy and activity of the rate SNN after ``time_steps`` steps (activity per image)."""

    time_steps: int
    accuracy: float
    agreement: float  # fraction of images where the SNN's class equals the float network's
    spikes: float
    synaptic_ops: float
    input_macs: float


def _pool_args(node: fx.Node, gm: fx.GraphModule) -> dict:
    """kernel_size, stride, padding, dilation, ceil_mode of a max-pool node (module or function)."""
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        return dict(kernel_size=m.kernel_size, stride=m.stride, padding=m.padding, dilation=m.dilation,
                    ceil_mode=m.ceil_mode)
    norm = node.normalized_arguments(gm, normalize_to_only_use_kwargs=True)
    kw = dict(norm.kwargs) if norm is not None else {}
    if not kw:
        names = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode")
        kw = dict(zip(names, node.args))
        kw.update(node.kwargs)
    return dict(kernel_size=kw["kernel_size"], stride=kw.get("stride") or kw["kernel_size"],
                padding=kw.get("padding", 0), dilation=kw.get("dilation", 1), ceil_mode=kw.get("ceil_mode", False))


def _is_maxpool(node: fx.Node, gm: fx.GraphModule) -> bool:
    if node.op == "call_function":
        return node.target in _MAXPOOL_FUNCTIONS
    return node.op == "call_module" and isinstance(gm.get_submodule(node.target), nn.MaxPool2d)


def _is_avgpool(node: fx.Node, gm: fx.GraphModule) -> bool:
    """Average pooling (module or function) or a ``mean`` over positions: a sum pool when counting."""
    if node.op == "call_function":
        return node.target in _AVGPOOL_FUNCTIONS
    if node.op == "call_method":
        return node.target == "mean"
    return node.op == "call_module" and isinstance(gm.get_submodule(node.target), (nn.AvgPool2d, nn.AdaptiveAvgPool2d))


class _Step(fx.Interpreter):
    """One time step of the rate SNN: the float graph with IF neurons and gated max-pools."""

    def __init__(self, snn: "RateSNN", state: dict):
        super().__init__(snn.gm)
        self.snn, self.state = snn, state

    def run_node(self, n: fx.Node):
        if n.op == "placeholder":
            return self.state["input"]
        if n.name in self.snn.thresholds:
            args, _ = self.fetch_args_kwargs_from_env(n)
            current = args[0]
            lam = self.snn.thresholds[n.name]
            v = self.state["v"].get(n.name)
            if v is None:
                v = torch.full_like(current, self.snn.init_membrane * lam)
            v = v + current
            spikes = (v >= lam).to(current.dtype)
            self.state["v"][n.name] = v - spikes * lam
            counts = self.state["counts"]
            counts[n.name] = counts[n.name] + spikes if n.name in counts else spikes
            return spikes * lam
        if n.name in self.snn.maxpools:
            args, _ = self.fetch_args_kwargs_from_env(n)
            x = args[0]
            acc = self.state["pool_acc"]
            acc[n.name] = acc[n.name] + x if n.name in acc else x.clone()
            _, idx = F.max_pool2d(acc[n.name], return_indices=True, **self.snn.maxpools[n.name])
            out = x.flatten(2).gather(2, idx.flatten(2)).view_as(idx)
            pc = self.state["pool_counts"]
            events = (out != 0).to(out.dtype)
            pc[n.name] = pc[n.name] + events if n.name in pc else events
            return out
        return super().run_node(n)


class _OpCounter(fx.Interpreter):
    """Counts accumulate operations: runs the graph on event counts instead of values.

    Neurons and max-pools output given event-count tensors, the input node a given tensor; each
    conv / linear layer adds the number of (event, non-zero synapse) pairs and outputs zeros; average
    pools become sum pools; each neuron (and the readout) adds the events reaching it directly,
    i.e. through a residual shortcut.
    """

    def __init__(self, snn: "RateSNN", input_events, neuron_events: dict, pool_events: dict):
        super().__init__(snn.gm)
        self.snn, self.input_events = snn, input_events
        self.neuron_events, self.pool_events = neuron_events, pool_events
        self.ops = 0.0

    def run_node(self, n: fx.Node):
        if n.op == "placeholder":
            return self.input_events
        if n.op == "output":
            args, _ = self.fetch_args_kwargs_from_env(n)
            self.ops += float(args[0].sum())
            return args[0]
        if n.name in self.snn.thresholds:
            args, _ = self.fetch_args_kwargs_from_env(n)
            self.ops += float(args[0].sum())
            return self.neuron_events[n.name]
        if n.name in self.snn.maxpools:
            return self.pool_events[n.name]
        if n.op == "call_module":
            m = self.module.get_submodule(n.target)
            args, _ = self.fetch_args_kwargs_from_env(n)
            if isinstance(m, nn.Conv2d):
                mask = (m.weight != 0).to(args[0].dtype)
                out = F.conv2d(args[0], mask, None, m.stride, m.padding, m.dilation, m.groups)
                self.ops += float(out.sum())
                return torch.zeros_like(out)
            if isinstance(m, nn.Linear):
                out = F.linear(args[0], (m.weight != 0).to(args[0].dtype))
                self.ops += float(out.sum())
                return torch.zeros_like(out)
        out = super().run_node(n)
        if _is_avgpool(n, self.module):
            args, _ = self.fetch_args_kwargs_from_env(n)
            out = out * (args[0][0].numel() / out[0].numel())  # inputs per output (uniform windows)
        return out


class RateSNN:
    """A float CNN converted to a rate-coded integrate-and-fire network (see the module docstring)."""

    def __init__(self, model: nn.Module, thresholds: dict[str, float] | None = None, init_membrane: float = 0.0,
                 mean=None, std=None):
        """``thresholds`` maps ReLU node names of the BN-folded graph to ``lambda_l`` (None: all 1);
        ``mean`` / ``std`` normalize the pixels (default: the model's registry config)."""
        if not 0.0 <= init_membrane < 1.0:
            raise ConfigError("init_membrane", f"must be in [0, 1), got {init_membrane}")
        self.mean, self.std = model_normalization(model, mean, std)
        model = model.eval()
        try:
            self.gm = fuse(trace(model))
        except RadixSNNError:
            raise
        except Exception as exc:
            raise ConversionError(f"cannot fold BatchNorm in {type(model).__name__}: {exc}") from None
        names = [n.name for n in relu_nodes(self.gm)]
        if not names:
            raise ConversionError(f"{type(model).__name__} has no ReLU to turn into neurons")
        thresholds = dict(thresholds) if thresholds is not None else {name: 1.0 for name in names}
        if set(thresholds) != set(names):
            raise ConfigError("thresholds", f"must be given for exactly the ReLU nodes {names}")
        if any(not (math.isfinite(v) and v > 0) for v in thresholds.values()):
            raise ConfigError("thresholds", "must be positive and finite")
        self.thresholds = thresholds
        self.init_membrane = float(init_membrane)
        self.maxpools = {n.name: _pool_args(n, self.gm) for n in self.gm.graph.nodes if _is_maxpool(n, self.gm)}

    @classmethod
    def from_calibration(
        cls,
        model: nn.Module,
        images: torch.Tensor,
        percentile: float = 99.99,
        init_membrane: float = 0.0,
        batch_size: int = 100,
        mean=None,
        std=None,
    ) -> "RateSNN":
        """Convert ``model``, balancing each threshold to the ``percentile`` of its ReLU's non-zero outputs."""
        snn = cls(model, None, init_membrane, mean, std)
        scales = activation_scales(snn.gm, images, percentile=percentile, batch_size=batch_size, mean=snn.mean, std=snn.std)
        return cls(model, scales, init_membrane, snn.mean, snn.std)

    @torch.no_grad()
    def float_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of the (BN-folded) float network."""
        return self.gm(normalize(images, self.mean, self.std))

    @torch.no_grad()
    def run(self, images: torch.Tensor, checkpoints) -> tuple[dict[int, torch.Tensor], dict[int, dict]]:
        """Simulate one batch to ``max(checkpoints)`` steps.

        Returns ``(logits, activity)``: for every checkpoint ``T``, the mean output current over the
        first ``T`` steps (batch x classes), the batch totals ``spikes``, ``synaptic_ops`` and
        ``input_macs``, and ``seconds``, the simulation time of the first ``T`` steps (without the
        operation counting).
        """
        checkpoints = sorted(set(int(t) for t in checkpoints))
        if not checkpoints or checkpoints[0] < 1:
            raise ConfigError("time_steps", f"must be >= 1, got {checkpoints}")
        x = normalize(images, self.mean, self.std)
        state = {"input": x, "v": {}, "counts": {}, "pool_acc": {}, "pool_counts": {}}
        macs_per_step = self.input_macs(x)
        total = None
        logits, activity = {}, {}
        step = _Step(self, state)
        seconds = 0.0
        for t in range(1, checkpoints[-1] + 1):
            start = time.perf_counter()
            out = step.run(x)
            total = out if total is None else total + out
            seconds += time.perf_counter() - start
            if t in checkpoints:
                logits[t] = total / t
                counts = state["counts"]
                counter = _OpCounter(self, torch.zeros_like(x), counts, state["pool_counts"])
                counter.run(x)
                activity[t] = {
                    "spikes": float(sum(c.sum() for c in counts.values())),
                    "synaptic_ops": counter.ops,
                    "input_macs": macs_per_step * t,
                    "seconds": seconds,
                }
        return logits, activity

    def input_macs(self, x: torch.Tensor) -> float:
        """Multiply-accumulates per step of the layers fed by the analog input, for batch ``x``."""
        zeros = self._zero_events(x)
        counter = _OpCounter(self, torch.ones_like(x), zeros["neurons"], zeros["pools"])
        counter.run(x)
        return counter.ops

    def ann_ops(self, x: torch.Tensor) -> float:
        """Accumulates of the float network for batch ``x`` counted the same way (multiply-accumulates
        plus residual additions), for comparison with ``synaptic_ops``."""
        shapes = self._zero_events(x)
        ones = {k: torch.ones_like(v) for k, v in shapes["neurons"].items()}
        pools = {k: torch.ones_like(v) for k, v in shapes["pools"].items()}
        counter = _OpCounter(self, torch.ones_like(x), ones, pools)
        counter.run(x)
        return counter.ops

    @torch.no_grad()
    def _zero_events(self, x: torch.Tensor) -> dict:
        state = {"input": x, "v": {}, "counts": {}, "pool_acc": {}, "pool_counts": {}}
        _Step(self, state).run(x)
        return {"neurons": {k: torch.zeros_like(v) for k, v in state["counts"].items()},
                "pools": {k: torch.zeros_like(v) for k, v in state["pool_counts"].items()}}

    def evaluate(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        time_steps,
        batch_size: int = 100,
        progress: bool = True,
    ) -> list[RateCheckpoint]:
        """Accuracy, agreement with the float network and activity per image at every ``T`` in ``time_steps``."""
        steps = sorted(set(int(t) for t in time_steps))
        if len(images) == 0:
            raise ConfigError("images", "holds no images to evaluate")
        correct = {t: 0 for t in steps}
        agree = {t: 0 for t in steps}
        act = {t: {"spikes": 0.0, "synaptic_ops": 0.0, "input_macs": 0.0} for t in steps}
        bar = tqdm(total=len(images), desc=f"rate SNN, T<={steps[-1]}", unit="img", disable=not progress)
        for start in range(0, len(images), batch_size):
            xb, yb = images[start : start + batch_size], labels[start : start + batch_size]
            ann_pred = self.float_logits(xb).argmax(1)
            logits, activity = self.run(xb, steps)
            for t in steps:
                pred = logits[t].argmax(1)
                correct[t] += int((pred == yb).sum())
                agree[t] += int((pred == ann_pred).sum())
                for k in act[t]:
                    act[t][k] += activity[t][k]
            bar.update(len(xb))
        bar.close()
        n = len(images)
        return [
            RateCheckpoint(t, correct[t] / n, agree[t] / n, act[t]["spikes"] / n, act[t]["synaptic_ops"] / n,
                           act[t]["input_macs"] / n)
            for t in steps
        ]


def evaluate_rate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    time_steps,
    calib_images: torch.Tensor,
    percentile: float = 99.99,
    init_membrane: float = 0.0,
    batch_size: int = 100,
    progress: bool = True,
    mean=None,
    std=None,
) -> dict:
    """Convert ``model`` (thresholds from ``calib_images``) and evaluate it; a JSON-ready summary.

    ``mean`` / ``std`` normalize the pixels (default: the model's registry config)."""
    start = time.perf_counter()
    snn = RateSNN.from_calibration(model, calib_images, percentile, init_membrane, batch_size, mean, std)
    with torch.no_grad():
        fp_correct = sum(
            int((snn.float_logits(images[i : i + batch_size]).argmax(1) == labels[i : i + batch_size]).sum())
            for i in range(0, len(images), batch_size)
        )
        ann_ops = snn.ann_ops(normalize(images[:1], snn.mean, snn.std))
    rows = snn.evaluate(images, labels, time_steps, batch_size, progress)
    return {
        "images": len(images),
        "calibration_images": len(calib_images),
        "percentile": percentile,
        "init_membrane": init_membrane,
        "fp_accuracy": fp_correct / len(images),
        "ann_ops_per_image": ann_ops,
        "thresholds": snn.thresholds,
        "results": [asdict(r) for r in rows],
        "seconds": time.perf_counter() - start,
    }
