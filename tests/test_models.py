"""Tests for focalrec.models: the contract the three models share, then each model's own parts.

Shared: shapes, padding invariance, empty histories, prior-bias initialization, determinism,
features before the output layer, gradients, errors. Each model's logits are checked against an
independent float64 reference (the layers' equations written out, one history at a time).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import focalrec
from focalrec.models import SequenceGRU, SequenceMLP, SequenceRecommender, SequenceTransformer

C, L, D = 11, 4, 5

# -------------------------------------------------------------------------------------------------
# SequenceMLP: its columns and its item metadata
# -------------------------------------------------------------------------------------------------


def _features() -> torch.Tensor:
    # Three categorical columns; -1 is unknown.
    g = torch.Generator().manual_seed(1)
    feats = torch.randint(0, 3, (C, 3), generator=g)
    feats[0, 1] = -1
    return feats


def _numeric() -> torch.Tensor:
    num = torch.arange(C, dtype=torch.float32).unsqueeze(1)
    num[3, 0] = float("nan")
    return num


def _model(metadata: bool = False, **kwargs: object) -> SequenceMLP:
    torch.manual_seed(0)
    extra: dict[str, object] = {"embedding_dim": D, "hidden_sizes": [7, 6]}
    if metadata:
        extra |= {"item_features": _features(), "item_numeric": _numeric(), "feature_dim": 3}
    extra |= kwargs
    return SequenceMLP(C, L, **extra).eval()  # type: ignore[arg-type]


@pytest.mark.parametrize("metadata", [False, True])
@pytest.mark.parametrize("hidden", [[], [8], [8, 6]])
def test_output_shape_and_dtype(metadata: bool, hidden: list[int]) -> None:
    model = _model(metadata, hidden_sizes=hidden)
    history = torch.randint(-1, C, (9, L))
    logits = model(history)
    assert logits.shape == (9, C)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("metadata", [False, True])
def test_padding_embeds_as_zero_vector(metadata: bool) -> None:
    model = _model(metadata)
    history = torch.tensor([[-1, -1, 3, 7], [-1, -1, -1, -1]])
    # Reference: embed each real item by hand, zeros for padding, then the layers in order.
    table = model.embedding.weight[:C].detach().clone()
    meta = None
    if model.metadata is not None:
        meta = model.metadata().detach()
        table = table + meta
    x = torch.zeros(2, L, D)
    for i in range(2):
        for j in range(L):
            if history[i, j] >= 0:
                x[i, j] = table[history[i, j]]
    h = model.mlp(x.flatten(1))
    expected = model.output(h)
    if meta is not None:
        assert model.metadata_query is not None
        expected = expected + model.metadata_query(h) @ meta.T
    torch.testing.assert_close(model(history), expected)


def test_padding_row_gets_no_gradient_and_all_parameters_do() -> None:
    model = _model(metadata=True, dropout=0.2).train()
    model(torch.tensor([[-1, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 0]])).square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        if name != "embedding.weight":
            assert p.grad.abs().sum() > 0, name
    grad = model.embedding.weight.grad
    assert grad is not None
    assert grad[C].abs().sum() == 0  # the padding row
    assert grad[:C].abs().sum() > 0


@settings(max_examples=25)
@given(st.lists(st.integers(-1, C - 1), min_size=L * 3, max_size=L * 3))
def test_rows_are_independent(values: list[int]) -> None:
    model = _model(metadata=True)
    history = torch.tensor(values).view(3, L)
    batch = model(history)
    for i in range(3):
        torch.testing.assert_close(batch[i : i + 1], model(history[i : i + 1]))


def test_metadata_unknown_categories_embed_as_zero_and_numeric_is_standardized() -> None:
    model = _model(metadata=True)
    meta = model.metadata
    assert meta is not None
    # Column 1 of item 0 is unknown: its embedding is the zero row 0.
    assert meta.categorical[0, 1] == 0
    assert meta.tables[1].weight[0].abs().sum() == 0
    # Numeric 0..10 without item 3 (NaN): standardized with the population std; NaN -> 0.
    values = [float(i) for i in range(C) if i != 3]
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    expected = [0.0 if i == 3 else (i - mean) / std for i in range(C)]
    torch.testing.assert_close(meta.numeric[:, 0], torch.tensor(expected))


def test_metadata_shares_scores_between_items_alike() -> None:
    # Items 1 and 2 share all metadata; item 3 differs. With the id-specific output weights and
    # biases equal, the logits of 1 and 2 agree and differ from 3's: metadata alone scores items.
    feats = torch.zeros(C, 2, dtype=torch.long)
    feats[3] = torch.tensor([1, 1])
    model = SequenceMLP(C, L, embedding_dim=D, item_features=feats).eval()
    assert model.metadata_query is not None
    with torch.no_grad():
        model.output.weight.zero_()
        model.output.bias.zero_()
        model.metadata_query.weight.normal_()  # as after some training
    logits = model(torch.tensor([[0, 4, 5, 6]]))
    assert logits[0, 1] == logits[0, 2]
    assert logits[0, 1] != logits[0, 3]


def test_metadata_score_starts_at_zero() -> None:
    # At initialization the metadata changes the history embeddings but not yet the output layer.
    model = _model(metadata=True)
    history = torch.randint(-1, C, (5, L))
    index = torch.where(history < 0, C, history)
    assert model.metadata is not None
    table = model.embedding.weight + torch.nn.functional.pad(model.metadata(), (0, 0, 0, 1))
    h = model.mlp(table[index].flatten(1))
    torch.testing.assert_close(model(history), model.output(h))


def test_metadata_transfers_to_a_never_seen_item() -> None:
    # Item 8 follows items 0 and 7; item 9 never occurs in training but shares item 8's category;
    # item 10 never occurs either and has a category of its own. Item 9's lead over item 10 must
    # be largest after exactly the histories that item 8 follows.
    feats = torch.zeros(C, 1, dtype=torch.long)
    feats[:8, 0] = torch.arange(1, 9)
    feats[8:10, 0] = 9
    torch.manual_seed(0)
    model = SequenceMLP(C, 1, embedding_dim=8, hidden_sizes=[16], item_features=feats)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    history = torch.arange(8).unsqueeze(1)
    target = torch.tensor([8, 2, 3, 4, 5, 6, 7, 8])
    for _ in range(100):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(history), target).backward()
        opt.step()
    with torch.no_grad():
        logits = model.eval()(history)
    lead = logits[:, 9] - logits[:, 10]
    assert set(lead.topk(2).indices.tolist()) == {0, 7}


def test_state_dict_round_trip() -> None:
    model = _model(metadata=True)
    clone = _model(metadata=True, prior=0.3)
    clone.load_state_dict(model.state_dict())
    history = torch.randint(-1, C, (4, L))
    torch.testing.assert_close(clone(history), model(history))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"hidden_sizes": [8, 0]}, ValueError, r"`hidden_sizes` must be positive ints"),
        ({"feature_dim": 0}, ValueError, r"`feature_dim` must be a positive int, got 0"),
        (
            {"item_features": torch.zeros(C, 2)},
            TypeError,
            r"`item_features` must be an integer tensor .* got torch.float32",
        ),
        (
            {"item_features": torch.zeros(C - 1, 2, dtype=torch.long)},
            ValueError,
            r"`item_features` must have shape \(11, F\).* got shape \(10, 2\)",
        ),
        (
            {"item_features": torch.full((C, 1), -2)},
            ValueError,
            r"`item_features` must hold ids >= 0 or -1 for unknown, got minimum -2",
        ),
        (
            {"item_numeric": torch.zeros(C, 1, dtype=torch.long)},
            TypeError,
            r"`item_numeric` must be a floating tensor .* got torch.int64",
        ),
        (
            {"item_numeric": torch.zeros(C)},
            ValueError,
            r"`item_numeric` must have shape \(11, G\).* got shape \(11,\)",
        ),
    ],
)
def test_mlp_constructor_errors(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    args: dict[str, object] = {"num_items": C, "history_length": L} | kwargs
    with pytest.raises(error, match=match):
        SequenceMLP(**args)  # type: ignore[arg-type]


def test_torch_compile_matches_eager() -> None:
    model = _model(metadata=True)
    history = torch.randint(-1, C, (5, L))
    compiled = torch.compile(model, backend="eager", fullgraph=False)
    torch.testing.assert_close(compiled(history), model(history))


@pytest.mark.parametrize("metadata", [False, True])
def test_logits_score_the_features_with_the_output_weight(metadata: bool) -> None:
    model = _model(metadata, dropout=0.3).train()
    if model.metadata_query is not None:
        with torch.no_grad():
            model.metadata_query.weight.normal_()  # as after some training
    history = torch.randint(-1, C, (6, L))
    torch.manual_seed(5)
    logits = model(history)
    torch.manual_seed(5)  # the same dropout masks
    features = model.features(history)
    assert features.shape == (6, 6)
    fused = F.linear(features, model.output_weight(), model.output.bias)
    torch.testing.assert_close(fused, logits)
    if not metadata:
        assert torch.equal(model.output(features), logits)


def test_state_dict_keys_are_stable() -> None:
    # Checkpoints written before the models shared a base class must still load.
    assert list(_model(metadata=True).state_dict()) == [
        "embedding.weight",
        "metadata.categorical",
        "metadata.numeric",
        "metadata.tables.0.weight",
        "metadata.tables.1.weight",
        "metadata.tables.2.weight",
        "metadata.project.weight",
        "metadata.project.bias",
        "mlp.0.weight",
        "mlp.0.bias",
        "mlp.2.weight",
        "mlp.2.bias",
        "output.weight",
        "output.bias",
        "metadata_query.weight",
    ]


# -------------------------------------------------------------------------------------------------
# The contract shared by SequenceMLP, SequenceGRU and SequenceTransformer
# -------------------------------------------------------------------------------------------------

KINDS = ("mlp", "gru", "transformer")
# The order-aware models skip a -1 anywhere; SequenceMLP embeds it as a zero vector in its column.
SKIPS_PADDING = ("gru", "transformer")


_CLASSES: dict[str, type[SequenceRecommender]] = {
    "mlp": SequenceMLP,
    "gru": SequenceGRU,
    "transformer": SequenceTransformer,
}
_SMALL: dict[str, dict[str, object]] = {
    "mlp": {"embedding_dim": D, "hidden_sizes": [7, 6]},
    "gru": {"embedding_dim": D, "hidden_size": 6, "num_layers": 2, "dropout": 0.0},
    "transformer": {"embedding_dim": 8, "num_blocks": 2, "num_heads": 2, "dropout": 0.0},
}


def _make(kind: str, **kwargs: object) -> SequenceRecommender:
    """A small model of ``kind``, initialized from seed 0 (training mode, as built)."""
    torch.manual_seed(0)
    return _CLASSES[kind](C, L, **(_SMALL[kind] | kwargs))  # type: ignore[call-arg]


_EVAL_MODELS: dict[str, SequenceRecommender] = {}


def _eval_model(kind: str) -> SequenceRecommender:
    """One model of each kind in evaluation mode, shared by the hypothesis properties."""
    if kind not in _EVAL_MODELS:
        _EVAL_MODELS[kind] = _make(kind).eval()
    return _EVAL_MODELS[kind]


def _f64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float64)


def _layer_norm(x: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * _f64(norm.weight) + _f64(norm.bias)


def _mlp_features(model: SequenceMLP, row: list[int]) -> torch.Tensor:
    """Left-pad the row to L, zero vectors for -1, concatenate, then the layers one by one."""
    assert model.metadata is None
    row = [-1] * (L - len(row)) + row
    table = _f64(model.embedding.weight)
    h = torch.cat(
        [table[j] if j >= 0 else torch.zeros(table.shape[1], dtype=torch.float64) for j in row]
    )
    for layer in model.mlp:
        if isinstance(layer, torch.nn.Linear):
            h = _f64(layer.weight) @ h + _f64(layer.bias)
        elif isinstance(layer, torch.nn.ReLU):
            h = h.clamp_min(0)
    return h


def _gru_features(model: SequenceGRU, row: list[int]) -> torch.Tensor:
    """The GRU equations over the row's items only, layer by layer, from the zero state."""
    gru, size = model.gru, model.gru.hidden_size
    xs = [_f64(model.embedding.weight[j]) for j in row if j >= 0]
    for layer in range(gru.num_layers):
        w_ih, w_hh = (_f64(getattr(gru, f"weight_{n}_l{layer}")) for n in ("ih", "hh"))
        b_ih, b_hh = (_f64(getattr(gru, f"bias_{n}_l{layer}")) for n in ("ih", "hh"))
        h, states = torch.zeros(size, dtype=torch.float64), []
        for x in xs:
            gi, gh = w_ih @ x + b_ih, w_hh @ h + b_hh
            r = torch.sigmoid(gi[:size] + gh[:size])
            z = torch.sigmoid(gi[size : 2 * size] + gh[size : 2 * size])
            n = torch.tanh(gi[2 * size :] + r * gh[2 * size :])
            h = (1 - z) * n + z * h
            states.append(h)
        xs = states
    return xs[-1] if xs else torch.zeros(size, dtype=torch.float64)


