"""Render the JSON that the repository's scripts wrote into the tables and figures the docs show.

``python docs/scripts/render.py`` reads ``docs/generated/*.json`` (see ``build_figures.py``, which
makes them and calls this script) and writes, beside each, a Markdown fragment (``NAME.md``: the
tables and a line saying which command made the numbers, where and when) and the figures
(``NAME*.png``). It measures nothing: every number comes from the JSON. ``--check`` only compares
the Markdown it would write with the committed one, so a hand-edited number fails the tests.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

GENERATED = Path(__file__).resolve().parents[2] / "docs" / "generated"
# examples/challenge.py's --model choices and the classes they train
MODEL_CLASSES = {"mlp": "SequenceMLP", "gru": "SequenceGRU", "transformer": "SequenceTransformer"}


def md_table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str = "") -> str:
    """A Markdown table; ``align`` holds one of ``l``/``r`` per column (default: first left)."""
    align = align or "l" + "r" * (len(headers) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = [headers, rule, *[[str(c) for c in row] for row in rows]]
    return "\n".join("| " + " | ".join(map(str, line)) + " |" for line in lines) + "\n"


def provenance_line(name: str, provenance: dict[str, Any]) -> str:
    """Which command made the numbers, on what machine, at which commit."""
    record = provenance.get(name)
    if record is None:
        raise KeyError(
            f"no provenance for {name!r}: run docs/scripts/build_figures.py --only {name}"
        )
    m = record["machine"]
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ""
    if m.get("load_average_1min") is not None:
        gpu += f", load average {m['load_average_1min']} when it finished"
    return (
        f"*Produced by `{record['command']}` in {record['seconds']:.0f} s on {m['cpu']} "
        f"({m['logical_cpus']} logical CPUs{gpu}), "
        f"{m['os']}, Python {m['python']}, torch {m['torch']}, commit `{record['commit']}`, "
        f"{record['finished_utc']}.*\n"
    )


# ------------------------------------------------------------------------------------------------
# prior-bias initialization: docs/scripts/prior_curves.py


def prior_curves_md(name: str, data: dict[str, Any], provenance: dict[str, Any]) -> str:
    steps = len(data["variants"][0]["loss"])
    tail = min(50, steps)
    rows = []
    for v in data["variants"]:
        loss = v["loss"]
        rows.append(
            [
                v["label"],
                f"{v['initial_bias_mean']:+.3f}",
                f"{loss[0]:.3f}",
                f"{loss[min(10, steps - 1)]:.3f}",
                f"{loss[min(50, steps - 1)]:.3f}",
                f"{sum(loss[-tail:]) / tail:.3f}",
            ]
        )
    cfg = data["config"]
    headers = [
        "initial output bias",
        "mean bias",
        "loss, step 0",
        "step 10",
        "step 50",
        f"mean of the last {tail} steps",
    ]
    return (
        f"![Early training loss by initial output bias](generated/{name}.png)\n\n"
        + md_table(headers, rows)
        + f"\n{cfg['rows']:,} rows, {cfg['items']:,} items, {cfg['positives_per_row']} positives "
        f"per row; `{cfg['loss']}`, `{cfg['optimizer']}`, batch {cfg['batch']}, "
        f"{cfg['steps']} steps, seed {cfg['seed']}.\n\n" + provenance_line(name, provenance)
    )


def prior_curves_png(name: str, data: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=120)
    for v in data["variants"]:
        ax.plot(range(len(v["loss"])), v["loss"], label=v["label"], linewidth=1.4)
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("focal loss per positive (log scale)")
    ax.set_title("Early training loss by initial output bias")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(GENERATED / f"{name}.png")
    plt.close(fig)


# ------------------------------------------------------------------------------------------------
# focal loss implementations side by side: docs/scripts/focal_comparison.py


def _check(result: dict[str, Any]) -> str:
    return ("yes" if result["ok"] else "**no**") + f" ({result['detail']})"


def _rel(value: float) -> str:
    return "inf" if value == float("inf") else f"{value:.1e}"


def focal_comparison_md(name: str, data: dict[str, Any], provenance: dict[str, Any]) -> str:
    rows = []
    for r in data["implementations"]:
        saved = f"{r['saved_dense']['ratio_to_logits']:.2f}x"
        if "saved_sparse" in r:
            saved += f" dense, {r['saved_sparse']['ratio_to_logits']:.2f}x index list"
        rows.append(
            [
                r["label"],
                _check(r["grad_gamma_0.5"]),
                _check(r["grad_gamma_2"]),
                _rel(r["value_error_gamma_0.5"]["max_rel_error"]),
                _rel(r["value_error_gamma_2"]["max_rel_error"]),
                _check(r["float16"]),
                _check(r["index_targets"]),
                saved,
                f"{r['bce_at_gamma_0']['grad_max_abs_diff']:.1e}",
            ]
        )
    headers = [
        "implementation",
        "finite gradients, gamma = 0.5, logits up to ±1e4",
        "same, gamma = 2",
        "max relative error of the value, gamma = 0.5",
        "same, gamma = 2",
        "float16 logits",
        "index-list targets",
        "held for backward (x logits bytes)",
        "gamma = 0 vs BCE-with-logits, max gradient difference",
    ]
    rows_t = [[h, *[row[i] for row in rows[:]]] for i, h in enumerate(headers) if i > 0]
    names = [row[0] for row in rows]
    cfg = data["config"]
    rows_cfg = cfg["saved_bytes_logits"]
    return (
        md_table(["check", *names], rows_t, "l" * (len(names) + 1))
        + f"\nValue errors against a float64 log-space reference over {cfg['value_grid']} "
        "(entries whose reference value is above 1e-30); bytes held for backward are those "
        "saved through `torch.autograd.graph.saved_tensors_hooks` plus those an autograd node "
        'holds itself (focalrec\'s gradient computed in forward), with `reduction="none"`, for '
        f"{rows_cfg[0]} x {rows_cfg[1]} float32 logits, 3 positives per row.\n\n"
        + provenance_line("focal_comparison", provenance)
    )


def no_figure(name: str, data: dict[str, Any]) -> None:
    """For fragments that are tables only."""


# ------------------------------------------------------------------------------------------------
# focal loss speed and memory: benchmarks/bench_focal.py

FOCAL_LABELS = {
    "bce_with_logits": "`F.binary_cross_entropy_with_logits` (dense targets)",
    "focalrec_index": "focalrec, index-list targets",
    "focalrec_dense": "focalrec, dense float 0/1 targets",
    "focalrec_bool": "focalrec, dense bool targets",
    "focalrec_soft": "focalrec, soft targets (0.05 / 0.95)",
    "compiled_torchvision_formula": "torchvision's formula under `torch.compile`",
    "paper_formula": "paper formula, written literally",
    "torchvision_formula": "torchvision's formula",
    "fvcore": "fvcore `sigmoid_focal_loss`",
    "kornia": "kornia `binary_focal_loss_with_logits`",
}


def _opt(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def bench_focal_md(name: str, data: dict[str, Any], provenance: dict[str, Any]) -> str:
    cfg, env = data["config"], data["environment"]
    rows = []
    for key, r in data["results"].items():
        rows.append(
            [
                FOCAL_LABELS.get(key, key),
                f"{r['wall_ms']:.1f}",
                f"{r['wall_vs_bce']:.2f}x",
                f"{r['cpu_vs_bce']:.2f}x",
                _opt(r.get("peak_extra_x_logits"), ".2f")
                + ("x" if r.get("peak_extra_x_logits") is not None else ""),
                _opt(r["rel_diff_vs_float64"], ".1e"),
            ]
        )
    headers = [
        "forward + backward",
        "median wall ms",
        "wall / BCE",
        "CPU time / BCE",
        "peak extra memory / logits size",
        "loss value, relative difference to float64",
    ]
    return (
        f"![Focal loss time and memory relative to BCE-with-logits](generated/{name}.png)\n\n"
        + md_table(headers, rows)
        + f"\nLogits {cfg['n']:,} x {cfg['c']:,} {cfg['dtype']} ({cfg['logits_mb']:.0f} MiB), "
        f"{cfg['positives']} positives per row, alpha = {cfg['alpha']}, gamma = {cfg['gamma']}, "
        f"median of {cfg['repeats']} interleaved repeats, {env['threads']} torch thread(s), "
        f"focalrec's `{env.get('focalrec_backend', 'torch')}` backend. "
        "Peak extra memory is the resident memory that forward + backward adds, measured in a "
        "subprocess per implementation; it includes the logits' gradient (1x), which every "
        "implementation produces.\n\n" + provenance_line(name, provenance)
    )


def time_and_memory_png(
    name: str,
    labels: Sequence[str],
    colors: Sequence[str],
    panels: tuple[tuple[Sequence[float], str], tuple[Sequence[float], str]],
) -> None:
    """Two horizontal bar panels side by side, time ratios (a line at 1) and memory."""
    import matplotlib.pyplot as plt

    n = len(labels)
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 0.45 * n + 1.4), dpi=120)
    (ratios, time_label), (memory, memory_label) = panels
    ax_t.barh(range(n), ratios, color=colors)
    ax_t.set_yticks(range(n), labels, fontsize=8)
    ax_t.invert_yaxis()
    ax_t.axvline(1.0, color="black", linewidth=0.8)
    ax_t.set_xlabel(time_label)
    ax_m.barh(range(n), memory, color=colors)
    ax_m.set_yticks(range(n), [""] * n)
    ax_m.invert_yaxis()
    ax_m.set_xlabel(memory_label)
    for ax in (ax_t, ax_m):
        ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(GENERATED / f"{name}.png")
    plt.close(fig)


def bench_focal_png(name: str, data: dict[str, Any]) -> None:
    results = data["results"]
    keys = list(results)
    colors = [
        "tab:gray"
        if k == "bce_with_logits"
        else "tab:blue"
        if k.startswith("focalrec")
        else "tab:orange"
        for k in keys
    ]
    time_and_memory_png(
        name,
        [FOCAL_LABELS.get(k, k).replace("`", "") for k in keys],
        colors,
        (
            ([results[k]["wall_vs_bce"] for k in keys], "wall time / BCE-with-logits"),
            (
                [results[k].get("peak_extra_x_logits") or 0.0 for k in keys],
                "peak extra memory / logits size",
            ),
        ),
    )


# ------------------------------------------------------------------------------------------------
# focal loss and mAP@k on a GPU: benchmarks/bench_gpu.py (run by benchmarks/gpu.sh)

GPU_LABELS = {
    "clone": "`logits.clone()` (one read, one write)",
    "focalrec_kernel": "focalrec forward alone (value and gradient, index lists)",
    "torchvision_formula_compiled": "torchvision's formula, `torch.compile`",
    "torch_topk": "`torch.topk(scores, k)` alone",
    "map_at_k": "`map_at_k`",
    "map_at_k_no_validation": "`map_at_k(..., validate_args=False)`",
}


def bench_gpu_md(name: str, data: dict[str, Any], provenance: dict[str, Any]) -> str:
    env, cfg = data["environment"], data["config"]
    if env["device"] != "cuda":
        raise ValueError(f"{name}.json was not measured on a GPU (device {env['device']!r})")
    text = ""
    headers = [
        "forward + backward",
        "median ms",
        "/ BCE",
        "/ compiled formula",
        "GB/s",
        "/ clone's bandwidth",
        "peak extra memory / logits size",
    ]
    for case in data["focal"]:
        rows = [
            [
                GPU_LABELS.get(key, FOCAL_LABELS.get(key, key)),
                f"{r['ms']:.3f}",
                _opt(r["vs_bce"], ".2f"),
                _opt(r["vs_compiled"], ".2f"),
                f"{r['bandwidth_gb_s']:.0f}",
                f"{r['vs_clone_bandwidth']:.2f}",
                _opt(r["peak_extra_x_logits"], ".2f"),
            ]
            for key, r in case["results"].items()
        ]
        rows += [
            [GPU_LABELS.get(k, FOCAL_LABELS.get(k, k)), e] + [""] * 5
            for k, e in case["errors"].items()
        ]
        text += (
            f"**Focal loss, logits {case['n']:,} x {case['c']:,} {case['dtype']}** "
            f"({case['logits_mb']:,.0f} MiB)\n\n" + md_table(headers, rows) + "\n"
        )
    for case in data["map_at_k"]:
        text += f"**mAP@k, scores {case['n']:,} x {case['c']:,} float32, k = {case['k']}**\n\n"
        if "error" in case:
            text += f"{case['error']}\n\n"
            continue
        rows = [
            [GPU_LABELS.get(key, key), f"{r['ms']:.3f}", f"{r['vs_topk']:.2f}x"]
            for key, r in case["results"].items()
        ]
        text += md_table(["case", "median ms", "/ torch.topk"], rows) + "\n"
    return (
        text + f"{env['gpu']} ({env['gpu_memory_gb']:.0f} GB), torch {env['torch']}, triton "
        f"{env['triton']}; {cfg['positives']} positives per row, alpha = {cfg['alpha']}, gamma = "
        f"{cfg['gamma']}, median of {cfg['repeats']} interleaved repeats timed with CUDA events. "
        "GB/s counts the bytes one pass must move (logits read, gradient written, dense targets "
        "read); peak extra memory is `torch.cuda.max_memory_allocated` beyond the inputs, the "
        "gradient included.\n\n" + provenance_line(name, provenance)
    )


# ------------------------------------------------------------------------------------------------
# the fused output layer: benchmarks/bench_linear.py

LINEAR_LABELS = {
    "fused": "focalrec `linear_sigmoid_focal_loss` (fused)",
    "unfused_focal": "`F.linear` + `sigmoid_focal_loss`",
    "unfused_bce": "`F.linear` + BCE-with-logits (dense targets)",
    "linear_cross_entropy": "`F.linear_cross_entropy` (softmax, plain)",
    "linear_cross_entropy_chunked": "`F.linear_cross_entropy` (softmax, chunked)",
}


def _mib(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def bench_linear_md(name: str, data: dict[str, Any], provenance: dict[str, Any]) -> str:
    cfg, env = data["config"], data["environment"]
    rows = []
    for size in data["sizes"]:
        for key, r in size["results"].items():
            label = LINEAR_LABELS.get(key, key)
            if r["status"] != "measured" and "--large-only" in r.get("reason", ""):
                rows.append([f"{size['c']:,}", label, "left out at this size", "", "", "", ""])
                continue
            if r["status"] != "measured":
                estimate = f"≥ {_mib(r['estimated_peak_extra_mb'])} (estimate, not run)"
                rows.append([f"{size['c']:,}", label, "not run", "", "", estimate, ""])
                continue
            versus = r.get("peak_extra_vs_unfused")
            if versus is not None and size["unfused_memory_is_estimate"]:
                versus_text = f"≤ {versus:.3f}x of the estimate"
            else:
                versus_text = _opt(versus, ".3f") + ("x" if versus is not None else "")
            memory = r.get("peak_extra_mb")
            rows.append(
                [
                    f"{size['c']:,}",
                    label,
                    f"{r['wall_ms'] / 1e3:.2f}",
                    _opt(r["wall_vs_unfused"], ".2f") + ("x" if r["wall_vs_unfused"] else ""),
                    _opt(r["cpu_vs_unfused"], ".2f") + ("x" if r["cpu_vs_unfused"] else ""),
                    "n/a" if memory is None else _mib(memory),
                    versus_text,
                ]
            )
    headers = [
        "items C",
        "forward + backward",
        "median wall s",
        "wall / unfused focal",
        "CPU time / unfused focal",
        "peak extra memory, MiB",
        "memory / unfused focal",
    ]
    checks = [
        [
            f"{size['c']:,}",
            *(f"{size['check_vs_unfused'][k]:.1e}" for k in _LINEAR_CHECKS),
        ]
        for size in data["sizes"]
        if size["check_vs_unfused"]
    ]
    runs = "; ".join(
        f"C = {size['c']:,}: median of {size['repeats']} (warm-up on {size['warmup']}), "
        f"load average {size['load_average'][0]} to {size['load_average'][1]}"
        for size in data["sizes"]
    )
    return (
        f"![Fused output layer: time and peak memory by catalogue size](generated/{name}.png)"
        "\n\n"
        + md_table(headers, rows, "lllrrrr")
        + f"\nN = {cfg['n']:,} rows, d = {cfg['d']} features, {cfg['dtype']}, "
        f"{cfg['positives']} positives per row (the softmax references: one random item per "
        f"row), alpha = {cfg['alpha']}, gamma = {cfg['gamma']}, reduction `{cfg['reduction']}`, "
        f"chunks of {cfg['chunk_size'][0]:,} x {cfg['chunk_size'][1]:,} logits, "
        f"{env['threads']} torch thread(s), repeats interleaved. {runs}. Peak extra memory is "
        "the resident memory that forward + backward adds, measured in a subprocess per "
        "implementation; it includes the gradients of the features, the weight and the bias. "
        "A row marked *not run* did not fit in the memory available "
        f"({cfg['memory_budget_mb'] / 1024:.1f} GiB budget): its figure is the estimate from "
        "its formula, the logits and their gradient plus the three gradients, a lower bound, "
        "never a measurement. A row *left out at this size* was not run there to keep the "
        "build short (`--large-only`): it fits, and the same command without that option runs "
        "it.\n\n"
        + (
            "The fused loss against the unfused one in the same run, relative differences "
            "(norm of the difference over the norm):\n\n"
            + md_table(
                ["items C", "loss", "input gradient", "weight gradient", "bias gradient"], checks
            )
            + "\n"
            if checks
            else ""
        )
        + provenance_line(name, provenance)
    )


_LINEAR_CHECKS = (
    "loss_rel_diff",
    "grad_input_rel_diff",
    "grad_weight_rel_diff",
    "grad_bias_rel_diff",
)


def bench_linear_compile_md(name: str, data: dict[str, Any], provenance: dict[str, Any]) -> str:
    cfg, env = data["config"], data["environment"]
    rows = [
        [
            label,
            f"{data[f'{key}_s'] * 1e3:,.0f}",
            f"{data[f'{key}_cpu_s'] * 1e3:,.0f}",
            f"{data['ratio'] if key == 'compiled' else 1.0:.3f}x",
            f"{data['cpu_ratio'] if key == 'compiled' else 1.0:.3f}x",
        ]
        for key, label in (
            ("eager", "eager"),
            ("compiled", f"`torch.compile(..., fullgraph=True)`, {cfg['backend']}"),
        )
    ]
    headers = ["training step", "median wall ms", "median CPU ms", "wall / eager", "CPU / eager"]
    load = env["load_average"]
    return (
        md_table(headers, rows)
        + f"\nForward + backward of a step: item embeddings of a history of {cfg['history']} "
        f"(mean), an MLP, and `LinearFocalLoss` over C = {cfg['items']:,} items; N = "
        f"{cfg['n']:,} rows, d = {cfg['d']}, {cfg['positives']} positives per row, "
        f"{cfg['dtype']}, default chunks, {env['threads']} torch thread(s), median of "
        f"{cfg['repeats']} interleaved repeats, load average {load[0]} to {load[1]} (a shared "
        f"machine). The first compiled call, which compiles (inductor caches its work between "
        "runs), took "
        f"{data['first_compiled_call_s']:.1f} s. Compiled against eager, relative differences "
        f"(norm of the difference over the norm): loss {data['loss_rel_diff']:.1e}, "
        f"parameters' gradients up to {data['grad_rel_diff_max']:.1e}.\n\n"
        + provenance_line(name, provenance)
    )


def bench_sampled_md(name: str, data: dict[str, Any], provenance: dict[str, Any]) -> str:
    env = data["environment"]
    rows = [
        [
            f"{size['c']:,}",
            f"{size['full_ms']:,.0f}",
            f"{size['sampled_ms']:,.1f} ({size['speedup']:,.1f}x)",
            f"{size['sampled_sparse_ms']:,.1f} ({size['sparse_speedup']:,.1f}x)",
            f"{size['dense_gradient_ms']:,.0f}",
        ]
        for size in data["sizes"]
    ]
    headers = [
        "C",
        "full layer, ms / step",
        "sampled, dense gradients, ms / step (speed-up)",
        "sampled, `sparse_grad=True`, ms / step (speed-up)",
        "allocating the dense gradients alone, ms",
    ]
    malloc = env.get("malloc") or {}
    allocator = (
        "glibc keeping freed memory for reuse ("
        + ", ".join(f"`{k}={v}`" for k, v in malloc.items())
        + ")"
        if malloc
        else "glibc's default allocator settings"
    )
    check = data["check_vs_gathered"]
    return (
        md_table(headers, rows)
        + f"\nForward + backward of `linear_sigmoid_focal_loss`, N = {env['n']:,} rows, "
        f"d = {env['d']}, {env['positives']} positive(s) per row: the full layer over all C "
        f"items against `negatives=` k = {env['k']} ids per row drawn by `sample_negatives` "
        f"(the draw included), with dense gradients of the weight and the bias and with sparse "
        f"ones; float32, {env['threads']} torch thread(s), {allocator}, median of "
        f"{data['repeats']} interleaved repeats on a shared machine, each speed-up the median of "
        "the per-repeat ratios to the full layer. The last column is the time to allocate the "
        "dense gradients (`torch.zeros` of `(C, d)` and `(C,)`), which a step with dense "
        "gradients cannot go below. Sampled (both kinds of gradients) against the gathered "
        f"unfused loss in float64, largest absolute differences: loss "
        f"{check['loss_abs_diff']:.1e}, gradients of the input "
        f"{check['grad_input_abs_diff']:.1e}, the weight {check['grad_weight_abs_diff']:.1e}, "
        f"the bias {check['grad_bias_abs_diff']:.1e}.\n\n" + provenance_line(name, provenance)
    )


FAMILY_NAMES = {
    "bce_with_logits": "`F.binary_cross_entropy_with_logits`",
    "focalrec_asl_index": "`focalrec.asymmetric_loss`, index-list target",
    "focalrec_asl_dense": "`focalrec.asymmetric_loss`, dense target",
    "timm_multilabel": "timm `AsymmetricLossMultiLabel`",
    "timm_optimized": "timm `AsymmetricLossOptimized`",
}


def bench_family_md(name: str, data: dict[str, Any], provenance: dict[str, Any]) -> str:
    config, env, results = data["config"], data["environment"], data["results"]

    def cell(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    rows = [
        [
            FAMILY_NAMES.get(case, case),
            f"{r['wall_ms']:,.1f}",
            f"{r['vs_bce']:.2f}x",
            cell(r.get("speedup_vs_timm_optimized"), ".1f"),
            cell(r.get("speedup_vs_timm_multilabel"), ".1f"),
            cell(r.get("peak_extra_x_logits"), ".2f"),
            cell(r.get("rel_diff_vs_float64"), ".1e"),
        ]
        for case, r in results.items()
    ]
    headers = [
        "implementation",
        "ms (forward + backward)",
        "time / BCE",
        "speed-up over timm Optimized",
        "over timm MultiLabel",
        "peak extra memory, x logits",
        "loss rel. diff. to float64",
    ]
    return (
        md_table(headers, rows) + f"\nThe sum of ASL ($\\gamma_+ = {config['gamma_pos']:g}$, "
        f"$\\gamma_- = {config['gamma_neg']:g}$, margin {config['clip']:g}) over "
        f"{config['n']:,} x {config['c']:,} {config['dtype']} logits with {config['positives']} "
        f"positives per row, forward + backward; focalrec on its `{env['focalrec_backend']}` "
        f"backend, {env['threads']} torch threads; median of {config['repeats']} interleaved "
        "repeats on a shared machine, each ratio the median of the per-repeat ratios. Peak "
        "extra memory: the resident memory that one forward + backward adds in a fresh process, "
        "in units of the logits' size (the logits' gradient, one unit, included).\n\n"
        + provenance_line(name, provenance)
    )


def bench_dropout_md(name: str, data: dict[str, Any], provenance: dict[str, Any]) -> str:
    env, ms = data["environment"], data["ms_per_step"]
    rows = [
        ["`torch.nn.Dropout`", f"{ms['torch_dropout']:,.0f}", "1.00x"],
        [
            "focalrec's dropout (`SequenceTransformer`'s)",
            f"{ms['focalrec_dropout']:,.0f}",
            f"{data['ratio_to_torch_dropout']:.2f}x",
        ],
        ["no dropout (probability 0)", f"{ms['no_dropout']:,.0f}", "-"],
    ]
    return (
        md_table(["dropout layers", "ms / training step", "time / `nn.Dropout`'s"], rows)
        + f"\nOne `SequenceTransformer` training step as `examples/movielens.py` takes it: "
        f"{env['n']} histories of {env['length']} items, embedding {env['d']}, "
        f"{env['items']:,} items through the fused output layer, dropout {env['dropout']:g}, "
        f"forward + backward + Adam; {env['threads']} torch thread(s), median of "
        f"{data['repeats']} interleaved repeats on a shared machine, the ratio the median of the "
        f"per-repeat ratios. With `nn.Dropout`, its layers take "
        f"{data['torch_dropout_share']:.0%} of the step.\n\n" + provenance_line(name, provenance)
    )


def bench_linear_png(name: str, data: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt

    sizes = data["sizes"]
    keys = list(sizes[0]["results"])
    colors = dict(
        zip(keys, ["tab:blue", "tab:orange", "tab:gray", "tab:green", "tab:olive"], strict=False)
    )
    fig, (ax_m, ax_t) = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    for key in keys:
        label = LINEAR_LABELS.get(key, key).replace("`", "")
        rows = [(s["c"], s["results"][key]) for s in sizes]
        measured = [(c, r["peak_extra_mb"]) for c, r in rows if r.get("peak_extra_mb")]
        estimated = [
            (c, r["estimated_peak_extra_mb"]) for c, r in rows if r["status"] != "measured"
        ]
        timed = [(c, r["wall_vs_unfused"]) for c, r in rows if r.get("wall_vs_unfused")]
        style = {"marker": "o", "color": colors[key]}
        if measured:
            ax_m.plot(*zip(*measured, strict=True), label=label, **style)
        if estimated:
            ax_m.plot(
                *zip(*estimated, strict=True),
                markerfacecolor="none",
                linestyle="none",
                label=f"{label}: estimate, not run",
                **style,
            )
        if timed:
            ax_t.plot(*zip(*timed, strict=True), label=label, **style)
    ax_m.set(
        xscale="log",
        yscale="log",
        xlabel="items C (log)",
        ylabel="peak extra memory, MiB (log)",
        title="memory of forward + backward",
    )
    ax_t.axhline(1.0, color="black", linewidth=0.8)
    ax_t.set(
        xscale="log",
        xlabel="items C (log)",
        ylabel="wall time / F.linear + focal loss",
        title="time, where the unfused loss fits",
    )
    ax_m.legend(fontsize=6, loc="upper left")
    ax_t.legend(fontsize=6, loc="upper left")
    for ax in (ax_m, ax_t):
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(GENERATED / f"{name}.png")
    plt.close(fig)


# ------------------------------------------------------------------------------------------------
# ranking metrics: benchmarks/bench_metrics.py


def bench_metrics_md(name: str, data: dict[str, Any], provenance: dict[str, Any]) -> str:
    cfg, env = data["config"], data["environment"]
    rows = [
        [r["case"], f"{r['median_s']:.4f}", f"{r['ratio_to_topk']:.2f}x"] for r in data["results"]
    ]
    speedups = [r["speedup_of_map_at_k"] for r in data["results"] if "speedup_of_map_at_k" in r]
    checks = [[k, f"{v:.6f}"] for k, v in data["checks"].items()]
    text = (
        f"![Ranking metric timings relative to torch.topk alone](generated/{name}.png)\n\n"
        + md_table(["case", "median seconds", "time / torch.topk alone"], rows)
        + f"\n{cfg['rows']:,} users x {cfg['items']:,} items, float32 scores, k = {cfg['k']}, "
        f"{cfg['targets_width']} target items and {cfg['exclude_width']} excluded items per user, "
        f"median of {cfg['repeats']} repeats, {env['threads']} torch thread(s).\n"
    )
    if speedups:
        text += (
            f"\n`map_at_k` is {speedups[0]:,.0f} times faster than torchmetrics' `RetrievalMAP` "
            "(its time measured on a subset of users and scaled per user, as the row says).\n"
        )
    text += (
        "\nThe same mAP@3 from each definition (the comparison is of equal results):\n\n"
        + md_table(["computed by", "mAP@3"], checks)
        + "\n"
        + provenance_line(name, provenance)
    )
    return text


def bench_metrics_png(name: str, data: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt

    results = data["results"]
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(results) + 1.2), dpi=120)
    labels = [r["case"] for r in results]
    ratios = [r["ratio_to_topk"] for r in results]
    colors = ["tab:gray" if "topk(" in lab else "tab:blue" for lab in labels]
    colors = [
        "tab:orange" if ("python" in lab or "torchmetrics" in lab) else c
        for lab, c in zip(labels, colors, strict=True)
    ]
    ax.barh(range(len(results)), ratios, color=colors)
    ax.set_yticks(range(len(results)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("median time / torch.topk(scores, k) alone (log scale)")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.grid(True, axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(GENERATED / f"{name}.png")
    plt.close(fig)


# ------------------------------------------------------------------------------------------------
# top-k from embeddings: benchmarks/bench_topk.py


def bench_topk_md(name: str, data: dict[str, Any], provenance: dict[str, Any]) -> str:
    cfg, env = data["config"], data["environment"]
    rows = []
    for case, r in data["results"].items():
        peak = r.get("peak_extra_mib")
        rows.append(
            [
                case,
                f"{r['median_s']:.2f}",
                f"{r['ms_per_query']:.2f}",
                f"{r['ratio_to_baseline']:.2f}x",
                "n/a" if peak is None else f"{peak:,.0f}",
            ]
        )
    headers = [
        "case",
        "median seconds",
        "ms per query",
        "time / the obvious way (same exclusions)",
        "peak extra memory (MiB)",
    ]
    checks = [[k, f"{v:.4f}"] for k, v in data["checks"].items()]
    return (
        f"![Top-k from embeddings: time and memory](generated/{name}.png)\n\n"
        + md_table(headers, rows)
        + f"\n{cfg['queries']:,} queries x {cfg['items']:,} items, d = {cfg['dim']}, "
        f"k = {cfg['k']}, float32, {cfg['exclude_width']} excluded items per query in the "
        f"exclusion cases; blocks of {cfg['block_rows']:,} x {cfg['block_items']:,} scores "
        f"({cfg['block_mib']:.0f} MiB) on both chunked sides; all the scores would take "
        f"{cfg['scores_gib']:.2f} GiB (materialized only up to "
        f"{cfg['materialize_limit_gib']:g} GiB). Median of {cfg['repeats']} interleaved repeats, "
        f"{env['threads']} torch thread(s); peak extra memory is the resident memory one run "
        "adds to its inputs, measured in a subprocess per case.\n\n"
        + md_table(["the same lists?", "fraction of rows"], checks)
        + "\n"
        + provenance_line(name, provenance)
    )


def bench_topk_png(name: str, data: dict[str, Any]) -> None:
    results = data["results"]
    cases = list(results)
    time_and_memory_png(
        name,
        cases,
        ["tab:blue" if c.startswith("topk_items_from") else "tab:gray" for c in cases],
        (
            (
                [results[c]["ratio_to_baseline"] for c in cases],
                "time / chunked matmul + torch.topk",
            ),
            ([results[c].get("peak_extra_mib") or 0.0 for c in cases], "peak extra memory (MiB)"),
        ),
    )


# ------------------------------------------------------------------------------------------------
# the worked example: examples/challenge.py's metrics.json


def challenge_md(name: str, data: dict[str, Any], provenance: dict[str, Any]) -> str:
    d, cfg, t = data["data"], data["config"], data["timings_s"]
    best = data["best_val_map3"]
    rows = [
        [f"{k} baseline", f"{v:.4f}", f"{best / v - 1:+.1%}" if v > 0 else "n/a"]
        for k, v in data["baselines_val_map3"].items()
    ]
    model = MODEL_CLASSES[data["config"].get("model", "mlp")]
    rows.append([f"model (`{model}`, best epoch {data['best_epoch']})", f"{best:.4f}", ""])
    data_rows = [
        ["history length L", d["history_len"]],
        ["challenges (items)", f"{d['num_items']:,}"],
        ["train.csv users", f"{d['train_csv_users']:,}"],
        ["test.csv users", f"{d['test_csv_users']:,}"],
        ["training windows", f"{d['training_windows']:,}"],
        *(
            [["the same, as rows of positions", f"{d['training_rows']:,}"]]
            if "training_rows" in d
            else []
        ),
        ["validation users", f"{d['validation_users']:,}"],
    ]
    shown = {k: v for k, v in cfg.items() if not isinstance(v, (dict, list)) or k == "hidden_sizes"}
    config_rows = [[f"`{k}`", f"`{v}`"] for k, v in sorted(shown.items())]
    time_rows = [[k.replace("_", " "), f"{v:.0f}"] for k, v in t.items()]
    per_epoch = sorted(e["seconds"] for e in data["epochs"])
    if per_epoch:
        median = per_epoch[len(per_epoch) // 2]
        time_rows.insert(0, [f"an epoch (median of {len(per_epoch)})", f"{median:.0f}"])
    title = "Training loss and validation mAP@3 per epoch"
    return (
        f"![{title}](generated/{name}.png)\n\n"
        + md_table(["validation mAP@3", "value", "model relative to it"], rows)
        + "\n"
        + md_table(["data", "value"], data_rows)
        + "\n"
        + md_table(["timing", "seconds"], time_rows)
        + "\n"
        + provenance_line(name, provenance)
        + '\n??? note "The run\'s configuration"\n\n'
        + "".join(
            "    " + line + "\n"
            for line in md_table(["option", "value"], config_rows, "ll").splitlines()
        )
    )


def challenge_png(name: str, data: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt

    epochs = data["epochs"]
    x = [e["epoch"] for e in epochs]
    fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=120)
    ax_loss.plot(x, [e["train_loss"] for e in epochs], marker="o", markersize=3)
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="training loss")
    ax_map.plot(x, [e["val_map3"] for e in epochs], marker="o", markersize=3, label="model")
    for (label, value), style in zip(
        data["baselines_val_map3"].items(), ["--", ":", "-."], strict=False
    ):
        ax_map.axhline(value, linestyle=style, color="gray", label=f"{label} baseline")
    ax_map.axvline(data["best_epoch"], color="tab:green", linewidth=0.8, label="best epoch")
    ax_map.set(xlabel="epoch", ylabel="validation mAP@3", title="validation mAP@3")
    ax_map.legend(fontsize=7)
    for ax in (ax_loss, ax_map):
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(GENERATED / f"{name}.png")
    plt.close(fig)


# ------------------------------------------------------------------------------------------------
# the loss ablation: examples/ablation.py's ablation.json


def _ablation_module() -> Any:
    """``examples/ablation.py``, whose report the page shows as the example prints it."""
    examples = str(GENERATED.parents[1] / "examples")
    if examples not in sys.path:
        sys.path.insert(0, examples)
    import ablation

    return ablation


def _portable(command: str) -> str:
    """The ablation's command with this machine's folders replaced by DIR and OUT."""
    command = re.sub(r"--data \S+", "--data DIR", command)
    return re.sub(r"--output \S+", "--output OUT", command)


def ablation_md(name: str, data: dict[str, Any], provenance: dict[str, Any]) -> str:
    data = {**data, "command": _portable(data["command"])}
    return (
        f"![Each loss's paired difference to BCE, by model](generated/{name}.png)\n\n"
        + _ablation_module().markdown(data)
        + "\n"
        + provenance_line(name, provenance)
    )


def ablation_png(name: str, data: dict[str, Any]) -> None:
    _ablation_module().plot(GENERATED / f"{name}.png", data)


# ------------------------------------------------------------------------------------------------


def movielens_default_md(name: str, data: dict[str, Any], provenance: dict[str, Any]) -> str:
    best, config = data["best"], data["config"]
    rows = [
        [
            str(e["epoch"]),
            f"{e['steps']:,}",
            f"{e['seconds']:,.0f}",
            f"{e['loss']:.4f}",
            f"{e['val']['ndcg@10']:.4f}",
            f"{e['val']['recall@10']:.4f}",
        ]
        for e in data["epochs"]
    ]
    headers = ["epoch", "steps", "seconds", "training loss", "val NDCG@10", "val Recall@10"]
    val = data["val"]
    return (
        f"`--loss {config['loss']}`, the defaults (embedding {config['embedding_dim']}, "
        f"{config['blocks']} blocks, {config['heads']} head(s), dropout {config['dropout']:g}, "
        f"length {config['max_length']}, batch {config['batch_size']}, Adam at "
        f"{config['lr']:g}), `--max-minutes {config['max_minutes']:g}`: the best validation "
        f"epoch, {best['epoch']}, after {best['steps']:,} steps and {best['seconds']:,.0f} s, "
        f"gives **NDCG@10 {val['ndcg@10']:.4f}**, Recall@10 {val['recall@10']:.4f}, Recall@1 "
        f"{val['recall@1']:.4f}; the run stopped by `{data['stopped_by']}` after "
        f"{data['steps']:,} steps and {data['seconds']:,.0f} s.\n\n"
        + md_table(headers, rows)
        + "\n"
        + provenance_line(name, provenance)
    )


def movielens_md(name: str, data: dict[str, Any], provenance: dict[str, Any]) -> str:
    config = data["config"]
    losses = data["losses"]

    def shown(cell: dict[str, Any], digits: int = 4) -> str:
        width = cell["half_width"]
        text = f"{cell['mean']:.{digits}f}"
        return text if width is None else f"{text} ± {width:.{digits}f}"

    rows = [
        [
            f"`{loss}`",
            shown(row["ndcg@10"]),
            shown(row["recall@10"]),
            shown(row["recall@1"]),
            f"{row['steps_to_best']['mean']:,.0f}",
            f"{row['seconds_to_best']['mean']:,.0f}",
            f"{row['steps']['mean']:,.0f}",
            ", ".join(f"{r['ndcg@10']:.4f}" for r in row["runs"]),
        ]
        for loss, row in losses.items()
    ]
    headers = [
        "--loss",
        "val NDCG@10",
        "val Recall@10",
        "val Recall@1",
        "steps to the best epoch",
        "seconds to the best epoch",
        "steps in the run",
        "val NDCG@10 per seed",
    ]
    seeds = len(config["seeds"])
    text = (
        md_table(headers, rows)
        + f"\nThe best validation epoch of each run: mean over {seeds} seeds "
        f"({', '.join(map(str, config['seeds']))}) ± the half-width of its 95% Student-t "
        f"interval; each run `--max-minutes {config['max_minutes']:g}` with the example's "
        f"defaults otherwise, {config['jobs']} runs at a time with {config['threads']} torch "
        f"thread(s) each on a {config['cpu_count']}-core machine (so the steps a run takes "
        "depend on the load beside it). The runs trained for "
        f"{sum(r['seconds'] for row in losses.values() for r in row['runs']) / 60:,.0f} minutes "
        "in all; the command keeps the runs already finished in its work folder, so its own time "
        "below can be shorter.\n"
    )
    pairs = [loss for loss in ("bce", "gbce") if loss in losses]
    if len(pairs) == 2:
        at = [r for r in data["equal_steps"] if r["steps"]["bce"] == r["steps"]["gbce"]]
        if at:
            ahead = sum(r["bce"] > r["gbce"] for r in at)
            last = {}
            for r in at:
                last[r["seed"]] = r
            per_seed = "; ".join(
                f"seed {seed}: after {r['steps']['bce']:,} steps `bce` {r['bce']:.4f}, "
                f"`gbce` {r['gbce']:.4f}"
                for seed, r in sorted(last.items())
            )
            text += (
                f"\nAt equal steps (after each epoch both runs of a seed completed, "
                f"{len(at)} pairs), the full-catalogue `bce` is ahead of `gbce` with 256 "
                f"negatives in {ahead} of {len(at)}; the last common epoch of each seed: "
                f"{per_seed}.\n"
            )
    # Every loss at the same step count: the last epoch that every run completed.
    names = list(losses)
    full = {}  # (seed, epoch) -> row, where every loss took the same steps
    for r in data["equal_steps"]:
        if len({r["steps"][loss] for loss in names}) == 1:
            full[(r["seed"], r["epoch"])] = r
    seeds_run = sorted({r["seed"] for r in data["equal_steps"]})
    common = [e for e in {e for _, e in full} if all((s, e) in full for s in seeds_run)]
    if common:
        epoch = max(common)
        at = [full[(s, epoch)] for s in seeds_run]
        cells = [f"`{loss}` {statistics.fmean(r[loss] for r in at):.4f}" for loss in names]
        text += (
            f"\nEvery loss after the same {at[0]['steps'][names[0]]:,} steps (epoch {epoch}, the "
            f"last that every run completed; mean val NDCG@10 over the seeds): "
            f"{', '.join(cells)}.\n"
        )
    return text + "\n" + provenance_line(name, provenance)


Markdown = Callable[[str, dict[str, Any], dict[str, Any]], str]
Figure = Callable[[str, dict[str, Any]], None]
# What a page says where a fragment's JSON has not been made (default: how to make it).
MISSING = {
    "bench_gpu": (
        '!!! warning "GPU figures are not measured yet"\n'
        "    No run on a GPU has been recorded, so this page has no GPU figures: the Triton\n"
        "    backend's speed on GPUs is unmeasured. `bash benchmarks/gpu.sh` on a machine with a\n"
        "    CUDA GPU (a few minutes) makes them and fills this section.\n"
    ),
}
RENDERERS: dict[str, tuple[Markdown, Figure]] = {
    "prior_curves": (prior_curves_md, prior_curves_png),
    "focal_comparison": (focal_comparison_md, no_figure),
    "bench_focal": (bench_focal_md, bench_focal_png),
    "bench_linear": (bench_linear_md, bench_linear_png),
    "bench_linear_compile": (bench_linear_compile_md, no_figure),
    "bench_family": (bench_family_md, no_figure),
    "bench_dropout": (bench_dropout_md, no_figure),
    "bench_sampled": (bench_sampled_md, no_figure),
    "bench_sampled_reuse": (bench_sampled_md, no_figure),
    "bench_metrics": (bench_metrics_md, bench_metrics_png),
    "bench_gpu": (bench_gpu_md, no_figure),
    "bench_topk": (bench_topk_md, bench_topk_png),
    "challenge": (challenge_md, challenge_png),
    "challenge_synthetic": (challenge_md, challenge_png),
    "ablation": (ablation_md, ablation_png),
    "movielens": (movielens_md, no_figure),
    "movielens_default": (movielens_default_md, no_figure),
}


def render(check: bool = False, figures: bool = True) -> list[str]:
    """Write (or, with ``check``, compare) every fragment; return the names that differ."""
    provenance_file = GENERATED / "provenance.json"
    provenance = (
        json.loads(provenance_file.read_text(encoding="utf-8")) if provenance_file.is_file() else {}
    )
    stale = []
    for name, (to_md, to_png) in RENDERERS.items():
        source = GENERATED / f"{name}.json"
        target = GENERATED / f"{name}.md"
        if not source.is_file():
            # An honest gap, never a made-up number: the page says how to fill it.
            text = MISSING.get(name) or (
                f'!!! info "Not generated in this build"\n    `{name}` has not been run yet: '
                f"`python docs/scripts/build_figures.py --only {name}` makes it.\n"
            )
            print(f"{name}: no {source.name}; run docs/scripts/build_figures.py --only {name}")
            if check:
                if not target.is_file() or target.read_text(encoding="utf-8") != text:
                    stale.append(name)
            else:
                target.write_text(text, encoding="utf-8")
            continue
        data = json.loads(source.read_text(encoding="utf-8"))
        text = to_md(name, data, provenance)
        if check:
            if not target.is_file() or target.read_text(encoding="utf-8") != text:
                stale.append(name)
            continue
        target.write_text(text, encoding="utf-8")
        if figures:
            to_png(name, data)
        print(f"{name}: wrote {target.name}" + (" and figures" if figures else ""))
    return stale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    parser.add_argument("--no-figures", action="store_true", help="write the Markdown only")
    args = parser.parse_args()
    stale = render(check=args.check, figures=not args.no_figures)
    if stale:
        print(f"out of date with their JSON: {stale}; run python docs/scripts/render.py")
        sys.exit(1)


if __name__ == "__main__":
    main()
