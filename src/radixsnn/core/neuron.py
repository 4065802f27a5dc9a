r"""The radix leaky integrate-and-fire neuron (paper Algorithm 1, Equations 3-5, 13).

State is one integer per neuron, the membrane potential ``v``; it starts at the bias, ``v(-1) = b``
(Eq. 5). Each time step ``t`` has three stages:

* integration (Eq. 3):  ``u(t) = v(t-1) + sum_n i_n(t) w_n``  (``i_n(t) = 0`` once the input trains end)
* firing:               ``o(t) = 1`` iff the least significant bit of ``u(t)`` is 1 (``V_th = 0`` on the LSB)
* refractory + leakage (Eq. 4): ``v(t) = kappa (u(t) - V_r o(t))`` with ``V_r = 1``, ``kappa = 1/2``

``u - o`` is even, so ``v`` stays an integer: the neuron is exact LSB-first bit-serial arithmetic.
With ``X = b + sum_n w_n sum_t 2^t i_n(t)`` (the input trains read as radix numbers, Eq. 17),
after ``T' = T + dT`` steps

    sum_{t<T'} 2^t o(t) + 2^{T'} v(T'-1) = X,

i.e. the emitted bits are ``X mod 2^{T'}`` (two's complement when ``X < 0``) and the potential left over
is ``floor(X / 2^{T'})``: 0 when ``0 <= X < 2^{T'}`` (Lemma 1), -1 when ``X < 0``, positive when the sum
overflowed the window. The output train is the last ``T`` bits (Eq. 13, ``s_out(t) = o(t + dT)``),
worth ``floor(X / 2^dT)``. The paper stops there; a real neuron must also

* **rectify**: when ``v(T'-1) < 0`` (negative sum) it emits nothing (all-zero train; the ReLU), and
* **saturate**: when ``v(T'-1) > 0`` (``X >= 2^{T'}``) it emits all ones (``2^T - 1``),

so the train always carries ``clamp(floor(X / 2^dT), 0, 2^T - 1)``. The neuron decides at the end of its
drain window, which is when its last output bit leaves anyway.

Functions here are pure: state in, state out, no hidden module state.
"""
from __future__ import annotations

import torch

from radixsnn.errors import ConfigError


