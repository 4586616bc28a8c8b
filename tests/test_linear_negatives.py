"""linear_sigmoid_focal_loss with sampled ``negatives`` against the gathered unfused computation:
the logits ``F.linear`` of a small catalogue, the scored columns picked out in a plain Python
loop, and the focal terms written out in float64."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from focalrec import LinearFocalLoss, linear_sigmoid_focal_loss, sample_negatives
from focalrec._linear import sampled
from focalrec._linear.plan import LINEAR_REDUCTIONS

Tensor = torch.Tensor
N, D, C = 6, 4, 13


def layer(n: int, d: int, c: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(c, d, generator=g, dtype=torch.float64)
    b = torch.randn(c, generator=g, dtype=torch.float64) - 1.0
    return x, w, b


def targets() -> Tensor:
    """Repeats, padding, an empty row, ids at both ends of the catalogue."""
    return torch.tensor(
        [[1, 3, -1], [2, 2, -1], [-1, -1, -1], [0, 12, 5], [4, -1, 4], [12, 11, 10]]
    )


def reference(
    x: Tensor,
    w: Tensor,
    b: Tensor | None,
    target: Tensor,
    negatives: Tensor,
    *,
    alpha: float | Tensor | None = 0.25,
    gamma: float = 2.0,
    reduction: str = "mean",
    weight: Tensor | None = None,
    accidental_hits: str = "remove",
    item_offset: int = 0,
) -> Tensor:
    """The loss from the materialized ``(N, C)`` logits, their scored entries chosen one by one
    and each focal term written out in float64 (autograd differentiates it)."""
    z = F.linear(x, w, b)
    n, c = z.shape
    wfull = None if weight is None else weight.double().expand(n, c)
    total = z.sum() * 0.0  # in the graph even when nothing is scored
    count = 0.0
    positives = 0.0
    for i in range(n):
        pos: list[int] = []
        for j in target[i].tolist():
            if j >= 0 and j not in pos:
                pos.append(j)
        drawn = negatives.tolist() if negatives.ndim == 1 else negatives[i].tolist()
        entries = [(j, 1) for j in pos]
        entries += [(j, 0) for j in drawn if not (accidental_hits == "remove" and j in pos)]
        for j, t in entries:
            col = j - item_offset
            if not 0 <= col < c:
                continue  # another range's item
            wt = 1.0 if wfull is None else float(wfull[i, col])
            s = z[i, col]
            p = torch.sigmoid(s)
            pt = p if t else 1 - p
            bce = -F.logsigmoid(s) if t else -F.logsigmoid(-s)
            if alpha is None:
                at = 1.0
            else:
                a = float(alpha[col]) if isinstance(alpha, Tensor) else alpha
                at = a if t else 1 - a
            total = total + wt * at * (1 - pt) ** gamma * bce
            count += wt
            positives += wt * t
    if reduction == "mean":
        return total / (count if count > 0 else 1.0)
    if reduction == "sum_over_positives":
        return total / max(positives, 1.0)
    return total


def run(
    x: Tensor, w: Tensor, b: Tensor | None, fn: Any, **kwargs: Any
) -> tuple[Tensor, list[Tensor]]:
    """The loss and the gradients of ``x``, ``w`` and ``b``; with ``sparse_grad=True``, those of
    ``w`` and ``b`` checked to be sparse and made dense."""
    tensors = [t.clone().requires_grad_() for t in (x, w, b) if t is not None]
    bias = tensors[2] if b is not None else None
    loss = fn(tensors[0], tensors[1], linear_bias=bias, **kwargs)
    grads = list(torch.autograd.grad(loss, tensors))
    if kwargs.get("sparse_grad", False) and w.shape[0] > 0:
        layouts = [g.layout for g in grads]
        assert layouts == [torch.strided] + [torch.sparse_coo] * (len(grads) - 1), layouts
        grads = [g.to_dense() for g in grads]
    return loss.detach(), grads


def assert_same(got: tuple[Tensor, list[Tensor]], want: tuple[Tensor, list[Tensor]]) -> None:
    torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=1e-14)
    for g, e in zip(got[1], want[1], strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-14)


def fused(x: Tensor, w: Tensor, *, linear_bias: Tensor | None, **kwargs: Any) -> Tensor:
    target, negatives = kwargs.pop("target"), kwargs.pop("negatives")
    return linear_sigmoid_focal_loss(
        x, w, target, linear_bias=linear_bias, negatives=negatives, **kwargs
    )


def unfused(x: Tensor, w: Tensor, *, linear_bias: Tensor | None, **kwargs: Any) -> Tensor:
    kwargs.pop("num_items", None)
    kwargs.pop("sparse_grad", None)
    target, negatives = kwargs.pop("target"), kwargs.pop("negatives")
    return reference(x, w, linear_bias, target, negatives, **kwargs)


def per_row_negatives() -> Tensor:
    """Duplicates, accidental hits (row 0 draws its positive 3, row 3 its 12), both ends."""
    return torch.tensor(
        [
            [3, 3, 0, 7],
            [2, 9, 9, 12],
            [0, 1, 2, 3],
            [12, 12, 6, 0],
            [4, 5, 6, 7],
            [8, 12, 0, 11],
        ]
    )


ALPHAS = {"0.25": 0.25, "none": None, "per-item": "per-item"}


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize(
    ("reduction", "shared", "hits", "alpha", "bias"),
    list(itertools.product(LINEAR_REDUCTIONS, (False, True), ("remove", "keep"), ALPHAS, (1, 0))),
)
def test_matches_gathered_unfused(
    reduction: str, shared: bool, hits: str, alpha: str, bias: int, sparse: bool
) -> None:
    x, w, b = layer(N, D, C)
    a: float | Tensor | None = ALPHAS[alpha]  # type: ignore[assignment]
    if a == "per-item":
        a = torch.rand(C, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    neg = torch.tensor([3, 0, 12, 12, 7]) if shared else per_row_negatives()
    kwargs = {
        "target": targets(),
        "negatives": neg,
        "alpha": a,
        "reduction": reduction,
        "accidental_hits": hits,
    }
    got = run(x, w, b if bias else None, fused, sparse_grad=sparse, **kwargs)
    want = run(x, w, b if bias else None, unfused, **kwargs)
    assert_same(got, want)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 3.5])
@pytest.mark.parametrize(
    "weight",
    ["per-item", "per-row", "full-bool", "none"],
)
def test_weight_and_gamma(gamma: float, weight: str) -> None:
    x, w, b = layer(N, D, C, seed=2)
    g = torch.Generator().manual_seed(3)
    wt = {
        "per-item": torch.rand(C, generator=g, dtype=torch.float64),
        "per-row": torch.rand(N, 1, generator=g, dtype=torch.float64),
        "full-bool": torch.rand(N, C, generator=g) > 0.3,
        "none": None,
    }[weight]
    for reduction in LINEAR_REDUCTIONS:
        kwargs = {
            "target": targets(),
            "negatives": per_row_negatives(),
            "gamma": gamma,
            "weight": wt,
            "reduction": reduction,
        }
        assert_same(run(x, w, b, fused, **kwargs), run(x, w, b, unfused, **kwargs))


@pytest.mark.parametrize("reduction", LINEAR_REDUCTIONS)
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("sparse", [False, True])
def test_item_range_borders(reduction: str, shared: bool, sparse: bool) -> None:
    """A layer holding items [5, 10) of 13: ids 4, 5, 9 and 10 sit at the range's borders, and
    the loss is that range's share of the whole catalogue's terms."""
    x, w, b = layer(N, D, C, seed=4)
    lo, hi = 5, 10
    neg = torch.tensor([4, 5, 9, 10, 0, 12]) if shared else per_row_negatives() % 7 + 4
    alpha = torch.rand(C, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    common = {
        "target": targets(),
        "negatives": neg,
        "reduction": reduction,
    }
    got = run(
        x,
        w[lo:hi],
        b[lo:hi],
        fused,
        alpha=alpha[lo:hi],
        item_offset=lo,
        num_items=C,
        sparse_grad=sparse,
        **common,
    )
    want = run(x, w[lo:hi], b[lo:hi], unfused, alpha=alpha[lo:hi], item_offset=lo, **common)
    assert_same(got, want)


def test_empty_cases() -> None:
    x, w, b = layer(N, D, C)
    empty_rows = torch.full((N, 2), -1)
    for neg in (torch.zeros(N, 0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)):
        for reduction in LINEAR_REDUCTIONS:
            kwargs = {"target": targets(), "negatives": neg, "reduction": reduction}
            assert_same(run(x, w, b, fused, **kwargs), run(x, w, b, unfused, **kwargs))
    kwargs = {"target": empty_rows, "negatives": per_row_negatives()}
    assert_same(run(x, w, b, fused, **kwargs), run(x, w, b, unfused, **kwargs))
    # No rows; an empty item range (its gradients are empty, the loss 0).
    loss = linear_sigmoid_focal_loss(x[:0], w, targets()[:0], negatives=torch.tensor([1, 2]))
    assert float(loss.detach()) == 0.0
    w0 = w[:0].clone().requires_grad_()
    x0 = x.clone().requires_grad_()
    loss = linear_sigmoid_focal_loss(
        x0, w0, targets(), negatives=per_row_negatives(), item_offset=3, num_items=C
    )
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert w0.grad is not None
    assert w0.grad.shape == (0, D)
    assert x0.grad is not None
    assert not x0.grad.any()
    # sparse_grad: the empty range's gradients are dense (and empty); a full range's are sparse
    # even when no row of it is scored, and then hold no entry.
    w0.grad = None
    linear_sigmoid_focal_loss(
        x0, w0, targets(), negatives=per_row_negatives(), item_offset=3, num_items=C,
        sparse_grad=True,
    ).backward()  # fmt: skip
    assert w0.grad is not None
    assert w0.grad.layout == torch.strided
    assert w0.grad.shape == (0, D)
    w1 = w.clone().requires_grad_()
    linear_sigmoid_focal_loss(
        x, w1, torch.full((N, 1), -1), negatives=torch.zeros(N, 0, dtype=torch.int64),
        sparse_grad=True,
    ).backward()  # fmt: skip
    assert w1.grad is not None
    assert w1.grad.layout == torch.sparse_coo
    assert w1.grad.shape == w.shape
    assert not w1.grad.to_dense().any()


def test_all_rows_hit_remove_mean_is_zero_not_nan() -> None:
    """Every entry masked out (no positives, every negative a removed hit): 0, as the full
    layer's fully masked mean."""
    x, w, _ = layer(2, D, C)
    target = torch.tensor([[3], [4]])
    loss = linear_sigmoid_focal_loss(
        x, w, target, negatives=torch.tensor([[3, 3], [4, 4]]), weight=torch.zeros(C)
    )
    assert float(loss.detach()) == 0.0


