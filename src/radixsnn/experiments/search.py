"""Per-layer time steps for the fewest operations within an accuracy budget (``radixsnn search``).

The method (docs/design.md), as written greedy by sensitivity (``method="greedy"``); the default,
``method="level"`` with ``granularity="channel"``, skips step 3 and bisects over levels in step 4:

1. Split the *training* images: a held-out part to measure accuracy on, the rest to calibrate on (the
   test set is never used).
2. Calibrate the QANN once at every candidate T. A layer's activation scale depends only on its own T
   (calibration reads the float network's activations), so any assignment of T's to layers takes each
   layer's scale from the calibration at its T, with no further calibration.
3. Sensitivity: lower one layer at a time from the base T to every smaller candidate and measure how far
   its output distribution moves from the base's (mean KL divergence of the softmaxes, which unlike the
   accuracy of memorized training images does not sit at zero), the held-out accuracy lost and the
   operations saved (``ops_graph``, Eq. 24 over the SNN's synapses).
4. Greedy: repeatedly take the untried move (one layer one candidate down) with the most operations
   saved per unit of single-layer divergence that the step adds; apply it, measure the whole assignment on the
   held-out images, keep it if the loss against the uniform base stays within the budget, else undo it
   and stop lowering that layer. Or (``method="path"``) order every move by the same ranking without
   measuring, and bisect for the longest prefix of that path whose loss fits. Or (``method="level"``)
   lower every layer together, one level at a time (with ``granularity="channel"`` in steps of
   :data:`SHARED_LEVEL_STEP`, each layer's channels sharing its steps), and bisect likewise: no
   sensitivities, a handful of measurements, so little to select a lucky one from.
5. Verification: the kept assignments form a path of nested assignments, chosen by measurements on the
   held-out images, so their measured losses are biased low (the search kept the lucky ones). Other
   training images, which no choice has seen, measure the path again, and a bisection takes the longest
   prefix whose loss fits the budget at the chosen confidence (:func:`loss_bound`). Without
   verification images, step 4 compares the held-out bound at that confidence with the budget instead.

All accuracies are exact: the QANN's integer logits, which equal the SNN's.
"""
from __future__ import annotations

import math
import time
from statistics import NormalDist

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from radixsnn.core.convert import quantize
from radixsnn.core.evaluation import evaluate
from radixsnn.core.steps import per_channel
from radixsnn.core.ops import graph_ops
from radixsnn.core.qann import DEFAULT_ACT_SCALE, QANN, resolve_act_scale
from radixsnn.core.quant import ActQuant, WeightQuant
from radixsnn.errors import ConfigError
from radixsnn.experiments.channels import allocate, channel_errors, readout_energy

#: The defaults of ``radixsnn search``, declared once.
SEARCH_DEFAULTS = {
    "base": 6,
    "candidates": [2, 3, 4, 5],
    "budget": 0.5,
    "confidence": 0.95,
    "holdout": 5000,
    "sensitivity_images": 2000,
    "calib_images": 1024,
    "weight_bits": 8,
    "seed": 0,
    "sops_images": 200,
    "method": "level",
    "verify_images": 5000,
    "granularity": "channel",
}

#: How the search walks from uniform ``base`` to lower T's (docs/design.md).
METHODS = ("greedy", "path", "level")
#: What the search assigns: one T per layer, or an average T per layer that its channels share
#: (:mod:`radixsnn.experiments.channels`), lowered in steps of :data:`CHANNEL_LEVEL_STEP`.
GRANULARITIES = ("layer", "channel")
CHANNEL_LEVEL_STEP = 0.5
#: The finer levels of ``method="level"``, which bisects over them instead of trying each move.
SHARED_LEVEL_STEP = 0.125