def radix_lif_step(v: torch.Tensor, current: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of Algorithm 1 on integer tensors: returns ``(v(t), o(t))``.

    ``u = v + current``; ``o = u & 1``; ``v' = (u - o) / 2``, which is the arithmetic shift ``u >> 1``
    (exact, also for ``u < 0``).
    """
    u = v + current
    return u >> 1, u & 1


def radix_lif(
    currents: torch.Tensor,
    bias: torch.Tensor | int,
    time_steps: int,
    delta_t: int | torch.Tensor,
    rectify: bool = True,
    state_dtype: torch.dtype = torch.int64,
    out_dtype: torch.dtype = torch.uint8,
    steps: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the neuron for ``T' = time_steps + delta_t`` steps.

    Args:
        currents: integer-valued tensor ``(T_in, ...)``, the synaptic input ``sum_n i_n(t) w_n`` of each
            step; every neuron's input must arrive within its own window (``T_in <= T + dT_i``, delayed
            spikes included: later currents must be zero).
        bias: integer initial potential ``b`` (broadcast against ``currents[0]``).
        time_steps: ``T``, the length of the output train.
        delta_t: ``dT``, the number of extra (drain) steps; the output is worth ``floor(X / 2^dT)``. A tensor
            (broadcast against ``currents[0]``) gives every neuron its own: neuron ``i`` runs ``T + dT_i``
            steps and its train is delayed by ``max dT - dT_i`` steps, so that all trains leave together
            (an axonal delay); the layer runs ``T + max dT`` steps.
        rectify: apply the end-of-window rectification and saturation (the paper's neuron: ``False``).
        state_dtype: integer type of the membrane; int32 is exact while ``|b| + 2 max|I| < 2^30``.
        out_dtype: dtype of the returned 0/1 trains (float32 feeds the next layer's convolution directly).
        steps: every neuron's own train length ``T_i <= T`` (broadcast against ``currents[0]``), or
            ``None`` for ``T`` everywhere: neuron ``i`` runs ``T_i + dT_i`` steps, emits ``T_i`` bits
            (its steps ``T_i .. T - 1`` stay silent) and saturates at ``2^T_i - 1``.

    Returns:
        ``(trains, v_end)``: 0/1 output trains ``(T, ...)`` aligned as in Eq. 13, and the potential
        ``v(T'-1)`` each neuron has at the end of its own window.
    """
    per_neuron = isinstance(delta_t, torch.Tensor) or steps is not None
    longest = int(torch.as_tensor(delta_t).max())
    window = time_steps + longest
    steps_in = currents.shape[0]
    _check_window(currents, time_steps, delta_t, steps)
    currents = currents.to(state_dtype)
    v = torch.as_tensor(bias, device=currents.device).to(state_dtype).expand_as(currents[0]).clone()
    if not per_neuron:
        trains = torch.empty((time_steps, *v.shape), dtype=out_dtype, device=v.device)
        for t in range(window):
            if t < steps_in:
                v += currents[t]  # integration (Eq. 3)
            if t >= longest:
                trains[t - longest] = v & 1  # firing on the least significant bit; Eq. 13 alignment
            v >>= 1  # refractory (subtract the spike) and leak (halve), exact: (u - o) / 2 == u >> 1
    else:
        dt = torch.as_tensor(delta_t, dtype=torch.int64, device=v.device).expand_as(v)
        own = torch.as_tensor(time_steps if steps is None else steps, dtype=torch.int64, device=v.device).expand_as(v)
        ends = dt + own  # each neuron's window
        window = int(ends.max())
        bits = torch.empty((window, *v.shape), dtype=out_dtype, device=v.device)
        v_end = v.clone()
        for t in range(window):
            if t < steps_in:
                v += currents[t]
            bits[t] = v & 1
            v >>= 1
            v_end = torch.where(ends == t + 1, v, v_end)  # each neuron's potential when its window ends
        # neuron i's train is its bits dT_i .. dT_i + T_i - 1: delayed by max dT - dT_i, all trains align
        k = torch.arange(time_steps, device=v.device).view(-1, *([1] * v.dim()))
        trains = bits.gather(0, (dt.unsqueeze(0) + k).clamp_max(window - 1))
        live = k < own.unsqueeze(0)  # a neuron's steps past its own T_i are silent
        trains.masked_fill_(~live, 0)
        v = v_end
    if rectify:
        trains.masked_fill_((v < 0).unsqueeze(0), 0)
        full = (v > 0).unsqueeze(0)
        trains.masked_fill_(full if steps is None else full & live, 1)
    return trains, v


def radix_readout(currents: torch.Tensor, bias: torch.Tensor | int) -> torch.Tensor:
    """The non-spiking output neuron: its potential ``b + sum_t 2^t I(t)`` is the integer logit.

    This is the membrane of Algorithm 1 without firing, read with the radix weights of the input
    steps (equivalently: the leaky neuron's potential after ``T_in`` steps, scaled by ``2^T_in``).
    """
    acc = torch.as_tensor(bias, dtype=torch.int64, device=currents.device).expand_as(currents[0]).clone()
    for t in range(currents.shape[0]):
        acc = acc + (currents[t].to(torch.int64) << t)
    return acc


def neuron_output_value(x: torch.Tensor, time_steps: int | torch.Tensor, delta_t: int | torch.Tensor) -> torch.Tensor:
    """What a rectifying radix neuron's train carries for integer sum ``x``: ``clamp(floor(x/2^dT), 0, 2^T-1)``
    (``time_steps`` a tensor: every neuron's own ``T_i``)."""
    one = torch.ones((), dtype=torch.int64)
    scale = one << torch.as_tensor(delta_t, dtype=torch.int64)
    top = (one << torch.as_tensor(time_steps, dtype=torch.int64)) - 1
    return torch.minimum(torch.div(x, scale, rounding_mode="floor").clamp_min(0), top)


def _check_window(currents: torch.Tensor, time_steps: int, delta_t: int | torch.Tensor,
                  steps: torch.Tensor | None = None) -> None:
    """Every neuron's input must arrive within its own window of ``T_i + dT_i`` steps (delayed spikes
    make a layer's currents longer than its shortest window; they must be zero past each neuron's)."""
    steps_in = currents.shape[0]
    dt = torch.as_tensor(delta_t, dtype=torch.int64, device=currents.device)
    own = torch.as_tensor(time_steps if steps is None else steps, dtype=torch.int64, device=currents.device)
    ends = own + dt
    shortest, longest = int(ends.min()), int(ends.max())
    if steps_in > longest:
        raise ConfigError("currents", f"has {steps_in} input steps, which do not fit a window of T + dT = "
                                      f"{longest} steps")
    if steps_in <= shortest:
        return
    ends = ends.expand_as(currents[0])
    late = torch.arange(shortest, steps_in, device=currents.device).view(-1, *([1] * ends.dim())) >= ends
    if bool((currents[shortest:] * late).any()):
        raise ConfigError("currents", f"has input after the end of a neuron's window of T + dT steps "
                                      f"({steps_in} input steps, shortest window {shortest})")


def radix_lif_fused(
    currents: torch.Tensor,
    bias: torch.Tensor,
    time_steps: int,
    delta_t: int | torch.Tensor,
    steps: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """:func:`radix_lif` (rectifying) as one compiled CPU loop per neuron, plus spikes per neuron.

    The same recurrence, step by step, with the state held in a register instead of a tensor pass per
    step. Returns ``(trains float32 (T, N, ...), spikes per neuron summed over steps and images)``,
    or ``None`` when numba is not installed or the tensors are not on the CPU (callers then use
    :func:`radix_lif`).
    """
    kernel = _fused_kernel()
    if kernel is None or currents.device.type != "cpu":
        return None
    steps_in, n = currents.shape[0], currents.shape[1]
    per_image = currents[0, 0].numel()
    cur = currents.reshape(steps_in, n, per_image).to(torch.float32).contiguous()
    b = torch.as_tensor(bias).to(torch.int64).expand(currents.shape[2:]).reshape(per_image).contiguous()
    dt = torch.as_tensor(delta_t, dtype=torch.int64).expand(currents.shape[2:]).reshape(per_image).contiguous()
    own = torch.as_tensor(time_steps if steps is None else steps, dtype=torch.int64)
    own = own.expand(currents.shape[2:]).reshape(per_image).contiguous()
    _check_window(currents, time_steps, delta_t, steps)
    # every step of a full-length train is written; shorter trains leave their silent steps at zero
    out = (torch.empty if steps is None else torch.zeros)((time_steps, n, per_image), dtype=torch.float32)
    counts = torch.zeros((n, per_image), dtype=torch.int64)
    kernel(cur.numpy(), b.numpy(), dt.numpy(), own.numpy(), out.numpy(), counts.numpy(), time_steps, int((dt + own).max()))
    return out.view(time_steps, *currents.shape[1:]), counts.sum(0).view(currents.shape[2:])


_KERNEL = []


def _fused_kernel():
    if not _KERNEL:
        try:
            import numba
            import numpy as np
        except ImportError:
            _KERNEL.append(None)
            return None

        @numba.njit(parallel=True, cache=True, nogil=True)
        def kernel(cur, bias, delta_t, own, out, counts, time_steps, window):  # pragma: no cover - compiled
            steps_in, n, per_image = cur.shape
            for i in numba.prange(n):  # images in parallel; neurons of an image in SIMD lanes
                v = bias.copy()
                for t in range(window):
                    if t < steps_in:
                        for j in range(per_image):
                            v[j] += np.int64(cur[t, i, j])  # integration
                    for j in range(per_image):
                        k = t - delta_t[j]  # neuron j's own window; its train delayed to align
                        if 0 <= k < own[j]:
                            out[k, i, j] = v[j] & 1  # fire on the least significant bit
                        if k < own[j]:
                            v[j] >>= 1  # subtract the spike and leak by 1/2 (until its window ends)
                for j in range(per_image):
                    if v[j] != 0:  # rectify (v < 0) or saturate (v > 0) at the end of the window
                        fill = 1.0 if v[j] > 0 else 0.0
                        for t in range(own[j]):
                            out[t, i, j] = fill
                for t in range(time_steps):
                    for j in range(per_image):
                        counts[i, j] += np.int64(out[t, i, j])

        _KERNEL.append(kernel)
    return _KERNEL[0]
