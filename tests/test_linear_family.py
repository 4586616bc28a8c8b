"""The fused layer for the whole sigmoid family: ASL and positive weights, over the whole
catalogue, over sampled negatives, compiled and as a module, each against an independent
float64 reference."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import focalrec as fr

N, D, C = 6, 5, 23


def _layer(seed: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(N, D, generator=g, dtype=dtype) * 2).requires_grad_()
    w = torch.randn(C, D, generator=g, dtype=dtype).requires_grad_()
    b = torch.randn(C, generator=g, dtype=dtype).requires_grad_()
    return x, w, b


def _index_target(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1)
    t = torch.randint(-1, C, (N, 3), generator=g)
    t[0] = -1  # a row without positives
    return t


def _terms(z: torch.Tensor, labels: torch.Tensor, options: dict[str, Any]) -> torch.Tensor:
    """ASL / focal terms written out in float64 from their definitions, per entry."""
    gp = options.get("gamma_pos", options.get("gamma", 0.0))
    gn = options.get("gamma_neg", options.get("gamma", 0.0))
    m = options.get("clip", 0.0)
    alpha = options.get("alpha")
    pw = options.get("pos_weight")
    z = z.double()
    p = torch.sigmoid(z)
    pos = -((1 - p) ** gp) * F.logsigmoid(z)
    pm = (p - m).clamp_min(0.0)
    neg = -(pm**gn) * torch.log1p(-pm) if m > 0 else -(p**gn) * F.logsigmoid(-z)
    a_pos = 1.0 if alpha is None else alpha
    a_neg = 1.0 if alpha is None else 1 - alpha
    w_pos = 1.0 if pw is None else pw
    return labels * a_pos * w_pos * pos + (1 - labels) * a_neg * neg


def _dense(target: torch.Tensor) -> torch.Tensor:
    dense = torch.zeros(N, C, dtype=torch.float64)
    rows, cols = (target >= 0).nonzero(as_tuple=True)
    dense[rows, target[rows, cols]] = 1.0
    return dense


def _reference(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, target: torch.Tensor, options: dict[str, Any]
) -> torch.Tensor:
    labels = _dense(target)
    per_item = {k: v for k, v in options.items() if not isinstance(v, torch.Tensor)}
    terms = _terms(F.linear(x, w, b), labels, per_item)
    for name in ("alpha", "pos_weight"):
        v = options.get(name)
        if isinstance(v, torch.Tensor):  # per item: the factor of each column's terms
            if name == "alpha":
                terms = _terms(F.linear(x, w, b), labels, {**per_item, "alpha": None})
                terms = terms * (labels * v + (1 - labels) * (1 - v))
            else:
                terms = terms * (labels * v + (1 - labels))
    return terms.mean()


ASL = {"gamma_pos": 1.0, "gamma_neg": 3.0, "clip": 0.05}
FOCAL_PW = {"gamma": 2.0, "alpha": 0.25, "pos_weight": 3.0}


def _pw_vec() -> torch.Tensor:
    return torch.linspace(0.0, 4.0, C, dtype=torch.float64)


CASES = [
    ("asl", fr.linear_asymmetric_loss, ASL),
    ("asl_pw", fr.linear_asymmetric_loss, {**ASL, "pos_weight": 2.5, "alpha": 0.75}),
    ("asl_no_clip", fr.linear_asymmetric_loss, {"gamma_pos": 0.0, "gamma_neg": 2.0, "clip": 0.0}),
    ("focal_pw", fr.linear_sigmoid_focal_loss, FOCAL_PW),
    ("bce_pw", fr.linear_sigmoid_focal_loss, {"gamma": 0.0, "alpha": None, "pos_weight": 7.0}),
]


@pytest.mark.parametrize(("name", "fn", "options"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("chunk", [(2, 5), None])
def test_equals_the_float64_formula_in_value_and_gradients(
    name: str, fn: Any, options: dict[str, Any], chunk: tuple[int, int] | None
) -> None:
    x, w, b = _layer(0)
    target = _index_target(0)
    got = fn(x, w, target, linear_bias=b, chunk_size=chunk, **options)
    want = _reference(x, w, b, target, options)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    for g, e in zip(
        torch.autograd.grad(got, (x, w, b)), torch.autograd.grad(want, (x, w, b)), strict=True
    ):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-13)


def test_per_item_pos_weight_and_dense_targets() -> None:
    x, w, b = _layer(1)
    target = _index_target(1)
    pw = _pw_vec()
    for fn, options in (
        (fr.linear_sigmoid_focal_loss, {"gamma": 1.5}),
        (fr.linear_asymmetric_loss, ASL),
    ):
        want = _reference(x, w, b, target, {"alpha": None, **options, "pos_weight": pw})
        for t in (target, _dense(target), _dense(target).bool()):
            got = fn(
                x, w, t, linear_bias=b, alpha=None, pos_weight=pw, chunk_size=(4, 7), **options
            )
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


def test_the_unfused_losses_agree() -> None:
    x, w, b = _layer(2, torch.float32)
    target = _index_target(2)
    z = F.linear(x, w, b)
    pw = torch.rand(C) * 3
    pairs = [
        (
            fr.linear_asymmetric_loss(x, w, target, linear_bias=b, pos_weight=pw, alpha=0.3),
            fr.asymmetric_loss(z, target, pos_weight=pw, alpha=0.3),
        ),
        (
            fr.linear_sigmoid_focal_loss(x, w, target, linear_bias=b, pos_weight=2.0),
            fr.sigmoid_focal_loss(z, target, pos_weight=2.0),
        ),
    ]
    for fused, unfused in pairs:
        torch.testing.assert_close(fused, unfused, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("reduction", ["sum", "sum_over_positives"])
def test_reductions(reduction: str) -> None:
    x, w, b = _layer(3)
    target = _index_target(3)
    mean = fr.linear_asymmetric_loss(x, w, target, linear_bias=b, pos_weight=2.0)
    got = fr.linear_asymmetric_loss(
        x, w, target, linear_bias=b, pos_weight=2.0, reduction=reduction
    )
    positives = float(_dense(target).sum())
    divisor = 1.0 if reduction == "sum" else positives  # pos_weight enters no divisor
    torch.testing.assert_close(got, mean * N * C / divisor, rtol=1e-12, atol=0)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    gamma_pos=st.floats(0, 4),
    gamma_neg=st.floats(0, 4),
    clip=st.sampled_from([0.0, 0.05, 0.3]),
    pos_weight=st.one_of(st.none(), st.floats(0, 10)),
    shared=st.booleans(),
    hits=st.sampled_from(["keep", "remove"]),
    sparse=st.booleans(),
)
def test_sampled_negatives_equal_the_gathered_formula(
    seed: int,
    gamma_pos: float,
    gamma_neg: float,
    clip: float,
    pos_weight: float | None,
    shared: bool,
    hits: str,
    sparse: bool,
) -> None:
    x, w, b = _layer(seed)
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, C, (N, 1), generator=g)
    negatives = torch.randint(0, C, (7,) if shared else (N, 7), generator=g)
    options = {"gamma_pos": gamma_pos, "gamma_neg": gamma_neg, "clip": clip}
    got = fr.linear_asymmetric_loss(
        x, w, target, linear_bias=b, negatives=negatives, pos_weight=pos_weight,
        accidental_hits=hits, sparse_grad=sparse, **options,
    )  # fmt: skip
    # written out: each row's positive and its 7 drawn ids, gathered from the full logits
    z = F.linear(x, w, b)
    neg = negatives.expand(N, 7)
    cols = torch.cat([target, neg], dim=1)
    labels = torch.cat([torch.ones(N, 1), torch.zeros(N, 7)], dim=1).double()
    keep = torch.ones(N, 8, dtype=torch.float64)
    if hits == "remove":
        keep[:, 1:] = (neg != target).double()
    terms = _terms(z.gather(1, cols), labels, {**options, "pos_weight": pos_weight}) * keep
    want = terms.sum() / keep.sum()
    torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-13)
    for a, e in zip(
        torch.autograd.grad(got, (x, w, b)), torch.autograd.grad(want, (x, w, b)), strict=True
    ):
        assert a.layout == (torch.sparse_coo if sparse and a.shape != x.shape else torch.strided)
        torch.testing.assert_close(a.to_dense(), e, rtol=1e-9, atol=1e-12)


def test_sampled_per_item_pos_weight_is_the_positive_items_factor() -> None:
    x, w, b = _layer(4)
    target = torch.arange(N).view(N, 1)
    negatives = torch.arange(N, N + 5)
    pw = _pw_vec()
    got = fr.linear_sigmoid_focal_loss(
        x, w, target, linear_bias=b, negatives=negatives, gamma=0.0, alpha=None, pos_weight=pw
    )
    z = F.linear(x, w, b)
    pos = pw[:N] * F.softplus(-z.gather(1, target)).squeeze(1)
    neg = F.softplus(z[:, N : N + 5]).sum(1)
    torch.testing.assert_close(got, (pos + neg).sum() / (N * 6), rtol=1e-12, atol=0)


def test_compiled_matches_eager_without_graph_breaks() -> None:
    x, w, b = _layer(5, torch.float32)
    target = _index_target(5)
    pw = torch.rand(C) * 2

    def step(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return fr.linear_asymmetric_loss(
            x, w, target, linear_bias=b, pos_weight=pw, chunk_size=(4, 8), validate_args=False
        )

    eager = step(x, w, b)
    eager_grads = torch.autograd.grad(eager, (x, w, b))
    torch._dynamo.reset()
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    got = compiled(x, w, b)
    torch.testing.assert_close(got, eager)
    for a, e in zip(torch.autograd.grad(got, (x, w, b)), eager_grads, strict=True):
        torch.testing.assert_close(a, e)


def test_the_operator_passes_opcheck_with_the_family_options() -> None:
    from focalrec._focal.inputs import values_of
    from focalrec._linear.autograd import linear_focal_loss_op
    from focalrec._linear.plan import Chunks

    x, w, b = (t.detach().requires_grad_() for t in _layer(6, torch.float32))
    chunks = Chunks(
        index=_index_target(6),
        dense=None,
        weight=None,
        alpha=0.25,
        alpha_vec=None,
        gamma=1.0,
        rows=4,
        items=8,
        dtype=torch.float32,
        gamma_neg=3.0,
        clip=0.05,
        pos_weight=None,
        pos_weight_vec=torch.rand(C),
    )
    torch.library.opcheck(linear_focal_loss_op, (x, w, b, *values_of(chunks), True, True, True))


def test_the_module_takes_pos_weight_per_item() -> None:
    torch.manual_seed(0)
    pw = torch.rand(C) * 3
    head = fr.LinearFocalLoss(D, C, pos_weight=pw, gamma=1.0, alpha=None)
    assert "pos_weight=per-item" in repr(head)
    assert "pos_weight" not in head.state_dict()
    x = torch.randn(N, D)
    target = _index_target(7)
    want = fr.linear_sigmoid_focal_loss(
        x, head.weight, target, linear_bias=head.bias, gamma=1.0, alpha=None, pos_weight=pw
    )
    torch.testing.assert_close(head(x, target), want)
    assert "pos_weight=2.0" in repr(fr.LinearFocalLoss(D, C, pos_weight=2.0))
    with pytest.raises(ValueError, match="`pos_weight`"):
        fr.LinearFocalLoss(D, C, pos_weight=torch.ones(C + 1))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"gamma_pos": -1.0}, ValueError, "`gamma_pos`"),
        ({"gamma_neg": "4"}, TypeError, "`gamma_neg`"),
        ({"clip": 1.0}, ValueError, "`clip`"),
        ({"alpha": 1.5}, ValueError, "`alpha`"),
        ({"reduction": "none"}, ValueError, "`reduction`"),
    ],
)
def test_bad_asl_options_name_the_argument(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    x, w, b = _layer(8)
    with pytest.raises(error, match=match):
        fr.linear_asymmetric_loss(x, w, _index_target(8), linear_bias=b, **kwargs)
    with pytest.raises(error, match=match):
        fr.LinearAsymmetricLoss(D, C, **kwargs)


def test_the_asymmetric_module_is_the_function_and_the_unfused_loss() -> None:
    """``LinearAsymmetricLoss`` computes ``linear_asymmetric_loss`` with its parameters (the
    same tensors, bit for bit, over the whole catalogue and over sampled negatives with sparse
    gradients), equals ``AsymmetricLoss`` on ``nn.Linear``'s logits in float64, and shares
    ``LinearFocalLoss``'s state dict."""
    torch.manual_seed(0)
    pw = torch.rand(C, dtype=torch.float64) * 3
    options: dict[str, Any] = {
        "gamma_pos": 1.0, "gamma_neg": 3.0, "clip": 0.1, "alpha": 0.4, "pos_weight": pw,
    }  # fmt: skip
    head = fr.LinearAsymmetricLoss(D, C, prior=0.02, dtype=torch.float64, **options)
    text = repr(head)
    assert "gamma_pos=1.0, gamma_neg=3.0, clip=0.1" in text
    assert "gamma=" not in text
    assert "pos_weight=per-item" in text
    x = torch.randn(N, D, dtype=torch.float64, requires_grad=True)
    target = _index_target(9)
    got = head(x, target)
    want = fr.linear_asymmetric_loss(x, head.weight, target, linear_bias=head.bias, **options)
    assert torch.equal(got, want)
    logits = F.linear(x, head.weight, head.bias)
    unfused = fr.AsymmetricLoss(**options)(logits, target)
    torch.testing.assert_close(got, unfused, rtol=1e-12, atol=1e-14)
    grads = torch.autograd.grad(got, (x, head.weight, head.bias))
    for a, e in zip(grads, torch.autograd.grad(unfused, (x, head.weight, head.bias)), strict=True):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)
    # Sampled negatives with sparse gradients.
    sparse_head = fr.LinearAsymmetricLoss(D, C, sparse_grad=True, dtype=torch.float64, **options)
    sparse_head.load_state_dict(head.state_dict())
    negatives = torch.randint(0, C, (N, 4), generator=torch.Generator().manual_seed(2))
    sampled = sparse_head(x, target, negatives=negatives)
    assert torch.equal(
        sampled,
        fr.linear_asymmetric_loss(
            x, head.weight, target, linear_bias=head.bias, negatives=negatives, **options
        ),
    )
    sampled.backward()
    assert sparse_head.weight.grad is not None
    assert sparse_head.weight.grad.layout == torch.sparse_coo
    # The state dict is LinearFocalLoss's.
    focal = fr.LinearFocalLoss(D, C, dtype=torch.float64)
    focal.load_state_dict(head.state_dict())
    assert torch.equal(focal.weight, head.weight)
