"""Tests for focalrec.models.SequenceMLP: shapes, padding, bias initialization, metadata, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from focalrec.models import SequenceMLP

C, L, D = 11, 4, 5


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


def test_narrow_history_is_left_padded() -> None:
    model = _model()
    short = torch.tensor([[5, 2], [-1, 9]])
    full = torch.tensor([[-1, -1, 5, 2], [-1, -1, -1, 9]])
    torch.testing.assert_close(model(short), model(full))


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


@pytest.mark.parametrize("prior", [0.01, 0.5, 1e-4])
def test_bias_is_logit_of_scalar_prior(prior: float) -> None:
    model = _model(prior=prior)
    expected = -math.log((1 - prior) / prior)
    torch.testing.assert_close(
        model.output.bias.detach(), torch.full((C,), expected), rtol=1e-6, atol=1e-6
    )


def test_bias_is_logit_of_per_item_prior() -> None:
    prior = torch.linspace(0.001, 0.9, C, dtype=torch.float64)
    model = _model(prior=prior)
    expected = [-math.log((1 - p) / p) for p in prior.tolist()]
    torch.testing.assert_close(
        model.output.bias.detach(), torch.tensor(expected, dtype=torch.float32)
    )


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
        ({"num_items": 0}, ValueError, r"`num_items` must be a positive int, got 0"),
        ({"history_length": 2.0}, ValueError, r"`history_length` must be a positive int"),
        ({"embedding_dim": True}, ValueError, r"`embedding_dim` must be a positive int"),
        ({"hidden_sizes": [8, 0]}, ValueError, r"`hidden_sizes` must be positive ints"),
        ({"dropout": 1.0}, ValueError, r"`dropout` must lie in \[0, 1\), got 1.0"),
        ({"prior": 0.0}, ValueError, r"`prior` must be in \(0, 1\) \(exclusive\), got 0.0"),
        ({"prior": torch.full((3,), 0.1)}, ValueError, r"`prior` of shape \(3,\) does not"),
        ({"prior": "0.1"}, TypeError, r"`prior` must be a real number, got str"),
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
def test_constructor_errors(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    args: dict[str, object] = {"num_items": C, "history_length": L} | kwargs
    with pytest.raises(error, match=match):
        SequenceMLP(**args)  # type: ignore[arg-type]


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
def test_forward_errors(history: torch.Tensor, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        _model()(history)


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
