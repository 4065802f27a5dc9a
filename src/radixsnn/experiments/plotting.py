"""Figures for the coding-error study (paper Fig. 3) and the time-step sweep (paper Fig. 4).

matplotlib is an optional dependency (``pip install radixsnn[plot]``); it is imported when a figure
is drawn, with the non-interactive Agg backend, so the rest of the library works without it.
"""
from __future__ import annotations

from pathlib import Path

from radixsnn.errors import ConfigError
from radixsnn.outputs import atomic_write

_COLORS = {"radix": "tab:red", "radix_pow2": "tab:orange", "rate": "tab:blue"}
_LABELS = {"radix": "radix, X/(2^T-1)", "radix_pow2": "radix, X/2^T (paper)", "rate": "rate, count/T"}


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError(None, "drawing figures needs matplotlib: pip install 'radixsnn[plot]' (or leave the plot out)") from None
    return plt


def plot_coding_error(rows: list[dict], path: str | Path, title: str = "") -> None:
    """Fig. 3: RMSE (solid) and largest |residual| (dashed) vs T, log-y; residual band on the right."""
    plt = _pyplot()
    fig, (ax, band) = plt.subplots(1, 2, figsize=(10, 4))
    for coding in ("rate", "radix", "radix_pow2"):
        sel = sorted((r for r in rows if r["coding"] == coding), key=lambda r: r["time_steps"])
        if not sel:
            continue
        t = [r["time_steps"] for r in sel]
        color, label = _COLORS[coding], _LABELS[coding]
        style = dict(color=color, linewidth=1.2 if coding == "radix_pow2" else 1.8)
        if coding == "radix_pow2":
            style["linestyle"] = ":"
        ax.plot(t, [r["rmse"] for r in sel], label=f"{label}: RMSE", **style)
        if coding != "radix_pow2":
            peak = [max(-r["min_residual"], r["max_residual"]) for r in sel]
            ax.plot(t, peak, color=color, linestyle="--", linewidth=0.9, label=f"{label}: max |residual|")
            band.fill_between(t, [r["min_residual"] for r in sel], [r["max_residual"] for r in sel],
                              color=color, alpha=0.3, label=f"{label}: [min, max] residual")
            band.plot(t, [r["rmse"] for r in sel], color=color, linewidth=1.2)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("time steps T")
    ax.set_ylabel("error (activations scaled to [0, 1])")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    band.set_xscale("log", base=2)
    band.set_yscale("symlog", linthresh=1e-6)
    band.set_xlabel("time steps T")
    band.set_ylabel("residual q(x) - x  (line: RMSE)")
    band.grid(True, which="both", alpha=0.3)
    band.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


#: marker and line style of each kind of sweep point: the sweep's own, and results added from files
_SWEEP_STYLES = {"post-training": ("o", "-"), "fine-tuned": ("s", "-."), "converted": ("^", ":"), "per-layer T": ("*", "none")}


def plot_sweep(rows: list[dict], path: str | Path, title: str = "") -> None:
    """Fig. 4: accuracy (left axis, solid) and relative efficiency (right axis, dashed) vs T.

    ``rows`` carry ``time_steps``, ``weight_bits``, ``mode`` ("post-training", "fine-tuned", "converted"
    or "per-layer T", drawn as a star at its ``equivalent_time_steps``), ``accuracy`` (fraction) and
    ``efficiency`` (relative to the most efficient point); fine-tuned rows may carry their ``epochs``.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5.2))
    eff_ax = ax.twinx()
    colors = ["tab:blue", "tab:red", "tab:green", "tab:purple", "tab:brown"]
    order = list(_SWEEP_STYLES)
    widths = sorted({r["weight_bits"] for r in rows}, reverse=True)

    def x(r):
        return r.get("equivalent_time_steps", r["time_steps"])

    groups = sorted({(r["weight_bits"], r["mode"]) for r in rows}, key=lambda g: (-g[0], order.index(g[1])))
    for bits, mode in groups:
        sel = sorted((r for r in rows if r["weight_bits"] == bits and r["mode"] == mode), key=x)
        color = colors[widths.index(bits) % len(colors)]
        marker, linestyle = _SWEEP_STYLES[mode]
        epochs = {r.get("epochs") for r in sel}
        label = f"accuracy, {bits}-bit weights, {mode}"
        if mode == "fine-tuned" and len(epochs) == 1 and None not in epochs:
            n = epochs.pop()
            label += f" ({n} epoch{'' if n == 1 else 's'})"
        ax.plot([x(r) for r in sel], [100 * r["accuracy"] for r in sel], color=color, marker=marker,
                linestyle=linestyle, markersize=13 if marker == "*" else 6, label=label)
    for bits in widths:
        color = colors[widths.index(bits) % len(colors)]
        sel = {r["time_steps"]: r["efficiency"] for r in rows if r["weight_bits"] == bits and r["mode"] != "per-layer T"}
        t = sorted(sel)
        eff_ax.plot(t, [sel[k] for k in t], color=color, linestyle="--", alpha=0.6, label=f"efficiency, {bits}-bit")
        stars = [r for r in rows if r["weight_bits"] == bits and r["mode"] == "per-layer T"]
        if stars:
            eff_ax.plot([x(r) for r in stars], [r["efficiency"] for r in stars], color=color, marker="*", markersize=11,
                        linestyle="none", alpha=0.6, markerfacecolor="none", label=f"efficiency, {bits}-bit, per-layer T")
    ax.set_xlabel("time steps T (per-layer T: the uniform T of equal operations)" if any(
        r["mode"] == "per-layer T" for r in rows) else "time steps T")
    ax.set_ylabel("top-1 accuracy (%)")
    eff_ax.set_ylabel("efficiency (images per unit time, relative)")
    ax.grid(True, alpha=0.3)
    lines = ax.get_legend_handles_labels()
    more = eff_ax.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="upper center",
              bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _save(fig, path) -> None:
    """Write the figure as a PNG, atomically."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"), "out")