def test_gradcheck() -> None:
    x, w, b = layer(4, 3, 9, seed=6)
    target = torch.tensor([[1, 8, -1], [2, 2, -1], [-1, -1, -1], [0, 5, 3]])
    neg = torch.tensor([[1, 4, 4], [0, 8, 7], [6, 6, 1], [3, 2, 2]])
    alpha = torch.rand(9, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    for hits, reduction in itertools.product(("remove", "keep"), LINEAR_REDUCTIONS):

        def fn(x: Tensor, w: Tensor, b: Tensor, hits: str = hits, red: str = reduction) -> Tensor:
            return linear_sigmoid_focal_loss(
                x,
                w,
                target,
                linear_bias=b,
                negatives=neg,
                alpha=alpha,
                gamma=1.5,
                reduction=red,  # type: ignore[arg-type]
                accidental_hits=hits,  # type: ignore[arg-type]
            )

        inputs = tuple(t.clone().requires_grad_() for t in (x, w, b))
        assert torch.autograd.gradcheck(fn, inputs)


def test_second_derivatives() -> None:
    """The sampled path is autograd operations around sigmoid_focal_loss: gradgradcheck holds."""
    x, w, b = layer(3, 4, 9, seed=10)
    target = torch.tensor([[1, -1], [2, 5], [3, 3]])
    neg = torch.tensor([[0, 4, 4], [8, 2, 7], [6, 1, 3]])

    def fn(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
        return linear_sigmoid_focal_loss(x, w, target, linear_bias=b, negatives=neg, gamma=1.5)

    inputs = tuple(t.clone().requires_grad_() for t in (x, w, b))
    assert torch.autograd.gradgradcheck(fn, inputs)


@st.composite
def cases(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(0, 5))
    c = draw(st.integers(1, 9))
    m = draw(st.integers(0, 4))
    k = draw(st.integers(0, 5))
    lo = draw(st.integers(0, 3))
    hi = draw(st.integers(lo, lo + c))
    shared = draw(st.booleans())
    catalogue = lo + c + draw(st.integers(0, 3))
    ids = st.integers(-1, catalogue - 1)
    target = torch.tensor(draw(st.lists(st.lists(ids, min_size=m, max_size=m), min_size=n,
                                        max_size=n)), dtype=torch.int64).reshape(n, m)  # fmt: skip
    neg_ids = st.integers(0, catalogue - 1)
    shape = (k,) if shared else (n, k)
    count = k if shared else n * k
    neg = torch.tensor(draw(st.lists(neg_ids, min_size=count, max_size=count)), dtype=torch.int64)
    return {
        "n": n,
        "c": hi - lo,
        "lo": lo,
        "catalogue": catalogue,
        "target": target,
        "negatives": neg.reshape(shape),
        "reduction": draw(st.sampled_from(LINEAR_REDUCTIONS)),
        "accidental_hits": draw(st.sampled_from(["remove", "keep"])),
        "gamma": draw(st.sampled_from([0.0, 1.0, 2.0])),
        "sparse_grad": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


@settings(max_examples=60)
@given(cases())
def test_property_matches_gathered_unfused(case: dict[str, Any]) -> None:
    x, w, b = layer(case["n"], 3, case["c"], seed=case["seed"])
    common = {
        "target": case["target"],
        "negatives": case["negatives"],
        "reduction": case["reduction"],
        "accidental_hits": case["accidental_hits"],
        "gamma": case["gamma"],
        "item_offset": case["lo"],
    }
    got = run(
        x, w, b, fused, num_items=case["catalogue"], sparse_grad=case["sparse_grad"], **common
    )
    want = run(x, w, b, unfused, **common)
    assert_same(got, want)


def test_float32_and_module() -> None:
    """Float32 to float32 rounding; the module's ``negatives`` is the function's."""
    torch.manual_seed(0)
    head = LinearFocalLoss(D, 50, accidental_hits="keep")
    x = torch.randn(8, D)
    target = torch.randint(-1, 50, (8, 3))
    neg = sample_negatives(8, 16, 50, generator=torch.Generator().manual_seed(0))
    got = head(x, target, negatives=neg)
    want = linear_sigmoid_focal_loss(
        x, head.weight, target, linear_bias=head.bias, negatives=neg, accidental_hits="keep",
        alpha=0.25,
    )  # fmt: skip
    assert torch.equal(got, want)
    assert got.dtype == torch.float32
    ref = reference(
        x.double(), head.weight.double(), head.bias.double(), target, neg, accidental_hits="keep"
    )
    torch.testing.assert_close(got.double(), ref.detach(), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="accidental_hits"):
        LinearFocalLoss(D, 50, accidental_hits="drop")  # type: ignore[arg-type]


class LargestOutput(TorchDispatchMode):
    """Records the most elements of any tensor an operation returns (of a sparse one, the
    elements it stores)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, Tensor):  # a sparse tensor: its stored values
                size = t._values().numel() if t.layout == torch.sparse_coo else t.numel()
                self.largest = max(self.largest, size)
        return out


@pytest.mark.parametrize("sparse", [False, True])
def test_no_catalogue_sized_logits(sparse: bool) -> None:
    """A catalogue of 10**6 items with d = 4 and 64 rows: no operation returns a tensor larger
    than the weight (4 * 10**6 elements), while (N, C) would be 6.4 * 10**7; with
    ``sparse_grad=True``, none as large as the weight or the bias."""
    n, d, c = 64, 4, 10**6
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g, requires_grad=True)
    w = torch.randn(c, d, generator=g).requires_grad_()
    b = torch.zeros(c, requires_grad=True)
    target = torch.randint(0, c, (n, 2), generator=g)
    neg = sample_negatives(n, 32, c, exclude=target, generator=g)
    with LargestOutput() as mode:
        loss = linear_sigmoid_focal_loss(
            x, w, target, linear_bias=b, negatives=neg, sparse_grad=sparse
        )
        loss.backward()
    assert mode.largest < (c if sparse else c * d + 1)
    assert w.grad is not None
    assert w.grad.layout == (torch.sparse_coo if sparse else torch.strided)
    assert int((w.grad.to_dense() != 0).any(dim=1).sum()) <= n * (2 + 32)


@pytest.mark.parametrize("form", ["autocast", "bfloat16"])
def test_half_precision(form: str) -> None:
    """Under autocast (bfloat16 matmuls) and with bfloat16 tensors: the float32 loss to bfloat16
    rounding, a float32 result, and each gradient in its tensor's dtype."""
    x, w, b = (t.float() for t in layer(N, D, C, seed=9))
    kwargs = {"target": targets(), "negatives": per_row_negatives()}
    want = run(x, w, b, fused, **kwargs)
    if form == "autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = run(x, w, b, fused, **kwargs)
        dtype = torch.float32
    else:
        got = run(x.bfloat16(), w.bfloat16(), b.bfloat16(), fused, **kwargs)
        dtype = torch.bfloat16
    assert got[0].dtype == torch.float32
    torch.testing.assert_close(got[0], want[0], rtol=2e-2, atol=1e-3)
    for g, e in zip(got[1], want[1], strict=True):
        assert g.dtype == dtype
        torch.testing.assert_close(g.float(), e, rtol=5e-2, atol=5e-3)


def test_compile_fullgraph_matches_eager() -> None:
    x, w, b = layer(N, D, C, seed=8)
    kwargs = {"target": targets(), "negatives": per_row_negatives(), "alpha": 0.25}
    compiled = torch.compile(fused, fullgraph=True, backend="eager")
    got = run(x, w, b, compiled, **kwargs)
    assert_same(got, run(x, w, b, fused, **kwargs))


def test_compile_fullgraph_sparse_grad() -> None:
    x, w, b = layer(N, D, C, seed=8)
    kwargs = {"target": targets(), "negatives": per_row_negatives(), "sparse_grad": True}
    compiled = torch.compile(fused, fullgraph=True, backend="eager")
    assert_same(run(x, w, b, compiled, **kwargs), run(x, w, b, fused, **kwargs))


def test_sparse_grad_in_training() -> None:
    """The sparse gradients hold the scored rows only, accumulate in place into a dense
    ``.grad`` kept between steps (equal to the dense gradients' sum), and drive
    ``torch.optim.SparseAdam``, which moves the scored rows only; the module passes the option
    to calls with ``negatives`` and gives dense gradients over the whole catalogue."""
    torch.manual_seed(0)
    n, d, c = 8, 4, 1000
    dense_head = LinearFocalLoss(d, c)
    head = LinearFocalLoss(d, c, sparse_grad=True)
    head.load_state_dict(dense_head.state_dict())
    assert "sparse_grad=True" in repr(head)
    x = torch.randn(n, d)
    target = torch.randint(0, c, (n, 2))
    neg = sample_negatives(n, 16, c, exclude=target, generator=torch.Generator().manual_seed(0))
    head(x, target, negatives=neg).backward()
    assert head.weight.grad is not None
    assert head.bias is not None
    assert head.bias.grad is not None
    assert head.weight.grad.layout == torch.sparse_coo
    assert head.bias.grad.layout == torch.sparse_coo
    scored = torch.cat([target, neg], dim=1).unique()
    assert set(head.weight.grad.coalesce().indices()[0].tolist()) == set(scored.tolist())
    # In place into a kept dense gradient: two steps' sum.
    for p in head.parameters():
        p.grad = torch.zeros_like(p)
    for _ in range(2):
        head(x, target, negatives=neg).backward()
        dense_head(x, target, negatives=neg).backward()
    for p, q in zip(head.parameters(), dense_head.parameters(), strict=True):
        assert p.grad is not None
        assert p.grad.layout == torch.strided
        torch.testing.assert_close(p.grad, q.grad)
    # SparseAdam moves the scored rows only.
    head.zero_grad(set_to_none=True)
    before = head.weight.detach().clone()
    optimizer = torch.optim.SparseAdam(list(head.parameters()), lr=0.1)
    head(x, target, negatives=neg).backward()
    optimizer.step()
    moved = (head.weight.detach() != before).any(dim=1).nonzero().squeeze(1)
    assert set(moved.tolist()) <= set(scored.tolist())
    assert len(moved) > 0
    # Without negatives: the whole catalogue, dense gradients.
    head.zero_grad(set_to_none=True)
    head(x, target).backward()
    assert head.weight.grad is not None
    assert head.weight.grad.layout == torch.strided


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("block_bytes", [1, 200, 1 << 20])
def test_blocks_of_gathered_rows(
    sparse: bool, block_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gathered rows scored a row at a time, a few rows at a time and all at once: the same
    loss and gradients as the reference (and as the operations torch.func runs), also through a
    second derivative."""
    monkeypatch.setattr(sampled, "_BLOCK_BYTES", block_bytes)
    x, w, b = layer(N, D, C, seed=11)
    kwargs = {"target": targets(), "negatives": per_row_negatives()}
    got = run(x, w, b, fused, sparse_grad=sparse, **kwargs)
    assert_same(got, run(x, w, b, unfused, **kwargs))
    if not sparse:
        inputs = tuple(t.clone().requires_grad_() for t in (x, w, b))
        assert torch.autograd.gradgradcheck(
            lambda x, w, b: fused(x, w, linear_bias=b, **kwargs), inputs
        )


def test_torch_func_transforms_match_autograd() -> None:
    """``torch.func`` runs the sampled loss as operations: its gradient, forward-mode Jacobian,
    Hessian and ``vmap`` agree with autograd and a loop."""
    x, w, b = layer(N, D, C, seed=12)
    target, neg = targets(), per_row_negatives()

    def loss_of(w: Tensor) -> Tensor:
        return linear_sigmoid_focal_loss(x, w, target, linear_bias=b, negatives=neg)

    wg = w.clone().requires_grad_()
    (want,) = torch.autograd.grad(loss_of(wg), wg, create_graph=True)
    torch.testing.assert_close(torch.func.grad(loss_of)(w), want.detach())
    torch.testing.assert_close(torch.func.jacfwd(loss_of)(w), want.detach())
    row = torch.autograd.grad(want[3, 1], wg)[0]
    torch.testing.assert_close(torch.func.hessian(loss_of)(w)[3, 1], row)
    xs = torch.stack([x, 2 * x])
    batched = torch.func.vmap(
        lambda x: linear_sigmoid_focal_loss(x, w, target, linear_bias=b, negatives=neg)
    )(xs)
    looped = torch.stack(
        [linear_sigmoid_focal_loss(x, w, target, linear_bias=b, negatives=neg) for x in xs]
    )
    torch.testing.assert_close(batched, looped)


def test_errors() -> None:
    x, w, _ = layer(N, D, C)
    t = targets()
    call = linear_sigmoid_focal_loss
    with pytest.raises(TypeError, match=r"`negatives`.*integer"):
        call(x, w, t, negatives=torch.zeros(N, 3))
    with pytest.raises(TypeError, match=r"`negatives` must be a torch\.Tensor"):
        call(x, w, t, negatives=[1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`negatives` must have shape \(k,\)"):
        call(x, w, t, negatives=torch.zeros(N + 1, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"`negatives` must have shape"):
        call(x, w, t, negatives=torch.zeros(N, 3, 1, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"`negatives` holds item ids in \[0, 13\]"):
        call(x, w, t, negatives=torch.tensor([0, 13]))
    with pytest.raises(ValueError, match=r"`negatives` holds item ids in \[-1, 2\]"):
        call(x, w, t, negatives=torch.tensor([-1, 2]))
    # Ids of another range are fine where num_items says the catalogue holds them.
    call(x, w, t, negatives=torch.tensor([0, 20]), num_items=30)
    with pytest.raises(ValueError, match="`target` must be an index list"):
        call(x, w, torch.zeros(N, C), negatives=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="`accidental_hits` must be one of"):
        call(x, w, t, negatives=torch.tensor([0, 1]), accidental_hits="drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`accidental_hits` must be one of"):
        call(x, w, t, accidental_hits="drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`reduction`"):
        call(x, w, t, negatives=torch.tensor([0]), reduction="none")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`target` holds item indices"):
        call(x, w, t + 20, negatives=torch.tensor([0]))
    with pytest.raises(TypeError, match="`linear_weight` must have the dtype"):
        call(x, w.float(), t, negatives=torch.tensor([0]))
    if torch.device("meta") != x.device:
        with pytest.raises(TypeError, match="`negatives` must be on the device of `input`"):
            call(x, w, t, negatives=torch.tensor([0], device="meta"))
    with pytest.raises(ValueError, match=r"`sparse_grad=True` needs `negatives`"):
        call(x, w, t, sparse_grad=True)
    with pytest.raises(TypeError, match="`sparse_grad` must be a bool, got int"):
        call(x, w, t, negatives=torch.tensor([0]), sparse_grad=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`sparse_grad` must be a bool, got str"):
        LinearFocalLoss(D, C, sparse_grad="yes")  # type: ignore[arg-type]
    # validate_args=False skips the read of the ids.
    call(x, w, t, negatives=torch.tensor([0, 12]), validate_args=False)
    with pytest.raises(ValueError, match="the loss is NaN"):
        call(x, w.clone().fill_(float("nan")), t, negatives=torch.tensor([0]))
