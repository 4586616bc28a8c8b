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
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

GENERATED = Path(__file__).resolve().parents[2] / "docs" / "generated"


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
    return (
        f"*Produced by `{record['command']}` in {record['seconds']:.0f} s on {m['cpu']} "
        f"({m['logical_cpus']} logical CPUs{gpu}), "
        f"{m['os']}, Python {m['python']}, torch {m['torch']}, commit `{record['commit']}`, "
        f"{record['finished_utc']}.*\n"
    )


# ------------------------------------------------------------------------------------------------
# prior-bias initialization: docs/scripts/prior_curves.py


def prior_curves_md(data: dict[str, Any], provenance: dict[str, Any]) -> str:
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
        md_table(headers, rows)
        + f"\n{cfg['rows']:,} rows, {cfg['items']:,} items, {cfg['positives_per_row']} positives "
        f"per row; `{cfg['loss']}`, `{cfg['optimizer']}`, batch {cfg['batch']}, "
        f"{cfg['steps']} steps, seed {cfg['seed']}.\n\n"
        + provenance_line("prior_curves", provenance)
    )


def prior_curves_png(data: dict[str, Any]) -> None:
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
    fig.savefig(GENERATED / "prior_curves.png")
    plt.close(fig)


# ------------------------------------------------------------------------------------------------
# focal loss implementations side by side: docs/scripts/focal_comparison.py


def _check(result: dict[str, Any]) -> str:
    return ("yes" if result["ok"] else "**no**") + f" ({result['detail']})"


def _rel(value: float) -> str:
    return "inf" if value == float("inf") else f"{value:.1e}"


def focal_comparison_md(data: dict[str, Any], provenance: dict[str, Any]) -> str:
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
        "saved for backward (x logits bytes)",
        "gamma = 0 vs BCE-with-logits, max gradient difference",
    ]
    rows_t = [[h, *[row[i] for row in rows[:]]] for i, h in enumerate(headers) if i > 0]
    names = [row[0] for row in rows]
    cfg = data["config"]
    rows_cfg = cfg["saved_bytes_logits"]
    return (
        md_table(["check", *names], rows_t, "l" * (len(names) + 1))
        + f"\nValue errors against a float64 log-space reference over {cfg['value_grid']} "
        "(entries whose reference value is above 1e-30); saved bytes counted with "
        f"`torch.autograd.graph.saved_tensors_hooks` for {rows_cfg[0]} x {rows_cfg[1]} float32 "
        "logits, 3 positives per row.\n\n" + provenance_line("focal_comparison", provenance)
    )


def focal_comparison_png(data: dict[str, Any]) -> None:
    del data  # a table only


# ------------------------------------------------------------------------------------------------

RENDERERS: dict[
    str, tuple[Callable[[dict[str, Any], dict[str, Any]], str], Callable[[dict[str, Any]], None]]
] = {
    "prior_curves": (prior_curves_md, prior_curves_png),
    "focal_comparison": (focal_comparison_md, focal_comparison_png),
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
        if not source.is_file():
            print(f"{name}: no {source.name}; run docs/scripts/build_figures.py --only {name}")
            continue
        data = json.loads(source.read_text(encoding="utf-8"))
        text = to_md(data, provenance)
        target = GENERATED / f"{name}.md"
        if check:
            if not target.is_file() or target.read_text(encoding="utf-8") != text:
                stale.append(name)
            continue
        target.write_text(text, encoding="utf-8")
        if figures:
            to_png(data)
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
