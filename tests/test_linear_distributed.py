"""Two processes on CPU (gloo), the catalogue split by item ranges: the loss and its gradients
equal the single-process result (float64: to 1e-12 relative, the summation order; float32: to
float32 rounding)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from focalrec import (
    LinearFocalLoss,
    index_list_to_dense,
    linear_sigmoid_focal_loss,
    sigmoid_focal_loss,
)
from focalrec._linear.plan import LINEAR_REDUCTIONS

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this torch build",
)

WORLD = 2
N, D, C = 13, 5, 23
CUTS = (0, 7, C)  # uneven ranges: rank 0 holds items 0-6, rank 1 items 7-22
CASES = [(r, k, dt) for r in LINEAR_REDUCTIONS for k in ("index", "dense") for dt in ("64", "32")]


def _data(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    index = torch.randint(-1, C, (N, 4), generator=g)
    index[0] = torch.tensor([1, 20, 1, -1])  # positives on both ranges, a repeat
    return {
        "x": torch.randn(N, D, generator=g, dtype=torch.float64).to(dtype),
        "w": (torch.randn(C, D, generator=g, dtype=torch.float64) * 0.8).to(dtype),
        "b": (torch.randn(C, generator=g, dtype=torch.float64) - 3.0).to(dtype),
        "index": index,
        "dense": index_list_to_dense(index, C, dtype=dtype),
        "alpha": torch.rand(C, generator=g, dtype=torch.float64).to(dtype),
        "weight": torch.rand(C, generator=g, dtype=torch.float64).to(dtype),
    }


def _run(
    d: dict[str, torch.Tensor],
    lo: int,
    hi: int,
    reduction: str,
    kind: str,
    group: object,
    infer: bool = False,
) -> dict[str, torch.Tensor]:
    """The fused loss over this rank's items; ``infer``: its ``item_offset`` left out, found
    by the call from the ranks' numbers of items."""
    x = d["x"].clone().requires_grad_()
    w = d["w"][lo:hi].clone().requires_grad_()
    b = d["b"][lo:hi].clone().requires_grad_()
    target = d["index"] if kind == "index" else d["dense"][:, lo:hi]
    loss = linear_sigmoid_focal_loss(
        x,
        w,
        target,
        linear_bias=b,
        alpha=d["alpha"][lo:hi],
        weight=d["weight"][lo:hi],
        reduction=reduction,  # type: ignore[arg-type]
        chunk_size=(4, 3),
        item_offset=None if infer else lo,
        process_group=group,  # type: ignore[arg-type]
    )
    loss.backward()
    assert x.grad is not None
    assert w.grad is not None
    assert b.grad is not None
    return {"loss": loss.detach(), "x": x.grad, "w": w.grad, "b": b.grad}


SAMPLED = [(r, s) for r in LINEAR_REDUCTIONS for s in (False, True)]


