"""Each convolution of a model alone, forward and backward: float32, bf16 (oneDNN) and bf16 as matrix products.

For every ``nn.Conv2d`` of ``--model`` (its input shape taken from one forward pass of a CIFAR-sized
batch), a copy of the layer runs on a random channels_last batch of ``--batch-size`` images:
its forward pass (under CPU autocast for bf16), then ``y.backward(g)`` with a fixed random ``g``,
timed separately, mean of ``--repeats`` after ``--warmup`` untimed runs, in three ways:

* ``float32``: oneDNN's float32 convolution;
* ``bf16``: oneDNN's bf16 convolution (what autocast gives);
* ``unfolded``: the layer written as bf16 matrix products of the unfolded input (im2col): one forward,
  two backward (input and weight gradients). The candidate replacement for oneDNN's bf16 kernels on
  small maps, where their weight gradient reduces over few positions; docs/benchmarks.md says why the
  trainer does not use it.

Printed per layer: milliseconds and float32 / bf16 ratios of each pass; the last line sums all layers.

    python benchmarks/conv_layers.py [--model vgg16] [--batch-size 128] [--repeats 5] [--warmup 2]
                                     [--threads N] [--json FILE]
"""
from __future__ import annotations

import argparse
import copy
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.utils import _pair

import radixsnn as rs

WAYS = ("float32", "bf16", "unfolded")


class _UnfoldedConv2d(torch.autograd.Function):
    """``conv2d`` (groups 1) as ``cols @ W^T`` over the unfolded input; backward: ``g^T cols`` and ``g W``."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation):
        batch, _, height, width = x.shape
        out_channels, _, kh, kw = weight.shape
        cols = F.unfold(x, (kh, kw), dilation=dilation, padding=padding, stride=stride)  # B, K, L
        oh = (height + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
        ow = (width + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
        rows = cols.transpose(1, 2).reshape(batch * oh * ow, -1)  # (B L) x K
        w2 = weight.reshape(out_channels, -1)
        y = rows @ w2.t()
        if bias is not None:
            y = y + bias
        ctx.save_for_backward(rows, w2)
        ctx.geometry = (x.shape, weight.shape, bias is not None, stride, padding, dilation, oh, ow)
        return y.view(batch, oh, ow, out_channels).permute(0, 3, 1, 2)  # channels_last, like the layer's input

    @staticmethod
    def backward(ctx, grad):
        rows, w2 = ctx.saved_tensors
        x_shape, w_shape, has_bias, stride, padding, dilation, oh, ow = ctx.geometry
        batch, _, height, width = x_shape
        g = grad.permute(0, 2, 3, 1).reshape(batch * oh * ow, w_shape[0]).to(rows.dtype)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_cols = (g @ w2).view(batch, oh * ow, -1).transpose(1, 2)
            grad_x = F.fold(grad_cols, (height, width), w_shape[2:], dilation=dilation, padding=padding, stride=stride)
        if ctx.needs_input_grad[1]:
            grad_w = (g.t() @ rows).view(w_shape)
        if has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(0)
        return grad_x, grad_w, grad_b, None, None, None


def unfolded_conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, stride, padding, dilation)`` (groups 1, numeric padding) computed as matrix
    products of the unfolded input, forward and backward; all tensors in one dtype."""
    return _UnfoldedConv2d.apply(x, weight, bias, _pair(stride), _pair(padding), _pair(dilation))


def conv_inputs(model: nn.Module, shape=(1, 3, 32, 32)) -> list[tuple[str, nn.Conv2d, torch.Size]]:
    """``(name, layer, input shape)`` of every convolution, in call order."""
    seen = []
    hooks = [m.register_forward_pre_hook(lambda m, a, name=name: seen.append((name, m, a[0].shape)))
             for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model.eval()(torch.zeros(shape))
    for h in hooks:
        h.remove()
    return seen


def time_layer(layer: nn.Conv2d, x: torch.Tensor, way: str, repeats: int, warmup: int) -> tuple[float, float]:
    """Mean forward and backward seconds of ``layer`` on ``x`` computed the ``way`` given."""
    layer = copy.deepcopy(layer).to(memory_format=torch.channels_last)
    amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=way != "float32")
    g = None
    forward = backward = 0.0
    for i in range(warmup + repeats):
        layer.zero_grad(set_to_none=True)
        xi = x.detach().requires_grad_()
        t0 = time.perf_counter()
        with amp:
            if way == "unfolded":
                bias = None if layer.bias is None else layer.bias.bfloat16()
                y = unfolded_conv2d(xi.bfloat16(), layer.weight.bfloat16(), bias, layer.stride, layer.padding, layer.dilation)
            else:
                y = layer(xi)
        t1 = time.perf_counter()
        if g is None:  # the same output gradient every time, made outside the timed passes
            g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(y.dtype)
            g = g.contiguous(memory_format=torch.channels_last)
        t2 = time.perf_counter()
        y.backward(g)
        t3 = time.perf_counter()
        if i >= warmup:
            forward += t1 - t0
            backward += t3 - t2
    return forward / repeats, backward / repeats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vgg16")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="also write the rows as JSON")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    layers = conv_inputs(rs.create_model(args.model))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.model}, batch {args.batch_size}, "
          f"mean of {args.repeats}")
    print(f"{'layer':<16} {'in->out, map':<16} {'fwd ms f32/bf16/unf':>22} {'bwd ms f32/bf16/unf':>22} "
          f"{'fwd x bf16/unf':>15} {'bwd x bf16/unf':>15}")
    rows, total = [], {w: [0.0, 0.0] for w in WAYS}
    for name, layer, shape in layers:
        x = torch.randn(args.batch_size, *shape[1:]).contiguous(memory_format=torch.channels_last)
        t = {way: time_layer(layer, x, way, args.repeats, args.warmup) for way in WAYS}
        for way in WAYS:
            total[way][0] += t[way][0]
            total[way][1] += t[way][1]
        row = {"layer": name, "in": layer.in_channels, "out": layer.out_channels, "map": list(shape[2:]),
               **{f"{way}_{p}_ms": 1e3 * t[way][i] for way in WAYS for i, p in enumerate(("forward", "backward"))}}
        rows.append(row)
        print_row(name, f"{layer.in_channels}->{layer.out_channels}, {shape[2]}x{shape[3]}", t)
    print_row("all", "", total)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(), "model": args.model,
                       "batch_size": args.batch_size, "rows": rows}, f, indent=1)


def print_row(name: str, what: str, t: dict) -> None:
    ms = lambda i: "/".join(f"{1e3 * t[w][i]:.1f}" for w in WAYS)  # noqa: E731
    ratio = lambda i: f"{t['float32'][i] / t['bf16'][i]:.2f}/{t['float32'][i] / t['unfolded'][i]:.2f}"  # noqa: E731
    print(f"{name:<16} {what:<16} {ms(0):>22} {ms(1):>22} {ratio(0):>15} {ratio(1):>15}", flush=True)


if __name__ == "__main__":
    main()