def _transformer_features(model: SequenceTransformer, row: list[int]) -> torch.Tensor:
    """Pre-LN causal attention over the row's items only; the oldest at position 0."""
    items = [j for j in row if j >= 0]
    dim, n = model.embedding.embedding_dim, len(items)
    if n == 0:
        return torch.zeros(dim, dtype=torch.float64)
    x = _f64(model.embedding.weight[items]) + _f64(model.position.weight[:n])
    future = ~torch.ones(n, n, dtype=torch.bool).tril()
    for block in model.blocks:
        heads = block.num_heads
        width = dim // heads
        y = _layer_norm(x, block.norm1)
        q, k, v = (y @ _f64(block.qkv.weight).T + _f64(block.qkv.bias)).split(dim, dim=1)
        attended = []
        for a in range(heads):
            cols = slice(a * width, (a + 1) * width)
            scores = (q[:, cols] @ k[:, cols].T / math.sqrt(width)).masked_fill(future, -math.inf)
            attended.append(torch.softmax(scores, dim=1) @ v[:, cols])
        x = x + torch.cat(attended, dim=1) @ _f64(block.project.weight).T
        x = x + _f64(block.project.bias)
        first, second = block.feedforward[0], block.feedforward[3]
        assert isinstance(first, torch.nn.Linear)
        assert isinstance(second, torch.nn.Linear)
        y = _layer_norm(x, block.norm2) @ _f64(first.weight).T + _f64(first.bias)
        y = 0.5 * y * (1 + torch.erf(y / math.sqrt(2)))  # GELU
        x = x + y @ _f64(second.weight).T + _f64(second.bias)
    return _layer_norm(x[-1], model.norm)


