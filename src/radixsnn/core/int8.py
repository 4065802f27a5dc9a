"""The integer engine's int8 kernels: convolutions and linear maps as int8 x int8 -> int32 matrix products.

A layer whose inputs are trains of at most 8 steps (values 0..255) and whose weights fit in int8 computes
its sums in int32 exactly: ``torch._int_mm`` multiplies int8 matrices with int32 accumulation. Inputs
above 127 are shifted by -128 into int8, and ``128 sum w`` per output channel adds the shift back.
A convolution becomes one product of its (N H W, kh kw C) patch matrix, gathered from a channels-last
copy of the uint8 activations, with its (kh kw C, C_out) weight matrix.

Not every CPU kernel accumulates exactly: without VNNI, some int8 kernels add pairs of products in
saturating int16 or halve the weights. :func:`int8_matmul_exact` checks, once per process, that the
kernel of this machine returns the exact products of extreme and random matrices; where it does not, the
integer engine keeps to its float kernels (:func:`radixsnn.core.engines.run_integer`), as it does where
they are exact but slower than float (:func:`int8_matmul_fast`).
"""
from __future__ import annotations

import functools
import time

import torch
import torch.nn.functional as F

from radixsnn.core.graph import Term, gather, selected

#: int32 holds every sum whose bound stays below this.
INT32_EXACT = 1 << 31


@functools.cache
def int8_matmul_exact() -> bool:
    """Whether ``torch._int_mm`` on this CPU returns exact int32 products (checked once per process on
    matrices of extreme values, where saturating or rescaling kernels go wrong, and of random ones, in
    shapes that take a matrix-vector, a small and a large kernel)."""
    if not hasattr(torch, "_int_mm"):
        return False
    gen = torch.Generator().manual_seed(0)
    for m, k, n in ((1, 1155, 40), (67, 1155, 40), (300, 577, 129)):
        a = torch.randint(-128, 128, (m, k), generator=gen, dtype=torch.int8)
        b = torch.randint(-128, 128, (k, n), generator=gen, dtype=torch.int8)
        a[0::3], a[1::3] = 127, -128  # every third row at each extreme, the rest random
        b[:, :8], b[:, 8:16], b[:, 16:24] = 127, -128, -127
        try:
            got = torch._int_mm(a, b)
        except RuntimeError:
            return False
        if got.dtype != torch.int32 or not torch.equal(got.to(torch.int64), a.to(torch.int64) @ b.to(torch.int64)):
            return False
    return True


@functools.cache
def int8_matmul_fast() -> bool:
    """Whether ``torch._int_mm`` on this CPU beats the float32 product on a layer-sized matrix (a 3x3
    convolution of 64 channels over 2048 pixels; best of 3 each, once per process). Both are exact, so
    this choice changes the speed only: CPUs without VNNI (AVX2) run ``_int_mm`` about 10x slower than float."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(-128, 128, (2048, 576), generator=gen, dtype=torch.int8)
    b = torch.randint(-128, 128, (576, 64), generator=gen, dtype=torch.int8)
    af, bf = a.float(), b.float()

    def best(fn):
        fn()
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    return best(lambda: torch._int_mm(a, b)) <= best(lambda: af @ bf)


def int8_kernels() -> bool:
    """Whether the integer engine takes the int8 kernels: exact (:func:`int8_matmul_exact`) and faster
    than float on this CPU (:func:`int8_matmul_fast`)."""
    return int8_matmul_exact() and int8_matmul_fast()


def _dense(m: torch.Tensor) -> torch.Tensor:
    """``m`` with row-major strides exactly: ``torch._int_mm`` reads its operands' strides as leading
    dimensions, and ``contiguous()`` keeps any stride on a dimension of size 1."""
    if m.stride() == (m.shape[1], 1):
        return m
    return torch.empty(m.shape, dtype=m.dtype, device=m.device).copy_(m)


def takes_int8(term: Term, weight: torch.Tensor, source_steps: int) -> bool:
    """Whether ``term`` runs as an int8 product: a convolution without groups or a flattening linear
    map, on a source of at most 8-step trains, with weights in int8's range."""
    if term.op == "conv2d":
        if term.attrs["groups"] != 1:
            return False
    elif term.op != "linear" or term.attrs["mode"] == "sumpool":
        return False
    return source_steps <= 8 and bool(weight.numel()) and -128 <= int(weight.min()) and int(weight.max()) <= 127


def weight_matrix(term: Term, weight: torch.Tensor) -> torch.Tensor:
    """The int8 ``(K, C_out)`` matrix of a term's integer weights, K in the patch order (kh, kw, C)."""
    w = weight.permute(0, 2, 3, 1) if term.op == "conv2d" else weight
    return _dense(w.reshape(w.shape[0], -1).t().to(torch.int8))


def rows(x: torch.Tensor) -> torch.Tensor:
    """Activations ``(N, C, H, W)`` as the matrix ``(N H W, C)`` of their channels-last order (a view
    when ``x`` is a channels-last view, as :func:`unrows` returns); ``(N, C)`` as they are."""
    return x if x.dim() == 2 else x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def unrows(m: torch.Tensor, shape: list[int]) -> torch.Tensor:
    """The inverse of :func:`rows` for a layer of ``shape`` ``(C, H, W)`` or ``(C,)``: a view."""
    return m if len(shape) == 1 else m.view(-1, shape[1], shape[2], shape[0]).permute(0, 3, 1, 2)


def synapse_int8(term: Term, x: torch.Tensor, w: torch.Tensor, shifted: bool) -> torch.Tensor:
    """The int32 sums of a term (:func:`takes_int8`) as a ``(N H_out W_out, C_out)`` matrix
    (:func:`rows`), on integer activations ``x`` (any dtype; 0..127, or 0..255 when ``shifted``),
    with its weight matrix ``w`` (:func:`weight_matrix`)."""
    x = gather(term, x)
    if x.dtype != torch.uint8:
        x = x.to(torch.uint8)
    if term.op == "linear":
        m = x.flatten(1)
    else:
        a = term.attrs
        (ph, pw), (sh, sw), (dh, dw) = a["padding"], a["stride"], a["dilation"]
        kh, kw = term.weight_shape[2:]
        m = x.permute(0, 2, 3, 1)  # (N, H, W, C): contiguous when x is a channels-last view
        if ph or pw:
            m = F.pad(m, (0, 0, pw, pw, ph, ph))
    # q - 128 in int8 (the padding's zeros become -128 too), or q itself
    m = (m.bitwise_xor(128) if shifted else m).contiguous().view(torch.int8)
    if term.op == "conv2d":
        n, h, wd, c = m.shape
        ho, wo = (h - dh * (kh - 1) - 1) // sh + 1, (wd - dw * (kw - 1) - 1) // sw + 1
        s = m.stride()
        m = m.as_strided((n, ho, wo, kh, kw, c), (s[0], s[1] * sh, s[2] * sw, s[1] * dh, s[2] * dw, s[3]))
        m = m.reshape(n * ho * wo, kh * kw * c)
    out = torch._int_mm(_dense(m), w)
    if shifted:  # sum (q - 128) w, plus 128 sum w
        out.add_(w.sum(0, dtype=torch.int32).mul_(128))
    return out


def gains_int32(term: Term, x: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """A ``select`` term (:func:`radixsnn.core.graph.selected` times integer per-channel gains) as an
    int32 :func:`rows` matrix, so the product runs along memory."""
    return rows(selected(term, x)).to(torch.int32).mul_(gains.to(torch.int32))