def check_search_options(base: int, candidates, budget: float, weight_bits: int, sensitivity_images: int = 1,
                         confidence: float = SEARCH_DEFAULTS["confidence"], method: str = SEARCH_DEFAULTS["method"],
                         granularity: str = SEARCH_DEFAULTS["granularity"], act_scale: str = DEFAULT_ACT_SCALE) -> list[int]:
    """Check the options of :func:`search_time_steps` before any work; returns the candidates below
    ``base``, sorted.

    >>> check_search_options(6, [5, 2, 4, 9], 0.5, 8)
    [2, 4, 5]
    """
    for name, values, spec in (("base", [base], ActQuant), ("candidates", candidates, ActQuant), ("weight_bits", [weight_bits], WeightQuant)):
        for v in values:
            try:
                spec(v)
            except ConfigError as exc:  # named after this function's argument
                raise ConfigError(name, exc.problem) from None
    below = sorted({int(c) for c in candidates if c < base})
    if not below:
        raise ConfigError("candidates", f"need at least one T below the base {base}, got {list(candidates)}")
    if not (isinstance(budget, (int, float)) and math.isfinite(budget) and budget >= 0):
        raise ConfigError("budget", f"must be a non-negative number of points, got {budget}")
    if not sensitivity_images >= 1:
        raise ConfigError("sensitivity_images", f"must be at least 1, got {sensitivity_images}")
    if not (isinstance(confidence, (int, float)) and 0.5 <= confidence < 1):
        raise ConfigError("confidence", f"must be in [0.5, 1) (0.5: the measured loss itself), got {confidence}")
    if method not in METHODS:
        raise ConfigError("method", f"must be one of {', '.join(METHODS)}, got {method!r}")
    if granularity not in GRANULARITIES:
        raise ConfigError("granularity", f"must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")
    if granularity == "channel" and act_scale == "layer":
        raise ConfigError("act_scale", "must be 'channel' or 'auto' with granularity 'channel' (each channel's levels span its own range)")
    return below


def channel_levels(base: int, candidates: list[int], step: float = CHANNEL_LEVEL_STEP) -> list[float]:
    """The average T's a layer may take with ``granularity="channel"``: every ``step`` from the lowest
    candidate up to below ``base``.

    >>> channel_levels(6, [4, 5]), channel_levels(5, [4], 0.25)
    ([4.0, 4.5, 5.0, 5.5], [4.0, 4.25, 4.5, 4.75])
    """
    count = round((base - min(candidates)) / step)
    return [min(candidates) + k * step for k in range(count)]


def loss_bound(base_correct: torch.Tensor, correct: torch.Tensor, confidence: float) -> tuple[float, float]:
    """``(loss, bound)`` in points: the accuracy lost against the base on the same images, and its
    one-sided upper confidence bound at ``confidence`` (normal approximation of the paired difference:
    ``loss + z * sd(d) / sqrt(n)`` over the per-image differences ``d`` in {-1, 0, 1}).

    Only images on which the two disagree contribute to the spread, so a bound is tight when few
    predictions change. At ``confidence=0.5`` the bound is the loss itself.

    >>> base = torch.tensor([True] * 100)
    >>> loss_bound(base, torch.tensor([True] * 99 + [False]), 0.5)
    (1.0, 1.0)
    >>> round(loss_bound(base, torch.tensor([True] * 99 + [False]), 0.95)[1], 3)
    2.637
    """
    d = base_correct.to(torch.float64) - correct.to(torch.float64)
    n = len(d)
    loss = float(d.mean())
    spread = math.sqrt(max(float((d * d).mean()) - loss * loss, 0.0) / n)
    z = NormalDist().inv_cdf(confidence)
    return 100.0 * loss, 100.0 * (loss + z * spread)