def _sampled(
    d: dict[str, torch.Tensor],
    lo: int,
    hi: int,
    reduction: str,
    shared: bool,
    group: object,
    sparse_grad: bool = False,
) -> dict[str, torch.Tensor]:
    """The fused loss with sampled negatives over items ``[lo, hi)``: catalogue ids on both
    ranges, at the border of the split (6 and 7), repeated and equal to row 0's positives
    (``sparse_grad``: the weight's and bias's sparse gradients, made dense)."""
    g = torch.Generator().manual_seed(1)
    neg = torch.tensor([6, 7, 7, 20, 1]) if shared else torch.randint(0, C, (N, 5), generator=g)
    if not shared:
        neg[0] = torch.tensor([1, 20, 6, 7, 7])
    x = d["x"].clone().requires_grad_()
    w = d["w"][lo:hi].clone().requires_grad_()
    b = d["b"][lo:hi].clone().requires_grad_()
    loss = linear_sigmoid_focal_loss(
        x,
        w,
        d["index"],
        linear_bias=b,
        alpha=d["alpha"][lo:hi],
        weight=d["weight"][lo:hi],
        reduction=reduction,  # type: ignore[arg-type]
        item_offset=lo,
        num_items=C,
        process_group=group,  # type: ignore[arg-type]
        negatives=neg,
        sparse_grad=sparse_grad,
    )
    gx, gw, gb = torch.autograd.grad(loss, (x, w, b))
    if sparse_grad:
        assert gw.layout == gb.layout == torch.sparse_coo
        gw, gb = gw.to_dense(), gb.to_dense()
    return {"loss": loss.detach(), "x": gx, "w": gw, "b": gb}


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        lo, hi = CUTS[rank], CUTS[rank + 1]
        results: dict[str, object] = {}
        for reduction, kind, bits in CASES:
            d = _data(torch.float64 if bits == "64" else torch.float32)
            results[f"{reduction}-{kind}-{bits}"] = _run(
                d, lo, hi, reduction, kind, dist.group.WORLD, infer=bits == "32"
            )
        # The module splits the catalogue itself: 12 items on rank 0, 11 on rank 1, and
        # initializes its range as the unsplit layer would.
        torch.manual_seed(0)
        init = LinearFocalLoss(D, C, prior=None, process_group=dist.group.WORLD)
        assert init.bias is not None
        results["init"] = {"w": init.weight.detach(), "b": init.bias.detach()}
        results["init"]["next"] = torch.rand(4)  # the generator, after the initialization
        d = _data(torch.float64)
        head = LinearFocalLoss(
            D, C, alpha=d["alpha"], process_group=dist.group.WORLD, dtype=torch.float64
        )
        assert head.bias is not None
        start, end = head.item_offset, head.item_offset + head.num_items_local
        with torch.no_grad():
            head.weight.copy_(d["w"][start:end])
            head.bias.copy_(d["b"][start:end])
        x = d["x"].clone().requires_grad_()
        loss = head(x, d["index"])
        loss.backward()
        results["module"] = {
            "loss": loss.detach(),
            "x": x.grad,
            "w": head.weight.grad,
            "b": head.bias.grad,
            "range": torch.tensor([start, end]),
        }
        results["compiled"] = _compiled_over_group(lo, hi)
        for reduction, shared in SAMPLED:
            results[f"sampled-{reduction}-{shared}"] = _sampled(  # sparse on the ranks
                _data(torch.float64), lo, hi, reduction, shared, dist.group.WORLD, True
            )
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _compiled_over_group(lo: int, hi: int) -> dict[str, torch.Tensor]:
    """Under torch.compile the call over a process group runs eagerly (a graph break, the
    same numbers); with ``fullgraph=True`` compiling it raises, naming the reason."""
    d = _data(torch.float32)

    def step(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return linear_sigmoid_focal_loss(
            torch.tanh(x),
            w,
            d["index"],
            linear_bias=b,
            chunk_size=(4, 3),
            item_offset=lo,
            process_group=dist.group.WORLD,
        )

    def loss_and_grads(fn: Callable[..., torch.Tensor]) -> list[torch.Tensor]:
        x, w, b = (t.clone().requires_grad_() for t in (d["x"], d["w"][lo:hi], d["b"][lo:hi]))
        loss = fn(x, w, b)
        return [loss.detach(), *torch.autograd.grad(loss, (x, w, b))]

    def sampled_step(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return linear_sigmoid_focal_loss(
            torch.tanh(x),
            w,
            d["index"],
            linear_bias=b,
            item_offset=lo,
            num_items=C,
            process_group=dist.group.WORLD,
            negatives=torch.tensor([0, 6, 7, 22]),
        )

    out: dict[str, torch.Tensor] = {}
    for name, fn in (("", step), ("sampled_", sampled_step)):
        torch._dynamo.reset()
        compiled = loss_and_grads(torch.compile(fn, backend="eager"))
        eager = loss_and_grads(fn)
        torch._dynamo.reset()
        try:
            loss_and_grads(torch.compile(fn, backend="eager", fullgraph=True))
            refused = False
        except torch._dynamo.exc.Unsupported as error:
            refused = "process_group runs eagerly under torch.compile" in str(error)
        same = all(torch.equal(a, b) for a, b in zip(compiled, eager, strict=True))
        out[f"{name}same"] = torch.tensor(same)
        out[f"{name}refused"] = torch.tensor(refused)
    return out


def _single(
    d: dict[str, torch.Tensor], reduction: str, kind: str, weighted: bool = True
) -> dict[str, torch.Tensor]:
    """The whole catalogue in one process, unfused."""
    x, w, b = (d[k].clone().requires_grad_() for k in ("x", "w", "b"))
    loss = sigmoid_focal_loss(
        F.linear(x, w, b),
        d["index"] if kind == "index" else d["dense"],
        alpha=d["alpha"],
        weight=d["weight"] if weighted else None,
        reduction=reduction,  # type: ignore[arg-type]
    )
    gx, gw, gb = torch.autograd.grad(loss, (x, w, b))
    return {"loss": loss.detach(), "x": gx, "w": gw, "b": gb}


def _assert_matches(
    ranks: list[dict[str, torch.Tensor]], expected: dict[str, torch.Tensor], bits: str
) -> None:
    tol = {"rtol": 1e-12, "atol": 1e-14} if bits == "64" else {"rtol": 1e-5, "atol": 1e-7}
    for got in ranks:  # every rank has the whole loss and the whole input gradient
        torch.testing.assert_close(got["loss"], expected["loss"], **tol)
        torch.testing.assert_close(got["x"], expected["x"], **tol)
    for name in ("w", "b"):  # each rank has its own range's gradient
        torch.testing.assert_close(torch.cat([r[name] for r in ranks]), expected[name], **tol)


def test_two_item_ranges_match_one_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for reduction, kind, bits in CASES:
        d = _data(torch.float64 if bits == "64" else torch.float32)
        key = f"{reduction}-{kind}-{bits}"
        _assert_matches([r[key] for r in ranks], _single(d, reduction, kind), bits)
    torch.manual_seed(0)
    linear = torch.nn.Linear(D, C)
    after = torch.rand(4)
    for name, whole in (("w", linear.weight), ("b", linear.bias)):
        assert torch.equal(torch.cat([r["init"][name] for r in ranks]), whole.detach())
    for r in ranks:
        assert torch.equal(r["init"]["next"], after)
    for r in ranks:
        for name in ("", "sampled_"):  # the full and the sampled layer
            assert bool(r["compiled"][f"{name}same"])
            assert bool(r["compiled"][f"{name}refused"])
    for reduction, shared in SAMPLED:  # sampled negatives: the one-process sampled loss
        expected = _sampled(_data(torch.float64), 0, C, reduction, shared, None)
        _assert_matches([r[f"sampled-{reduction}-{shared}"] for r in ranks], expected, "64")
    module = [r["module"] for r in ranks]
    assert [m["range"].tolist() for m in module] == [[0, 12], [12, 23]]
    expected = _single(_data(torch.float64), "mean", "index", weighted=False)
    _assert_matches(module, expected, "64")
