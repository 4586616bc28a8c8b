"""Side-by-side properties of sigmoid focal loss implementations, measured, written as JSON.

For focalrec, fvcore (whose ``sigmoid_focal_loss`` torchvision's ``torchvision.ops`` version is
taken from), kornia (when installed) and a paper-formula implementation, on the CPU::

    python docs/scripts/focal_comparison.py --json docs/generated/focal_comparison.json

Each column is a check run here: finite gradients for ``0 < gamma < 1`` at saturated logits, the
value's error against a float64 log-space reference, half-precision input, index-list targets,
the bytes held for backward, and the ``gamma = 0`` reduction to BCE-with-logits.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

import focalrec

Loss = Callable[[Tensor, Tensor, "float | None", float], Tensor]


def paper_formula(x: Tensor, t: Tensor, alpha: float | None, gamma: float) -> Tensor:
    """FL = -alpha_t (1 - p_t)^gamma log(p_t), written from the paper with probabilities."""
    p = torch.sigmoid(x)
    p_t = p * t + (1 - p) * (1 - t)
    a_t = 1.0 if alpha is None else alpha * t + (1 - alpha) * (1 - t)
    return -a_t * (1 - p_t) ** gamma * torch.log(p_t)


def reference(x: Tensor, t: Tensor, alpha: float | None, gamma: float) -> Tensor:
    """The same formula in float64 log space: log p = logsigmoid(x), log(1-p) = logsigmoid(-x)."""
    x, t = x.double(), t.double()
    log_p, log_q = F.logsigmoid(x), F.logsigmoid(-x)
    bce = -(t * log_p + (1 - t) * log_q)
    p_t = t * log_p.exp() + (1 - t) * log_q.exp()
    # 1 - p_t in log space for hard targets: log(1 - p) for t = 1, log p for t = 0.
    one_minus = torch.where(t == 1, log_q.exp(), torch.where(t == 0, log_p.exp(), 1 - p_t))
    a_t = 1.0 if alpha is None else alpha * t + (1 - alpha) * (1 - t)
    return a_t * one_minus**gamma * bce


def implementations() -> dict[str, tuple[str, Loss]]:
    found: dict[str, tuple[str, Loss]] = {
        "focalrec": (
            "focalrec",
            lambda x, t, a, g: focalrec.sigmoid_focal_loss(
                x, t, alpha=a, gamma=g, reduction="none"
            ),
        ),
        "paper": ("paper formula", paper_formula),
    }
    try:
        from fvcore.nn import sigmoid_focal_loss as fvcore_loss

        found["fvcore"] = (
            "fvcore, torchvision",
            lambda x, t, a, g: fvcore_loss(x, t, alpha=-1 if a is None else a, gamma=g),
        )
    except ImportError:
        print("fvcore not installed: left out")
    try:
        from kornia.losses import binary_focal_loss_with_logits

        found["kornia"] = (
            "kornia",
            lambda x, t, a, g: binary_focal_loss_with_logits(x, t, alpha=a, gamma=g),
        )
    except ImportError:
        print("kornia not installed: left out")
    return found


SATURATED = [-1e4, -1e3, -100.0, -30.0, -10.0, 0.0, 10.0, 30.0, 100.0, 1e3, 1e4]


def finite_gradients(fn: Loss, gamma: float) -> dict[str, object]:
    x = torch.tensor([SATURATED, SATURATED], requires_grad=True)
    t = torch.stack([torch.zeros(len(SATURATED)), torch.ones(len(SATURATED))])
    try:
        fn(x, t, 0.25, gamma).sum().backward()
    except Exception as err:
        return {"ok": False, "detail": f"error: {type(err).__name__}"}
    assert x.grad is not None
    bad = int((~torch.isfinite(x.grad)).sum())
    return {"ok": bad == 0, "detail": f"{bad} of {x.numel()} gradients non-finite"}


def value_error(fn: Loss, gamma: float) -> dict[str, object]:
    x = torch.linspace(-50, 50, 2001).repeat(2, 1)
    t = torch.stack([torch.zeros(2001), torch.ones(2001)])
    with torch.no_grad():
        got = fn(x, t, 0.25, gamma).double()
    ref = reference(x, t, 0.25, gamma)
    keep = ref > 1e-30  # inside float32's normal range
    rel = ((got - ref).abs() / ref)[keep]
    return {"max_rel_error": float(rel.max()), "entries": int(keep.sum())}


def half_precision(fn: Loss) -> dict[str, object]:
    x = torch.tensor([[-20.0, -3.0, 0.0, 3.0, 20.0]] * 2, dtype=torch.float16, requires_grad=True)
    t = torch.tensor([[0.0] * 5, [1.0] * 5], dtype=torch.float16)
    try:
        loss = fn(x, t, 0.25, 2.0)
        loss.sum().backward()
    except Exception as err:
        return {"ok": False, "detail": f"error: {type(err).__name__}"}
    assert x.grad is not None
    ref = reference(x.detach().float(), t.float(), 0.25, 2.0)
    err = float(((loss.detach().double() - ref).abs() / ref.clamp_min(1e-30)).max())
    ok = bool(torch.isfinite(loss).all() and torch.isfinite(x.grad).all()) and err < 1e-2
    return {
        "ok": ok,
        "detail": f"output {str(loss.dtype).removeprefix('torch.')}, max rel err {err:.1e}",
    }


def index_targets(fn: Loss) -> dict[str, object]:
    x = torch.randn(4, 7, generator=torch.Generator().manual_seed(0))
    idx = torch.tensor([[0, 3], [6, -1], [-1, -1], [2, 2]])
    dense = focalrec.index_list_to_dense(idx, 7).float()
    expected = reference(x, dense, 0.25, 2.0).sum()
    try:
        got = fn(x, idx, 0.25, 2.0).sum()
    except Exception as err:
        return {"ok": False, "detail": f"rejected ({type(err).__name__})"}
    ok = bool(torch.allclose(got.double(), expected, rtol=1e-5))
    return {"ok": ok, "detail": "same as dense" if ok else "accepted, wrong value"}


def saved_bytes(fn: Loss, rows: int, items: int, sparse: bool) -> dict[str, object]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, items, generator=gen, requires_grad=True)
    idx = torch.randint(0, items, (rows, 3), generator=gen)
    t = idx if sparse else focalrec.index_list_to_dense(idx, items).float()
    seen: dict[tuple[int, int], int] = {}

    def pack(tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        seen[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = fn(x, t, 0.25, 2.0).sum()
    # Tensors an autograd node holds outside save_for_backward (focalrec keeps the gradient it
    # computed in forward on its node) count too.
    todo, visited = [loss.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or id(node) in visited:
            continue
        visited.add(id(node))
        kept = getattr(node, "kept", None)
        if isinstance(kept, Tensor):
            storage = kept.untyped_storage()
            seen[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
        todo.extend(next_node for next_node, _ in node.next_functions)
    loss.backward()
    total = sum(seen.values())
    return {"bytes": total, "ratio_to_logits": total / (x.numel() * x.element_size())}


def bce_reduction(fn: Loss) -> dict[str, object]:
    gen = torch.Generator().manual_seed(1)
    x = (torch.randn(8, 50, generator=gen) * 5).requires_grad_()
    t = (torch.rand(8, 50, generator=gen) < 0.1).float()
    fn(x, t, None, 0.0).sum().backward()
    grad = x.grad
    x2 = x.detach().clone().requires_grad_()
    F.binary_cross_entropy_with_logits(x2, t, reduction="sum").backward()
    assert grad is not None
    assert x2.grad is not None
    value = fn(x.detach(), t, None, 0.0).sum()
    bce = F.binary_cross_entropy_with_logits(x.detach(), t, reduction="sum")
    return {
        "value_abs_diff": float((value - bce).abs()),
        "grad_max_abs_diff": float((grad - x2.grad).abs().max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True, help="where to write the results")
    parser.add_argument("--rows", type=int, default=512, help="rows for the saved-bytes check")
    parser.add_argument("--items", type=int, default=5501, help="items for the saved-bytes check")
    args = parser.parse_args()
    results = []
    for key, (label, fn) in implementations().items():
        row = {
            "key": key,
            "label": label,
            "grad_gamma_0.5": finite_gradients(fn, 0.5),
            "grad_gamma_2": finite_gradients(fn, 2.0),
            "value_error_gamma_2": value_error(fn, 2.0),
            "value_error_gamma_0.5": value_error(fn, 0.5),
            "float16": half_precision(fn),
            "index_targets": index_targets(fn),
            "saved_dense": saved_bytes(fn, args.rows, args.items, sparse=False),
            "bce_at_gamma_0": bce_reduction(fn),
        }
        if key == "focalrec":
            row["saved_sparse"] = saved_bytes(fn, args.rows, args.items, sparse=True)
        results.append(row)
        print(json.dumps(row))
    out = {
        "config": {
            "saturated_logits": SATURATED,
            "value_grid": "logits linspace(-50, 50, 2001), targets 0 and 1, alpha 0.25",
            "saved_bytes_logits": [args.rows, args.items],
            "torch": torch.__version__,
        },
        "implementations": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