def _reference_logits(model: SequenceRecommender, row: list[int]) -> torch.Tensor:
    """float64 logits ``(C,)`` of one history row (values in [-1, C), at most L of them)."""
    if isinstance(model, SequenceMLP):
        h = _mlp_features(model, row)
    elif isinstance(model, SequenceGRU):
        h = _gru_features(model, row)
    else:
        assert isinstance(model, SequenceTransformer)
        h = _transformer_features(model, row)
    return _f64(model.output.weight) @ h + _f64(model.output.bias)


_rows = st.lists(
    st.lists(st.integers(0, C - 1), max_size=L).flatmap(
        lambda items: st.integers(0, L - len(items)).map(lambda pad: [-1] * pad + items)
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=30)
@given(kind=st.sampled_from(KINDS), rows=_rows, width=st.integers(0, L))
def test_logits_match_the_float64_reference(kind: str, rows: list[list[int]], width: int) -> None:
    # Rows of any length (empty included) and any left padding, in one batch of a common width.
    model = _eval_model(kind)
    width = max(width, *(len(r) for r in rows))
    history = torch.tensor([[-1] * (width - len(r)) + r for r in rows], dtype=torch.long)
    history = history.view(len(rows), width)
    expected = torch.stack([_reference_logits(model, r) for r in rows])
    torch.testing.assert_close(model(history), expected.float(), rtol=1e-5, atol=1e-5)


@st.composite
def _padded_versions(draw: st.DrawFn, skips_padding: bool) -> tuple[list[int], list[list[int]]]:
    """Items (oldest first) and several histories of width L holding them with more padding."""
    items = draw(st.lists(st.integers(0, C - 1), max_size=L))
    versions = []
    for _ in range(draw(st.integers(1, 4))):
        pad = draw(st.integers(0, L - len(items)))
        row = [-1] * pad + items
        if skips_padding:  # move some of the padding inside the history
            row = draw(st.permutations(row)) if not items else _scatter_padding(draw, items, pad)
        versions.append([-1] * (L - len(row)) + row)
    return items, versions


def _scatter_padding(draw: st.DrawFn, items: list[int], pad: int) -> list[int]:
    positions = sorted(draw(st.lists(st.integers(0, len(items)), min_size=pad, max_size=pad)))
    row: list[int] = []
    start = 0
    for p in positions:
        row += [*items[start:p], -1]
        start = p
    return row + items[start:]


@settings(max_examples=40)
@given(kind=st.sampled_from(KINDS), data=st.data())
def test_padding_changes_nothing(kind: str, data: st.DataObject) -> None:
    # The same items with any amount of left padding (and, for the order-aware models, padding
    # anywhere) have the same logits as the items alone.
    model = _eval_model(kind)
    items, versions = data.draw(_padded_versions(kind in SKIPS_PADDING))
    alone = model(torch.tensor(items, dtype=torch.long).view(1, -1))
    padded = model(torch.tensor(versions))
    torch.testing.assert_close(padded, alone.expand_as(padded), rtol=1e-5, atol=1e-5)


def test_padding_inside_a_history_is_a_zero_vector_for_the_mlp() -> None:
    # SequenceMLP reads columns: a -1 between items is a zero vector there, not skipped.
    model = _eval_model("mlp")
    inside, left = torch.tensor([[-1, 3, -1, 7]]), torch.tensor([[-1, -1, 3, 7]])
    assert not torch.allclose(model(inside), model(left))
    expected = _reference_logits(model, [-1, 3, -1, 7]).float().unsqueeze(0)
    torch.testing.assert_close(model(inside), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("width", [0, 1, L])
def test_empty_history_gives_finite_logits_and_gradients(kind: str, width: int) -> None:
    model = _make(kind, dropout=0.3).train()
    history = torch.full((3, width), -1)
    logits = model(history)
    assert logits.shape == (3, C)
    assert torch.isfinite(logits).all()
    logits.sum().backward()  # type: ignore[no-untyped-call]
    for name, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name
    if kind in SKIPS_PADDING:  # no history: the features are zero, the logits the bias
        model.eval()
        torch.testing.assert_close(model(history), model.output.bias.detach().expand(3, C))
        assert model.features(history).abs().sum() == 0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("width", [L, 2, 0])
def test_shapes_and_features(kind: str, width: int) -> None:
    model = _make(kind).eval()
    history = torch.randint(-1, C, (9, width))
    logits, features = model(history), model.features(history)
    assert logits.shape == (9, C)
    assert logits.dtype == torch.float32
    assert features.shape == (9, model.output.in_features)
    assert model.output.weight.shape == (C, model.output.in_features)
    assert model.output_weight() is model.output.weight
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("kind", KINDS)
def test_logits_are_the_output_layer_of_the_features(kind: str) -> None:
    # In training mode too: with the same random state, the same dropout masks.
    model = _make(kind, dropout=0.3).train()
    history = torch.randint(-1, C, (6, L))
    torch.manual_seed(5)
    logits = model(history)
    torch.manual_seed(5)
    assert torch.equal(logits, model.output(model.features(history)))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("prior", [0.01, 0.5, 1e-4])
def test_output_bias_is_logit_of_scalar_prior(kind: str, prior: float) -> None:
    model = _make(kind, prior=prior)
    expected = torch.full((C,), -math.log((1 - prior) / prior))
    torch.testing.assert_close(model.output.bias.detach(), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_output_bias_is_logit_of_per_item_prior(kind: str) -> None:
    prior = torch.linspace(0.001, 0.9, C, dtype=torch.float64)
    model = _make(kind, prior=prior)
    expected = [-math.log((1 - p) / p) for p in prior.tolist()]
    torch.testing.assert_close(
        model.output.bias.detach(), torch.tensor(expected, dtype=torch.float32)
    )
    torch.testing.assert_close(model.output.bias.detach(), focalrec.prior_bias(prior).float())


@pytest.mark.parametrize("kind", KINDS)
def test_a_seed_determines_the_weights_and_the_dropout(kind: str) -> None:
    first, second = _make(kind, dropout=0.3), _make(kind, dropout=0.3)
    assert list(first.state_dict()) == list(second.state_dict())
    assert all(
        torch.equal(a, b)
        for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True)
    )
    history = torch.randint(-1, C, (6, L))
    outputs = []
    for model in (first, second, first):
        torch.manual_seed(3)
        outputs.append(model(history))
    assert torch.equal(outputs[0], outputs[1])
    assert torch.equal(outputs[0], outputs[2])
    torch.manual_seed(4)
    assert not torch.equal(first(history), outputs[0])  # dropout is active in training mode
    reseeded = type(first)(C, L, **_SMALL[kind])  # the global random state, now past seed 0
    assert not torch.equal(reseeded.output.weight, first.output.weight)


@pytest.mark.parametrize(
    ("kind", "kwargs"),
    [
        ("mlp", {"dropout": 0.2}),
        ("gru", {"dropout": 0.2}),
        ("gru", {"dropout": 0.2, "num_layers": 1}),
        ("transformer", {"dropout": 0.2}),
        ("transformer", {"dropout": 0.2, "num_blocks": 1, "num_heads": 1}),
    ],
)
def test_every_parameter_gets_a_gradient_but_the_padding_row(
    kind: str, kwargs: dict[str, object]
) -> None:
    model = _make(kind, **kwargs).train()
    # Full rows (every position), short rows, padding inside and an empty row.
    history = torch.tensor(
        [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 0], [-1, -1, 3, 5], [2, -1, 4, -1], [-1] * L]
    )
    model(history).square().mean().backward()  # type: ignore[no-untyped-call]
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        if name != "embedding.weight":
            assert p.grad.abs().sum() > 0, name
    grad = model.embedding.weight.grad
    assert grad is not None
    assert grad[C].abs().sum() == 0  # the padding row
    assert (grad[:C].abs().sum(dim=1) > 0).all()  # every item occurs in the batch


@settings(max_examples=20)
@given(
    kind=st.sampled_from(KINDS),
    values=st.lists(st.integers(-1, C - 1), min_size=L * 3, max_size=L * 3),
)
def test_rows_are_independent_for_every_model(kind: str, values: list[int]) -> None:
    model = _eval_model(kind)
    history = torch.tensor(values).view(3, L)
    batch = model(history)
    for i in range(3):
        torch.testing.assert_close(batch[i : i + 1], model(history[i : i + 1]))


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_round_trip_for_every_model(kind: str) -> None:
    model = _make(kind).eval()
    torch.manual_seed(1)
    clone = _make(kind, prior=0.3).eval()
    with torch.no_grad():
        for p in clone.parameters():
            p.normal_()
    clone.load_state_dict(model.state_dict())
    history = torch.randint(-1, C, (4, L))
    torch.testing.assert_close(clone(history), model(history))


@pytest.mark.parametrize("kind", KINDS)
def test_torch_compile_matches_eager_for_every_model(kind: str) -> None:
    model = _make(kind).eval()
    history = torch.randint(-1, C, (5, L))
    compiled = torch.compile(model, backend="eager", fullgraph=False)
    torch.testing.assert_close(compiled(history), model(history))


@pytest.mark.parametrize(
    ("kind", "kwargs", "error", "match"),
    [
        *(
            (kind, kwargs, error, match)
            for kind in KINDS
            for kwargs, error, match in [
                ({"num_items": 0}, ValueError, r"`num_items` must be a positive int, got 0"),
                ({"history_length": 2.0}, ValueError, r"`history_length` must be a positive int"),
                ({"embedding_dim": True}, ValueError, r"`embedding_dim` must be a positive int"),
                ({"dropout": 1.0}, ValueError, r"`dropout` must lie in \[0, 1\), got 1.0"),
                ({"dropout": -0.1}, ValueError, r"`dropout` must lie in \[0, 1\), got -0.1"),
                ({"prior": 0.0}, ValueError, r"`prior` must be in \(0, 1\) \(exclusive\), got 0"),
                ({"prior": 1.0}, ValueError, r"`prior` must be in \(0, 1\) \(exclusive\), got 1"),
                ({"prior": torch.full((3,), 0.1)}, ValueError, r"`prior` of shape \(3,\) does not"),
                ({"prior": "0.1"}, TypeError, r"`prior` must be a real number, got str"),
            ]
        ),
        ("gru", {"hidden_size": 0}, ValueError, r"`hidden_size` must be a positive int, got 0"),
        ("gru", {"num_layers": 1.5}, ValueError, r"`num_layers` must be a positive int, got 1.5"),
        ("transformer", {"num_blocks": 0}, ValueError, r"`num_blocks` must be a positive int"),
        ("transformer", {"num_heads": -2}, ValueError, r"`num_heads` must be a positive int"),
        (
            "transformer",
            {"embedding_dim": 6, "num_heads": 4},
            ValueError,
            r"`num_heads` must divide embedding_dim=6, got 4",
        ),
        (
            "transformer",
            {"feedforward_dim": 0},
            ValueError,
            r"`feedforward_dim` must be a positive int, got 0",
        ),
    ],
)
def test_constructor_errors_of_every_model(
    kind: str, kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    positional = {k: kwargs.pop(k) for k in ("num_items", "history_length") if k in kwargs}
    args: dict[str, object] = {"num_items": C, "history_length": L} | positional | kwargs
    with pytest.raises(error, match=match):
        _CLASSES[kind](**args)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("history", "error", "match"),
    [
        (torch.zeros(2, L), TypeError, r"`history` must be an integer tensor"),
        (torch.zeros(L, dtype=torch.long), ValueError, r"`history` must be an index list"),
        (torch.full((2, L), C), ValueError, r"`history` holds item indices in \[11, 11\]"),
        (torch.full((2, L), -2), ValueError, r"`history` holds item indices in \[-2, -2\]"),
        (
            torch.zeros(2, L + 1, dtype=torch.long),
            ValueError,
            r"`history` must have at most history_length=4 columns.* got shape \(2, 5\)",
        ),
    ],
)
def test_forward_errors_of_every_model(
    kind: str, history: torch.Tensor, error: type[Exception], match: str
) -> None:
    model = _eval_model(kind)
    with pytest.raises(error, match=match):
        model(history)
    with pytest.raises(error, match=match):
        model.features(history)


# -------------------------------------------------------------------------------------------------
# Reading order: a rule that the order-aware models learn and the MLP does not, on the same budget
# -------------------------------------------------------------------------------------------------


def _marker_task(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Histories of 3..10 items of 1..39 holding the marker item 0 once, at a random place (not
    the last); the next item is the one that followed the marker. Left-padded to 10."""
    items, width = 40, 10
    history = torch.full((n, width), -1)
    target = torch.empty(n, 1, dtype=torch.long)
    for i in range(n):
        k = int(torch.randint(3, width + 1, (1,), generator=generator))
        row = torch.randint(1, items, (k,), generator=generator)
        marker = int(torch.randint(0, k - 1, (1,), generator=generator))
        row[marker] = 0
        history[i, width - k :] = row
        target[i, 0] = row[marker + 1]
    return history, target


def _accuracy_after_training(
    make: Callable[[], SequenceRecommender],
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
) -> float:
    """Top-1 accuracy on ``test`` after 100 Adam steps of BCE (focal, gamma 0) on ``train``."""
    torch.manual_seed(0)
    model = make()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = focalrec.FocalLoss(alpha=None, gamma=0.0, reduction="sum_over_positives")
    batches = torch.Generator().manual_seed(1)
    for _ in range(100):
        rows = torch.randint(0, len(train[0]), (128,), generator=batches)
        optimizer.zero_grad()
        loss_fn(model(train[0][rows]), train[1][rows]).backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    with torch.no_grad():
        predicted = model.eval()(test[0]).argmax(dim=1)
    return float((predicted == test[1][:, 0]).float().mean())


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Small models train fastest on one thread, and do not stall on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_order_aware_models_learn_an_order_rule_the_mlp_does_not() -> None:
    # The next item is the one after a marker at a variable distance from the end: a GRU keeps
    # it in its state; attention finds it; an MLP must learn it for every column separately.
    generator = torch.Generator().manual_seed(0)
    train, test = _marker_task(2000, generator), _marker_task(1000, generator)
    items, width = 40, 10
    prior = 1 / items
    mlp = _accuracy_after_training(
        lambda: SequenceMLP(items, width, embedding_dim=16, hidden_sizes=[64], prior=prior),
        train,
        test,
    )
    gru = _accuracy_after_training(
        lambda: SequenceGRU(
            items, width, embedding_dim=16, hidden_size=32, dropout=0.0, prior=prior
        ),
        train,
        test,
    )
    transformer = _accuracy_after_training(
        lambda: SequenceTransformer(
            items, width, embedding_dim=16, num_heads=2, dropout=0.0, prior=prior
        ),
        train,
        test,
    )
    # Measured: MLP about 0.33 (seeds 0-3), GRU 1.0, transformer 0.7-0.99.
    assert mlp < 0.6
    assert gru > 0.9
    assert transformer > mlp + 0.25


# -------------------------------------------------------------------------------------------------
# Per-position states: sequence_features, next_item_targets and every position through the fused
# output layer
# -------------------------------------------------------------------------------------------------

ORDERED = ("gru", "transformer")

_histories = st.lists(
    st.lists(st.integers(-1, C - 1), min_size=L, max_size=L), min_size=1, max_size=4
)
"""Rows of width L with -1 anywhere (left padding, padding inside, empty rows)."""


def _prefix_features(model: SequenceRecommender, history: torch.Tensor) -> torch.Tensor:
    """``features`` of every prefix ``history[:, : j + 1]``, stacked: the windows approach."""
    columns = [model.features(history[:, : j + 1]) for j in range(history.shape[1])]
    return torch.stack(columns, dim=1)


@settings(max_examples=30)
@given(kind=st.sampled_from(ORDERED), rows=_histories)
def test_each_column_is_the_float64_reference_of_its_prefix(
    kind: str, rows: list[list[int]]
) -> None:
    # Column j: the reference features of the items up to column j (none: zeros).
    model = _eval_model(kind)
    states = model.sequence_features(torch.tensor(rows))
    reference = _gru_features if kind == "gru" else _transformer_features
    expected = torch.stack(
        [torch.stack([reference(model, r[: j + 1]) for j in range(L)]) for r in rows]  # type: ignore[arg-type]
    )
    assert states.shape == (len(rows), L, states.shape[2])
    torch.testing.assert_close(states, expected.float(), rtol=1e-5, atol=1e-5)


@settings(max_examples=30)
@given(kind=st.sampled_from(ORDERED), rows=_histories)
def test_each_column_is_the_features_of_its_prefix_and_the_last_is_features(
    kind: str, rows: list[list[int]]
) -> None:
    model = _eval_model(kind)
    history = torch.tensor(rows)
    states = model.sequence_features(history)
    torch.testing.assert_close(states, _prefix_features(model, history), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(states[:, -1], model.features(history), rtol=1e-5, atol=1e-5)


@settings(max_examples=30)
@given(kind=st.sampled_from(ORDERED), rows=_histories, data=st.data())
def test_a_later_item_never_changes_an_earlier_state(
    kind: str, rows: list[list[int]], data: st.DataObject
) -> None:
    model = _eval_model(kind)
    history = torch.tensor(rows)
    j = data.draw(st.integers(0, L - 2), label="last unchanged column")
    later = data.draw(
        st.lists(st.integers(-1, C - 1), min_size=L - 1 - j, max_size=L - 1 - j), label="later"
    )
    changed = history.clone()
    changed[:, j + 1 :] = torch.tensor(later)
    before = model.sequence_features(history)[:, : j + 1]
    after = model.sequence_features(changed)[:, : j + 1]
    torch.testing.assert_close(after, before, rtol=1e-6, atol=1e-6)


_WIDE: dict[str, SequenceRecommender] = {}


def _wide_model(kind: str) -> SequenceRecommender:
    """A small model of ``kind`` that reads up to ``L + 3`` columns, in evaluation mode."""
    if kind not in _WIDE:
        torch.manual_seed(0)
        _WIDE[kind] = _CLASSES[kind](C, L + 3, **_SMALL[kind]).eval()  # type: ignore[call-arg]
    return _WIDE[kind]


@settings(max_examples=30)
@given(kind=st.sampled_from(ORDERED), rows=_histories, extra=st.integers(0, 3))
def test_more_left_padding_adds_zero_columns_before_the_same_states(
    kind: str, rows: list[list[int]], extra: int
) -> None:
    model = _wide_model(kind)
    history = torch.tensor(rows)
    padded = F.pad(history, (extra, 0), value=-1)
    states, more = model.sequence_features(history), model.sequence_features(padded)
    assert more.shape == (len(rows), L + extra, states.shape[2])
    torch.testing.assert_close(more[:, extra:], states, rtol=1e-5, atol=1e-5)
    assert more[:, :extra].abs().sum() == 0


@pytest.mark.parametrize("kind", ORDERED)
def test_padding_columns_hold_the_latest_state_before_them(kind: str) -> None:
    # Before the first item: the empty history's state, zero; after an item: that item's state.
    model = _eval_model(kind)
    history = torch.tensor([[-1, 3, -1, 7], [-1, -1, -1, -1], [5, -1, -1, -1]])
    states = model.sequence_features(history)
    assert states[0, 0].abs().sum() == 0
    assert torch.equal(states[0, 2], states[0, 1])
    assert states[1].abs().sum() == 0
    assert torch.equal(states[2, 1:], states[2, :1].expand(3, -1))
    assert states[2, 0].abs().sum() > 0


@pytest.mark.parametrize("kind", ORDERED)
@pytest.mark.parametrize("width", [0, 1, L])
def test_sequence_features_shapes_dropout_and_gradients(kind: str, width: int) -> None:
    model = _make(kind, dropout=0.3).train()
    history = torch.randint(-1, C, (5, width))
    states = model.sequence_features(history)
    assert states.shape == (5, width, model.output.in_features)
    assert states.dtype == torch.float32
    assert torch.isfinite(states).all()
    if width:
        states.square().sum().backward()  # type: ignore[no-untyped-call]
        for name, p in model.named_parameters():
            assert p.grad is None or torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("kind", ORDERED)
@pytest.mark.parametrize(
    ("history", "error", "match"),
    [
        (torch.zeros(2, L), TypeError, r"`history` must be an integer tensor"),
        (torch.zeros(L, dtype=torch.long), ValueError, r"`history` must be an index list"),
        (torch.full((2, L), C), ValueError, r"`history` holds item indices in \[11, 11\]"),
        (
            torch.zeros(2, L + 1, dtype=torch.long),
            ValueError,
            r"`history` must have at most history_length=4 columns.* got shape \(2, 5\)",
        ),
    ],
)
def test_sequence_features_errors(
    kind: str, history: torch.Tensor, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        _eval_model(kind).sequence_features(history)


def test_the_mlp_has_no_per_position_states() -> None:
    # The history is valid; the model lacks the capability: NotImplementedError, not a
    # TypeError or ValueError about the argument.
    model = _eval_model("mlp")
    with pytest.raises(NotImplementedError, match=r"SequenceMLP has no per-position states"):
        model.sequence_features(torch.zeros(2, L, dtype=torch.long))


def _next_items_by_loop(row: list[int], horizon: int) -> tuple[list[int], list[list[int]]]:
    """Plain Python: the row's items moved right, then each item column's next items."""
    items = [x for x in row if x >= 0]
    packed = [-1] * (len(row) - len(items)) + items
    history, targets = packed[:-1], []
    for j, x in enumerate(history):
        after = packed[j + 1 : j + 1 + horizon] if x >= 0 else []
        targets.append(after + [-1] * (horizon - len(after)))
    return history, targets


@settings(max_examples=50)
@given(
    rows=st.lists(
        st.lists(st.integers(-1, 20), min_size=0, max_size=7).map(tuple), min_size=1, max_size=4
    ).filter(lambda rows: len({len(r) for r in rows}) == 1),
    horizon=st.integers(1, 9),
)
def test_next_item_targets_match_a_loop(rows: list[tuple[int, ...]], horizon: int) -> None:
    sequences = torch.tensor(rows, dtype=torch.long).view(len(rows), len(rows[0]))
    history, target, mask = focalrec.models.next_item_targets(sequences, horizon)
    width = max(len(rows[0]) - 1, 0)
    assert history.shape == (len(rows), width)
    assert history.dtype == torch.long
    assert target.shape == (len(rows), width, horizon)
    assert target.dtype == torch.long
    assert mask.shape == (len(rows), width)
    assert mask.dtype == torch.bool
    for i, row in enumerate(rows):
        expected_history, expected_target = _next_items_by_loop(list(row), horizon)
        assert history[i].tolist() == expected_history
        assert target[i].tolist() == expected_target
        assert mask[i].tolist() == [t[0] >= 0 for t in expected_target]
        assert mask[i].tolist() == [x >= 0 for x in expected_history]


def test_next_item_targets_accepts_int32_and_returns_int64() -> None:
    history, target, mask = focalrec.models.next_item_targets(
        torch.tensor([[-1, 2, 3]], dtype=torch.int32)
    )
    assert history.tolist() == [[-1, 2]]
    assert history.dtype == torch.long
    assert target.tolist() == [[[-1], [3]]]
    assert mask.tolist() == [[False, True]]


@pytest.mark.parametrize(
    ("sequences", "horizon", "error", "match"),
    [
        (torch.zeros(2, 3), 1, TypeError, r"`sequences` must be an integer tensor"),
        ([[1, 2]], 1, TypeError, r"`sequences` must be a torch.Tensor, got list"),
        (torch.zeros(3, dtype=torch.long), 1, ValueError, r"`sequences` must be an index list"),
        (torch.tensor([[1, -2]]), 1, ValueError, r"`sequences` must hold item ids >= 0.*-2"),
        (torch.tensor([[1, 2]]), 0, ValueError, r"`horizon` must be a positive int, got 0"),
        (torch.tensor([[1, 2]]), True, ValueError, r"`horizon` must be a positive int, got True"),
        (torch.tensor([[1, 2]]), 1.0, ValueError, r"`horizon` must be a positive int, got 1.0"),
    ],
)
def test_next_item_targets_errors(
    sequences: object, horizon: object, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        focalrec.models.next_item_targets(sequences, horizon)  # type: ignore[arg-type]


def _focal_by_loop(
    logits: list[list[float]], targets: list[list[int]], alpha: float, gamma: float
) -> float:
    """Plain Python: the mean over every (row, item) of the focal loss, in float64."""
    total, count = 0.0, 0
    for row, positives in zip(logits, targets, strict=True):
        for item, x in enumerate(row):
            t = 1.0 if item in positives else 0.0
            p = 1 / (1 + math.exp(-x))
            p_t = p * t + (1 - p) * (1 - t)
            alpha_t = alpha * t + (1 - alpha) * (1 - t)
            total += -alpha_t * (1 - p_t) ** gamma * math.log(p_t)
            count += 1
    return total / count


def _sequences() -> torch.Tensor:
    """Left-padded sequences of a few lengths, one empty, one with a repeated item."""
    return torch.tensor(
        [
            [-1, -1, 3, 5, 2, 8],
            [4, 1, 0, 3, 3, 9],
            [-1, -1, -1, -1, -1, 6],
            [-1, -1, -1, -1, -1, -1],
            [-1, 10, 2, 7, 1, 0],
        ]
    )


@pytest.mark.parametrize("kind", ORDERED)
@pytest.mark.parametrize("horizon", [1, 3])
def test_every_position_through_the_fused_layer_matches_a_loop(kind: str, horizon: int) -> None:
    # The states of the positions with a target, as rows (dropped or weighted out), into the
    # fused layer; reference: every position's logits materialized, the loss by a Python loop.
    model = _make(kind, dropout=0.0).eval()
    history, target, mask = focalrec.models.next_item_targets(_sequences()[:, -L - 1 :], horizon)
    states = model.sequence_features(history)
    weight, bias = model.output.weight, model.output.bias
    dropped = focalrec.linear_sigmoid_focal_loss(
        states[mask], weight, target[mask], linear_bias=bias, chunk_size=(3, 4)
    )
    weighted = focalrec.linear_sigmoid_focal_loss(
        states.flatten(0, 1),
        weight,
        target.flatten(0, 1),
        linear_bias=bias,
        weight=mask.reshape(-1, 1),
        chunk_size=(3, 4),
    )
    logits, targets = [], []
    for i in range(history.shape[0]):
        for j in range(history.shape[1]):
            if history[i, j] >= 0:
                h = model.features(history[i : i + 1, : j + 1])[0].detach().double()
                logits.append((weight.detach().double() @ h + bias.detach().double()).tolist())
                targets.append([t for t in target[i, j].tolist() if t >= 0])
    assert len(logits) == int(mask.sum()) > 0
    expected = _focal_by_loop(logits, targets, alpha=0.25, gamma=2.0)
    assert dropped.item() == pytest.approx(expected, rel=1e-5)
    assert weighted.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("kind", ORDERED)
@pytest.mark.parametrize("horizon", [1, 2])
def test_training_every_position_has_the_gradient_of_one_window_per_position(
    kind: str, horizon: int
) -> None:
    # One causal pass over the sequences versus one window per position through features():
    # the same loss and the same gradient of every parameter (evaluation mode, no dropout).
    sequences = _sequences()[:, -L - 1 :]
    history, target, mask = focalrec.models.next_item_targets(sequences, horizon)

    per_position = _make(kind).eval()
    states = per_position.sequence_features(history)
    loss = focalrec.linear_sigmoid_focal_loss(
        states[mask], per_position.output.weight, target[mask], linear_bias=per_position.output.bias
    )
    loss.backward()  # type: ignore[no-untyped-call]

    windows_model = _make(kind).eval()
    rows, cols = mask.nonzero(as_tuple=True)
    width = history.shape[1]
    windows = torch.stack(
        [
            F.pad(history[i, : j + 1], (width - 1 - j, 0), value=-1)
            for i, j in zip(rows.tolist(), cols.tolist(), strict=True)
        ]
    )
    windows_loss = focalrec.linear_sigmoid_focal_loss(
        windows_model.features(windows),
        windows_model.output.weight,
        target[rows, cols],
        linear_bias=windows_model.output.bias,
    )
    windows_loss.backward()  # type: ignore[no-untyped-call]

    torch.testing.assert_close(loss, windows_loss, rtol=1e-5, atol=1e-7)
    for (name, p), q in zip(
        per_position.named_parameters(), windows_model.parameters(), strict=True
    ):
        assert p.grad is not None, name
        assert q.grad is not None, name
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)