def split_training_set(n: int, holdout: int, calib_images: int, seed: int,
                       verify_images: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(held-out, calibration, verification indices)``: disjoint draws from ``n`` training images.

    >>> [len(part) for part in split_training_set(100, 50, 10, 0, 20)]
    [50, 10, 20]
    """
    if not 1 <= holdout < n:
        raise ConfigError("holdout", f"must be in 1..{n - 1} (the training set has {n} images), got {holdout}")
    if not 1 <= calib_images <= n - holdout:
        raise ConfigError("calib_images", f"must be in 1..{n - holdout} (the training set has {n} images, {holdout} held out), "
                                          f"got {calib_images}")
    if verify_images < 0 or holdout + calib_images + verify_images > n:
        raise ConfigError("verify_images", f"must be in 0..{n - holdout - calib_images} (the training set has "
                                           f"{n} images, {holdout} held out, {calib_images} to calibrate), got {verify_images}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    rest = holdout + calib_images
    return perm[:holdout], perm[holdout:rest], perm[rest:rest + verify_images]


def longest_fitting_prefix(length: int, fits) -> int:
    """The largest ``k`` in ``0..length`` with ``fits(k)`` (``k = 0`` is taken to fit), by bisection, assuming
    ``fits`` holds up to some ``k`` and fails after it. Tries ``k = length`` first, then about log2(length)
    others.

    >>> tried = []
    >>> longest_fitting_prefix(10, lambda k: tried.append(k) or k <= 6), tried
    (6, [10, 5, 7, 6])
    """
    lo, hi = 0, length  # fits(lo) holds; no k above hi is taken to fit
    first = True
    while lo < hi:
        k = hi if first else (lo + hi + 1) // 2
        first = False
        if fits(k):
            lo = k
        else:
            hi = k - 1
    return lo


@torch.no_grad()
def exact_logits(qann: QANN, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """The exact logits in real units (float64, N x classes): the integer logits, which the SNN computes,
    times the logit scale (positive, so the classes rank as the integer logits do)."""
    delta = qann.layer_integers(qann.graph.output)[3].detach()
    return torch.cat([qann.forward(xb, exact=True) for xb in images.split(batch_size)]) * delta


def divergence(base_logits: torch.Tensor, logits: torch.Tensor) -> float:
    """Mean KL divergence ``KL(base || trial)`` of the softmaxes, in nats per image.

    >>> a = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    >>> divergence(a, a), abs(divergence(a, a + 5)) < 1e-12, round(divergence(a, a.flip(1)), 4)
    (0.0, True, 0.9927)
    """
    lp, lq = torch.log_softmax(base_logits, 1), torch.log_softmax(logits, 1)
    return float((lp.exp() * (lp - lq)).sum(1).mean())


def correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per image: whether ``logits`` classify it correctly (bool, N)."""
    return logits.argmax(1) == labels.to(torch.int64)


def accuracy(hits: torch.Tensor) -> float:
    """Top-1 accuracy (%) of per-image ``hits`` from :func:`correct`."""
    return 100.0 * float(hits.to(torch.float64).mean())


def search_time_steps(
    model: nn.Module,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    *,
    base: int = SEARCH_DEFAULTS["base"],
    candidates=SEARCH_DEFAULTS["candidates"],
    budget: float = SEARCH_DEFAULTS["budget"],
    confidence: float = SEARCH_DEFAULTS["confidence"],
    holdout: int = SEARCH_DEFAULTS["holdout"],
    sensitivity_images: int = SEARCH_DEFAULTS["sensitivity_images"],
    calib_images: int = SEARCH_DEFAULTS["calib_images"],
    weight_bits: int = SEARCH_DEFAULTS["weight_bits"],
    seed: int = SEARCH_DEFAULTS["seed"],
    sops_images: int = SEARCH_DEFAULTS["sops_images"],
    method: str = SEARCH_DEFAULTS["method"],
    verify_images: int = SEARCH_DEFAULTS["verify_images"],
    granularity: str = SEARCH_DEFAULTS["granularity"],
    act_scale: str = DEFAULT_ACT_SCALE,
    quantize_options: dict | None = None,
    progress: bool = True,
) -> dict:
    """Per-layer T (each the base or a smaller candidate) that minimize ``ops_graph`` while the accuracy on
    training images the search did not choose with stays within ``budget`` points of uniform ``base``, at
    ``confidence`` (:func:`loss_bound`; 0.5 compares the measured loss itself with the budget).

    With ``verify_images`` (the default), the search keeps moves whose measured held-out loss fits the
    budget, and ``verify_images`` other training images then take the longest prefix of the kept
    assignments whose bound fits (step 5 of the module's method). With ``verify_images=0`` the held-out
    bound decides each move.

    Returns a JSON-ready dict: ``assignment`` (``{"default": base, layer: T, ...}``, what ``--time-steps``
    accepts; with ``granularity="channel"`` a layer's T is a list, one per output channel, and ``levels``
    holds each lowered layer's average), its held-out accuracy, loss and loss bound (:func:`loss_bound`, at ``holdout_confidence``) and
    ``ops_graph``, ``uniform``
    (the same for every uniform T), ``sensitivity``, ``steps`` (every assignment measured, in order; with
    ``method="path"`` each with its ``path_index``, the number of moves from the base), ``verification``
    (the same on the verification images for the chosen assignment, the uniform ones and each bisection
    step, ``path_index`` counting kept assignments; ``None`` without verification images) and the measured
    synaptic operations per image of the chosen and the uniform-base SNN on ``sops_images`` held-out images
    (spike engine).
    """
    candidates = check_search_options(base, candidates, budget, weight_bits, sensitivity_images, confidence, method,
                                      granularity, act_scale)
    by_channel = granularity == "channel"
    held, calib, check = split_training_set(len(train_images), holdout, calib_images, seed, verify_images)
    hx, hy = train_images[held], train_labels[held]
    vx, vy = train_images[check], train_labels[check]
    verifying = len(check) > 0
    keep_confidence = 0.5 if verifying else confidence  # with verification, the held-out loss itself picks the path
    sx, sy = hx[:sensitivity_images], hy[:sensitivity_images]
    options = dict(quantize_options or {})
    # one scale layout for every T (per channel where channels get their own T)
    options["act_scale"] = "channel" if by_channel else resolve_act_scale(act_scale, base, weight_bits)
    start = time.perf_counter()

    scales: dict[int, dict[str, torch.Tensor]] = {}
    if by_channel:  # every channel's calibrated scale at every T from 1 to base, from one pass
        reference = quantize(model, base, weight_bits=weight_bits, **options)
        clips, errors = channel_errors(reference.activation_samples(train_images[calib], progress=False), base)
        energy = readout_energy(reference)
        for t in range(1, base + 1):
            scales[t] = {k: (c[:, t].float() / ActQuant(t).qmax) for k, c in clips.items()}
        reference.load_state_dict({**reference.state_dict(), **{f"scales.{k}": v for k, v in scales[base].items()}})
        levels = channel_levels(base, candidates, SHARED_LEVEL_STEP if method == "level" else CHANNEL_LEVEL_STEP)
    else:
        reference = None
        for t in tqdm([base, *candidates], desc="calibrate", disable=not progress, leave=False):
            q = quantize(model, t, weight_bits=weight_bits, **options)
            q.calibrate(train_images[calib], progress=False)
            scales[t] = {k: v.detach().clone() for k, v in q.scales.items()}
            if reference is None:
                reference = q
        levels = candidates
    neurons = [n.name for n in reference.graph.nodes if n.kind == "neuron"]
    allocations: dict[tuple[str, float], list[int]] = {}

    def expand(layers: dict) -> dict:
        """The time-steps assignment of ``layers``: a T per layer, or each layer's average T spread over
        its channels (:func:`~radixsnn.experiments.channels.allocate`)."""
        if not by_channel:
            return dict(layers)
        for name, level in layers.items():
            if (name, level) not in allocations:
                allocations[(name, level)] = allocate(errors[name], energy[name], level, base)
        return {name: allocations[(name, level)] for name, level in layers.items()}

    def build_steps(steps: dict) -> QANN:
        q = QANN(reference.graph, {"default": base, **steps}, weight_bits, reference.input_bits,
                 options["act_scale"], reference.shift, reference.weight_grid, reference.gains)
        state = reference.state_dict()
        for name in neurons:
            t = steps.get(name, base)
            if isinstance(t, list):  # each channel's scale from the calibration at its own T
                state[f"scales.{name}"] = torch.stack([scales[v][name][c] for c, v in enumerate(t)])
            else:
                state[f"scales.{name}"] = scales[t][name]
        q.load_state_dict(state)
        return q.eval()

    def build(layers: dict) -> QANN:
        return build_steps(expand(layers))

    def ops_steps(steps: dict) -> int:
        layer_steps, lists = per_channel(reference.graph, steps)
        return graph_ops(reference.graph, base, reference.input_bits, layer_steps, lists)

    def ops(layers: dict) -> int:
        return ops_steps(expand(layers))

    def score(q: QANN, x: torch.Tensor, y: torch.Tensor, reference: torch.Tensor, level: float) -> tuple[float, float, float]:
        """``(accuracy, loss, bound)`` of ``q`` on ``x`` against the uniform base's hits there (``reference``)."""
        hits = correct(exact_logits(q, x), y)
        return (accuracy(hits), *loss_bound(reference, hits, level))

    def verify(q: QANN) -> dict:
        acc, loss, bound = score(q, vx, vy, verify_base, confidence)
        return {"accuracy": acc, "loss": loss, "loss_bound": bound}

    uniform, verified_uniform = [], []
    for t in tqdm([base, *candidates], desc="uniform", disable=not progress, leave=False):
        layers = {name: t for name in neurons} if t != base else {}
        q = build_steps(layers)
        out = exact_logits(q, hx)
        hits = correct(out, hy)
        if t == base:
            base_hits, base_logits = hits, out[:len(sx)]
            if verifying:
                verify_base = correct(exact_logits(q, vx), vy)
                verified_uniform.append({"time_steps": t, "accuracy": accuracy(verify_base), "loss": 0.0, "loss_bound": 0.0})
        elif verifying:
            verified_uniform.append({"time_steps": t, **verify(q)})
        loss, bound = loss_bound(base_hits, hits, keep_confidence)
        uniform.append({"time_steps": t, "holdout_accuracy": accuracy(hits), "holdout_loss": loss, "loss_bound": bound,
                        "ops_graph": ops_steps(layers)})
    base_acc, base_ops = uniform[0]["holdout_accuracy"], uniform[0]["ops_graph"]
    base_sens = accuracy(base_hits[:len(sx)])

    sensitivity = []
    plan = [(name, c) for name in neurons for c in levels] if method != "level" else []  # "level" ranks nothing
    for name, c in tqdm(plan, desc="sensitivity", disable=not progress, leave=False):
        out = exact_logits(build({name: c}), sx)
        sensitivity.append({"layer": name, "time_steps": c, "divergence": divergence(base_logits, out),
                            "loss": base_sens - accuracy(correct(out, sy)), "saved": base_ops - ops({name: c})})
    by_move = {(s["layer"], s["time_steps"]): s for s in sensitivity}

    def best_move(layers: dict[str, int], frozen: set[str]) -> tuple[str, int] | None:
        """The untried move (a layer not in ``frozen``, one candidate down) with the most operations saved
        per unit of the single-layer divergence the step adds; ``None`` when no layer can go lower."""
        moves, now_ops = [], ops(layers)
        for name in neurons:
            if name in frozen:
                continue
            now = layers.get(name, base)
            lower = [c for c in levels if c < now]
            if not lower:
                continue
            c = max(lower)  # one candidate down
            saved = now_ops - ops({**layers, name: c})
            spent = by_move[(name, c)]["divergence"] - (by_move[(name, now)]["divergence"] if now != base else 0.0)
            moves.append((saved / max(spent, 1e-12), name, c))
        return max(moves)[1:] if moves else None

    def measure(trial: dict[str, int], name: str, c: int) -> dict:
        acc, loss, bound = score(build(trial), hx, hy, base_hits, keep_confidence)
        return {"layer": name, "time_steps": c, "holdout_accuracy": acc, "holdout_loss": loss,
                "loss_bound": bound, "ops_graph": ops(trial), "kept": bound <= budget}

    steps = []
    # (assignment, its held-out step) of every kept assignment, nested, the base first
    kept = [({}, {"holdout_accuracy": base_acc, "holdout_loss": 0.0, "loss_bound": 0.0})]
    bar = tqdm(desc=method, disable=not progress, leave=False)
    if method == "greedy":
        frozen: set[str] = set()
        layers: dict[str, int] = {}
        while (move := best_move(layers, frozen)) is not None:
            name, c = move
            trial = {**layers, name: c}
            step = measure(trial, name, c)
            steps.append(step)
            bar.update(1)
            bar.set_postfix(layer=name, T=c, bound=f"{step['loss_bound']:.2f}", kept=step["kept"])
            if step["kept"]:
                layers = trial
                kept.append((trial, step))
            else:
                frozen.add(name)
    else:  # a path of nested assignments, then bisection on its length
        path, walked = [], {}
        if method == "level":  # every layer at the same level, one level down per move
            path = [(("all", c), {name: c for name in neurons}) for c in sorted(levels, reverse=True)]
        while method == "path" and (move := best_move(walked, set())) is not None:  # moves by the divergences alone
            walked = {**walked, move[0]: move[1]}
            path.append((move, walked))

        def fits(k: int) -> bool:
            (name, c), trial = path[k - 1]
            step = {**measure(trial, name, c), "path_index": k}
            steps.append(step)
            bar.update(1)
            bar.set_postfix(k=k, bound=f"{step['loss_bound']:.2f}", kept=step["kept"])
            return step["kept"]

        lo = longest_fitting_prefix(len(path), fits)
        measured_at = {s["path_index"]: s for s in steps}  # prefixes the bisection skipped have no step
        kept += [(path[k - 1][1], measured_at.get(k)) for k in range(1, lo + 1)]
    bar.close()
    verification = None
    if verifying:  # the longest prefix of the kept assignments that fits on images no choice has seen
        trials = []
        bar = tqdm(desc="verify", disable=not progress, leave=False)

        def verified(k: int) -> bool:
            trial = kept[k][0]
            row = {"path_index": k, **verify(build(trial)), "ops_graph": ops(trial)}
            row["kept"] = row["loss_bound"] <= budget
            trials.append(row)
            bar.update(1)
            bar.set_postfix(k=k, bound=f"{row['loss_bound']:.2f}", kept=row["kept"])
            return row["kept"]

        index = longest_fitting_prefix(len(kept) - 1, verified)
        bar.close()
        layers, chosen = kept[index]
        if chosen is None:  # a path prefix the held-out bisection skipped: measure it there too
            chosen = measure(layers, *path[index - 1][0])
        row = next(r for r in trials if r["path_index"] == index) if index else verified_uniform[0]
        verification = {"images": len(vx), "accuracy": row["accuracy"], "loss": row["loss"], "loss_bound": row["loss_bound"],
                        "steps": trials, "uniform": verified_uniform}
    else:
        layers, chosen = kept[-1]
    # measured synaptic operations of the chosen and the uniform-base SNN, spike by spike
    measured = {}
    if sops_images:
        for key, assignment in (("chosen", layers), ("base", {})):
            res = evaluate(build(assignment).to_snn(), hx[:sops_images], hy[:sops_images], "spikes", progress=False)
            measured[key] = res["sops_per_image"]
    return {
        "assignment": {"default": base, **dict(sorted(expand(layers).items()))},
        "granularity": granularity,
        "levels": dict(sorted(layers.items())) if by_channel else None,
        "holdout_accuracy": chosen["holdout_accuracy"],
        "holdout_loss": chosen["holdout_loss"],
        "loss_bound": chosen["loss_bound"],
        "ops_graph": ops(layers),
        "ops_fraction_of_base": ops(layers) / base_ops,
        "base_holdout_accuracy": base_acc,
        "budget": budget,
        "confidence": confidence,
        "holdout_confidence": keep_confidence,
        "method": method,
        "verification": verification,
        "uniform": uniform,
        "sensitivity": sensitivity,
        "steps": steps,
        "sops_per_image": measured,
        "sops_images": min(sops_images, len(hx)),
        "holdout_images": len(hx),
        "sensitivity_images": len(sx),
        "calib_images": len(calib),
        "verify_images": len(vx),
        "seconds": time.perf_counter() - start,
    }
