r"""Sigmoid focal loss with the output layer fused in: the ``(N, C)`` logits are never formed.

A recommender's output layer scores every item: ``logits = F.linear(features, W, b)`` is
``(N, C)``, 16 GiB for a batch of 4,096 and a million items, and its gradient as much again.
A sigmoid loss is a sum of independent per-item terms, so the same loss and the same gradients
can be computed chunk by chunk: each chunk of logits is formed by a matmul, turned in place into
its focal gradient by the loss's own kernel, and folded into the gradients of the features, the
weight and the bias. The same decomposition splits a catalogue over processes by item ranges
(``process_group``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from focalrec._checks import (
    check_chunk_size,
    check_process_group,
)
from focalrec._indices import is_index_list, values_readable
from focalrec._linear.autograd import apply_plan, eager_over_group
from focalrec._linear.init import init_item_layer_, item_range
from focalrec._linear.loop import raise_nan
from focalrec._linear.plan import (
    DEFAULT_CHUNK_SIZE,
    DEVICE_CHUNK_SIZE,
    Family,
    LinearReduction,
    check_reduction,
    make_plan,
)
from focalrec._linear.sampled import (
    AccidentalHits,
    check_accidental_hits,
    check_sparse_grad,
    sampled_loss,
)
from focalrec.losses import (
    _check_clip,
    _check_gamma,
    _check_hyper,
    _check_pos_weight,
)

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEVICE_CHUNK_SIZE",
    "AccidentalHits",
    "LinearAsymmetricLoss",
    "LinearFocalLoss",
    "LinearReduction",
    "linear_asymmetric_loss",
    "linear_sigmoid_focal_loss",
]


def linear_sigmoid_focal_loss(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    *,
    linear_bias: Tensor | None = None,
    alpha: float | Tensor | None = 0.25,
    gamma: float = 2.0,
    pos_weight: float | Tensor | None = None,
    reduction: LinearReduction = "mean",
    weight: Tensor | None = None,
    chunk_size: tuple[int, int] | None = None,
    item_offset: int | None = None,
    num_items: int | None = None,
    process_group: ProcessGroup | None = None,
    negatives: Tensor | None = None,
    accidental_hits: AccidentalHits = "remove",
    sparse_grad: bool = False,
    validate_args: bool = True,
) -> Tensor:
    r"""Sigmoid focal loss of the logits ``F.linear(input, linear_weight, linear_bias)``, computed
    without forming them.

    Equal in value and in the gradients of ``input``, ``linear_weight`` and ``linear_bias`` (to
    floating-point rounding) to

    .. code-block:: python

        sigmoid_focal_loss(F.linear(input, linear_weight, linear_bias), target, ...)

    (see :func:`focalrec.sigmoid_focal_loss` for the loss, its ``alpha``, ``gamma``, ``weight``
    and the reductions), as :func:`torch.nn.functional.linear_cross_entropy` is to
    ``cross_entropy(linear(...))``. With :math:`z = x W^\top + b`,

    .. math::

        L = \frac{1}{D} \sum_{i < N} \sum_{j < C} w_{ij}\,\mathrm{FL}(z_{ij}, t_{ij}), \qquad
        \frac{\partial L}{\partial x} = G W, \quad
        \frac{\partial L}{\partial W} = G^\top x, \quad
        \frac{\partial L}{\partial b} = \mathbf{1}^\top G,

    where :math:`G_{ij} = w_{ij} \mathrm{FL}'(z_{ij}, t_{ij}) / D` and :math:`D` is the
    reduction's divisor. The logits are formed ``chunk_size`` at a time by a matmul; the loss's
    kernel turns each chunk, in place, into its block of :math:`G`, which the three products
    above consume before the next chunk is formed.

    **Memory.** Besides the arguments, a call holds one chunk of logits, ``rows * items``
    elements of the input's dtype (by default :data:`DEFAULT_CHUNK_SIZE` on the CPU, 8 MiB of
    float32, and :data:`DEVICE_CHUNK_SIZE` on accelerators), and, when gradients are wanted,
    the three gradients, :math:`(N d + C d + C)` elements (float32 for half-precision inputs),
    computed in the forward pass and handed to backward, which only scales them by the incoming
    gradient: however large :math:`N C` is (under autocast, also the operands cast to its dtype,
    :math:`N d + C d + C` elements). The unfused computation holds :math:`2 N C`
    elements (the logits and their gradient).
    ``benchmarks/bench_linear.py`` measures both.

    **Precision.** The matmuls run in the input's dtype, as ``F.linear`` does; the focal terms
    are computed in float32 (float64 for float64 inputs) and the gradients accumulate over the
    chunks in that dtype, then are cast to the dtype of each input.

    **Autocast.** Under ``torch.autocast`` for the input's device, the matmuls run in the
    autocast dtype, as ``F.linear``'s do: ``input``, ``linear_weight`` and ``linear_bias`` may
    then be of different floating dtypes (say bfloat16 features from an autocast model and a
    float32 layer) and are cast to it, once per call (float64 operands are left alone, as
    autocast leaves them); the terms, the loss (float32) and the gradients' accumulation stay
    in float32, and each gradient is cast straight from the float32 accumulator to its own
    tensor's dtype.

    **torch.compile.** The call is one operator, ``focalrec::linear_focal_loss``, with a fake
    implementation and a registered backward: ``torch.compile`` (``fullgraph=True`` and
    ``dynamic=True`` included) traces a training step through it without a graph break. As
    with :func:`focalrec.sigmoid_focal_loss`, the checks that read values (``validate_args``)
    are skipped while compiling, the shape and dtype checks are not. With ``process_group``
    the call runs eagerly under ``torch.compile`` (a graph break, and an error under
    ``fullgraph=True``): its all-reduces stay outside the graph.

    **Item shards.** Row ``j`` of ``linear_weight`` is catalogue item ``item_offset + j``;
    index-list targets hold catalogue ids (below ``num_items``), and ids outside
    ``[item_offset, item_offset + C)`` are positives of other items that add nothing here.
    With ``process_group``, each rank passes its own contiguous range of the catalogue
    (``linear_weight``, ``linear_bias``, a per-item ``alpha``, dense targets and ``weight``
    cover its ``C`` items; the ranges partition the catalogue) and the same ``input`` and
    index-list ``target`` as every other rank. The call then returns the loss over the whole
    catalogue on every rank (the divisor counts every rank's items, positives or weights; one
    all-reduce of two numbers), and backward gives each rank the gradient of its own weight and
    bias and the whole gradient of ``input``, summed over the ranks by an all-reduce. Every rank
    must call forward and backward. :class:`LinearFocalLoss` splits a catalogue into such
    ranges.

    **Sampled negatives.** With ``negatives``, the loss covers each row's positives (the
    index-list ``target``; dense targets are refused) and the given catalogue ids only, not
    the whole catalogue: row ``i`` scores the :math:`P_i` distinct ids of ``target[i]`` with
    target 1 and the :math:`k` ids of ``negatives[i]`` (or of a shared ``(k,)`` tensor) with
    target 0,

    .. math::

        L = \frac{1}{D} \sum_{i < N} \Big( \sum_{j \in T_i} w_{ij}\,\mathrm{FL}(z_{ij}, 1)
        + \sum_{l < k} m_{il}\, w_{i n_{il}}\,\mathrm{FL}(z_{i n_{il}}, 0) \Big),

    the focal terms being :func:`focalrec.sigmoid_focal_loss`'s. Only the scored rows of the
    weight are gathered: the logits are ``(N, P + k)``, each row's dot products with its
    gathered rows (on CPUs a block of rows at a time; one matmul for shared negatives), at a
    cost of :math:`N (P + k) d` instead of :math:`N C d`; the gradients of ``linear_weight`` and
    ``linear_bias`` are scattered into the gathered rows (the other rows get 0), or, with
    ``sparse_grad=True``, are sparse COO tensors holding the gathered rows only (uncoalesced: an
    id gathered twice appears twice), as ``nn.Embedding(sparse=True)`` and
    ``torch.gather(sparse_grad=True)`` give them. Allocating and filling a dense ``(C, d)``
    gradient costs more than the sampled loss itself once ``C`` is large
    (``benchmarks/bench_sampled.py``); optimizers that take sparse gradients
    (``torch.optim.SGD``, ``SparseAdam``, ``Adagrad``) then update the scored rows only, and a
    dense ``.grad`` kept between steps (``zero_grad(set_to_none=False)``) receives them in
    place. Memory: per-row negatives hold about 1 MiB of gathered rows at a time on CPUs
    (elsewhere all :math:`N (P + k) d` at once) and the sparse gradient :math:`N (P + k) d`
    elements (the dense one is the weight's size); shared negatives hold :math:`N P d + k d`
    gathered elements and as much for their gradient; ``chunk_size`` does not apply.
    **Duplicates** in ``negatives`` count as drawn (an id drawn twice is two terms); repeated
    positives count once, as always. **Accidental hits**, a negative equal to one of its row's
    positives: ``accidental_hits="remove"`` (the default) masks it out (:math:`m_{il} = 0`: no
    term, not counted by the divisor), ``"keep"`` scores it as a negative as well (gSASRec's
    behaviour; :math:`m_{il} = 1`). The divisor :math:`D`: ``"mean"``, the number of scored
    entries (with ``weight``, their summed weight), :math:`\sum_i (P_i + k)` less the removed
    hits, so one positive and ``k`` negatives per row give gSASRec's mean over :math:`1 + k`
    terms; ``"sum"``, 1; ``"sum_over_positives"``,
    the number of positives as in the full layer. With item shards, negatives are catalogue
    ids: each rank scores those in its range (the others give nothing there), the divisor
    counts over all ranks, and the gradient of ``input`` is all-reduced, as in the full
    layer. Under ``torch.compile`` the sampled loss is traced as ordinary operations
    (``fullgraph=True`` included; over a process group it runs eagerly, a graph break).
    :func:`focalrec.sample_negatives` draws the ids; the "Choosing a loss" guide has the gBCE
    recipe.

    Args:
        input: Features ``(N, d)``, floating point.
        linear_weight: Output-layer weight ``(C, d)``, with the input's device and dtype
            (under autocast, any of float16, bfloat16 and float32).
        target: Either an **index list** ``(N, m)`` of catalogue ids padded with ``-1``
            (repeats count once), or **dense** ``(N, C)`` floating or bool targets in
            ``[0, 1]``.
        linear_bias: Optional output-layer bias ``(C,)``.
        alpha: Weight of the positive class in ``[0, 1]``, a per-item tensor ``(C,)``, or
            ``None``.
        gamma: Focusing parameter, ``>= 0``.
        pos_weight: Factor of the positive terms, ``>= 0``: a float, a per-item tensor
            ``(C,)``, or ``None``, as ``torch.nn.BCEWithLogitsLoss``'s (see
            :func:`focalrec.sigmoid_focal_loss`); with ``negatives`` and ``gamma = 0``,
            ``alpha = None``, gBCE's :math:`\beta` (:func:`focalrec.gbce_beta`).
        reduction: ``"mean"``, ``"sum"`` or ``"sum_over_positives"``, as in
            :func:`focalrec.sigmoid_focal_loss`. ``"none"`` is rejected: its result is the
            ``(N, C)`` tensor this function exists to avoid.
        weight: Optional non-negative elementwise weight or bool mask, broadcastable to
            ``(N, C)`` (e.g. ``(C,)`` per item, ``(N, 1)`` per row).
        chunk_size: ``(rows, items)``: the most logits formed at once; default
            :data:`DEFAULT_CHUNK_SIZE` on the CPU, :data:`DEVICE_CHUNK_SIZE` elsewhere. The
            result does not depend on it beyond rounding.
        item_offset: Catalogue id of the first row of ``linear_weight``; by default 0, or with
            ``process_group`` the items of the lower ranks added up (one all-gather).
        num_items: Size of the whole catalogue, which index-list ids must lie below (checked
            with ``validate_args``); by default ``item_offset + C``, or with
            ``process_group`` every rank's ``C`` added up (one all-gather, when checking).
        process_group: The group over which the catalogue is split, or ``None``. The three
            arguments describe an item shard as everywhere in focalrec (top-k from
            embeddings takes the same).
        negatives: Optional catalogue ids of sampled negatives, an integer tensor ``(N, k)``
            (per row) or ``(k,)`` (shared by the batch), in ``[0, num_items)``; see
            "Sampled negatives" above.
        accidental_hits: ``"remove"`` or ``"keep"``: what a negative equal to one of its
            row's positives does (used with ``negatives`` only).
        sparse_grad: Give ``linear_weight`` and ``linear_bias`` sparse COO gradients
            (with ``negatives`` only; ``True`` without them is a ``ValueError``).
        validate_args: Check the values of ``target``, ``negatives``, ``alpha`` and
            ``weight`` and that the loss is not NaN (reads them from the device). Shapes,
            dtypes and ``gamma`` are always checked.

    Returns:
        The loss, a scalar of dtype ``torch.promote_types(input.dtype, torch.float32)``.
        Gradients flow to ``input``, ``linear_weight`` and ``linear_bias``; they cannot be
        differentiated again (``create_graph=True`` gives first derivatives whose own backward
        raises). A second backward through a retained graph recomputes them. With
        ``negatives`` the second derivatives are defined (the dense gradients' own backward
        is made of differentiable operations), and ``torch.func`` transforms and
        ``torch.compile`` run the loss as ordinary operations around
        :func:`focalrec.sigmoid_focal_loss`.

    Raises:
        TypeError: If an argument has the wrong type or dtype.
        ValueError: If a shape or value is out of its range, or the loss is NaN.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> features = torch.randn(4, 8, requires_grad=True)
        >>> head = torch.nn.Linear(8, 100)
        >>> positives = torch.tensor([[3, 17, -1], [42, -1, -1], [0, 99, 5], [7, 7, -1]])
        >>> fused = linear_sigmoid_focal_loss(
        ...     features, head.weight, positives, linear_bias=head.bias, chunk_size=(3, 32)
        ... )
        >>> from focalrec import sigmoid_focal_loss
        >>> unfused = sigmoid_focal_loss(head(features), positives)
        >>> torch.allclose(fused, unfused)
        True
        >>> fused.backward()
        >>> grad = features.grad.clone()
        >>> features.grad = None
        >>> unfused.backward()
        >>> torch.allclose(grad, features.grad, atol=1e-7)
        True

        The loss over one positive and 8 sampled items per row, against the gathered
        logits (gSASRec's setting):

        >>> one = torch.tensor([[3], [42], [0], [7]])
        >>> negatives = torch.randint(0, 100, (4, 8))
        >>> sampled = linear_sigmoid_focal_loss(
        ...     features, head.weight, one, linear_bias=head.bias, negatives=negatives,
        ...     accidental_hits="keep",
        ... )
        >>> gathered = head(features).gather(1, torch.cat([one, negatives], dim=1))
        >>> labels = torch.cat([torch.ones(4, 1), torch.zeros(4, 8)], dim=1)
        >>> torch.allclose(sampled, sigmoid_focal_loss(gathered, labels))
        True
    """
    family = Family(alpha, gamma, pos_weight=pos_weight)
    return _linear_loss(
        input, linear_weight, target, linear_bias, family, reduction, weight, chunk_size,
        item_offset, num_items, process_group, negatives, accidental_hits, sparse_grad,
        validate_args,
    )  # fmt: skip


def linear_asymmetric_loss(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    *,
    linear_bias: Tensor | None = None,
    gamma_pos: float = 0.0,
    gamma_neg: float = 4.0,
    clip: float = 0.05,
    alpha: float | Tensor | None = None,
    pos_weight: float | Tensor | None = None,
    reduction: LinearReduction = "mean",
    weight: Tensor | None = None,
    chunk_size: tuple[int, int] | None = None,
    item_offset: int | None = None,
    num_items: int | None = None,
    process_group: ProcessGroup | None = None,
    negatives: Tensor | None = None,
    accidental_hits: AccidentalHits = "remove",
    sparse_grad: bool = False,
    validate_args: bool = True,
) -> Tensor:
    r"""Asymmetric loss (ASL) of the logits ``F.linear(input, linear_weight, linear_bias)``,
    computed without forming them.

    Equal in value and in the gradients of ``input``, ``linear_weight`` and ``linear_bias`` (to
    floating-point rounding) to

    .. code-block:: python

        asymmetric_loss(F.linear(input, linear_weight, linear_bias), target, ...)

    (see :func:`focalrec.asymmetric_loss` for the loss, :math:`L_+ = -(1-p)^{\gamma_+} \log p`
    and :math:`L_- = -p_m^{\gamma_-} \log(1 - p_m)` with :math:`p_m = \max(p - m, 0)`): the
    same chunk loop, kernels, memory, precision, autocast, ``torch.compile``, item shards and
    sampled ``negatives`` as :func:`linear_sigmoid_focal_loss`, whose arguments it shares;
    ``gamma_pos``, ``gamma_neg``, ``clip``, ``alpha`` and ``pos_weight`` are
    :func:`focalrec.asymmetric_loss`'s (``alpha`` and ``pos_weight`` per item: ``(C,)``).

    Returns:
        The loss, a scalar of dtype ``torch.promote_types(input.dtype, torch.float32)``, with
        first derivatives as :func:`linear_sigmoid_focal_loss`'s.

    Raises:
        TypeError: If an argument has the wrong type or dtype.
        ValueError: If a shape or value is out of its range, or the loss is NaN.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> features = torch.randn(4, 8)
        >>> head = torch.nn.Linear(8, 100)
        >>> positives = torch.tensor([[3, 17], [42, -1], [0, 99], [7, -1]])
        >>> fused = linear_asymmetric_loss(features, head.weight, positives, linear_bias=head.bias)
        >>> from focalrec import asymmetric_loss
        >>> torch.allclose(fused, asymmetric_loss(head(features), positives))
        True
    """
    family = Family(
        alpha,
        _check_gamma(gamma_pos, "gamma_pos"),
        gamma_neg=_check_gamma(gamma_neg, "gamma_neg"),
        clip=_check_clip(clip),
        pos_weight=pos_weight,
    )
    return _linear_loss(
        input, linear_weight, target, linear_bias, family, reduction, weight, chunk_size,
        item_offset, num_items, process_group, negatives, accidental_hits, sparse_grad,
        validate_args,
    )  # fmt: skip


def _linear_loss(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    linear_bias: Tensor | None,
    family: Family,
    reduction: str,
    weight: Tensor | None,
    chunk_size: tuple[int, int] | None,
    item_offset: int | None,
    num_items: int | None,
    process_group: ProcessGroup | None,
    negatives: Tensor | None,
    accidental_hits: str,
    sparse_grad: bool,
    validate_args: bool,
) -> Tensor:
    """The fused layer's loss of any member of the family: over the whole catalogue in chunks,
    or over the sampled ``negatives``."""
    if negatives is not None:
        loss = sampled_loss(
            input,
            linear_weight,
            target,
            negatives,
            linear_bias,
            family,
            reduction=reduction,
            weight=weight,
            chunk_size=chunk_size,
            item_offset=item_offset,
            num_items=num_items,
            process_group=process_group,
            accidental_hits=accidental_hits,
            sparse_grad=sparse_grad,
            validate_args=validate_args,
        )
        if validate_args and values_readable() and bool(torch.isnan(loss)):
            raise_nan(input, linear_weight, linear_bias)
        return loss
    check_accidental_hits(accidental_hits)
    check_sparse_grad(sparse_grad, with_negatives=False)
    plan = make_plan(
        input, linear_weight, target, linear_bias, family, reduction, weight, chunk_size,
        item_offset, num_items, process_group, validate_args,
    )  # fmt: skip
    need = tuple(
        torch.is_grad_enabled() and t is not None and t.requires_grad
        for t in (input, linear_weight, linear_bias)
    )
    loss = apply_plan(input, linear_weight, linear_bias, plan, need)
    if plan.read_values and bool(torch.isnan(loss)):
        raise_nan(input, linear_weight, linear_bias)
    return loss


# --------------------------------------------------------------------------------------------------
# argument checks and the plan of a call


class LinearFocalLoss(nn.Module):
    r"""An output layer and its sigmoid focal loss in one module, fused: a drop-in for
    ``nn.Linear(in_features, num_items)`` followed by :class:`focalrec.FocalLoss`.

    ``loss = head(features, target)`` equals ``FocalLoss(...)(linear(features), target)`` for
    an ``nn.Linear`` with the same weight and bias, computed by
    :func:`linear_sigmoid_focal_loss` without forming the ``(N, C)`` logits. The weight and
    bias are initialized as ``nn.Linear`` does (on a rank of an item split: that rank's rows of
    the unsplit layer's draw, the same seed giving the same layer), then the bias at the logit
    of ``prior`` (:func:`focalrec.init_prior_bias_`), as ``SequenceMLP``'s output layer; the
    state dict holds ``weight`` and ``bias`` as ``nn.Linear``'s does (a per-item ``alpha`` or
    ``pos_weight`` is a buffer that ``.to()`` moves but the state dict leaves out), so either
    loads the other's.

    **Item shards.** With ``process_group``, each rank of the group holds a contiguous range of
    the catalogue: rank ``r`` of ``R`` holds ``num_items // R`` items, one more for the first
    ``num_items % R`` ranks, starting at :attr:`item_offset`; ``weight`` is
    ``(num_items_local, in_features)``, and ``alpha`` and ``prior`` are given for the whole
    catalogue and sliced here. Every rank passes the same features and index-list targets (see
    :func:`linear_sigmoid_focal_loss` for what the loss and its gradients are then).

    **Why the module owns its parameters.** Liger-Kernel's and Cut Cross-Entropy's fused losses
    take the weight in ``forward``; here the module owns ``weight`` and ``bias`` as
    ``nn.Linear`` does, because a recommender's item layer is made, initialized (the prior
    bias), split over ranks and checkpointed together with its loss, and each of those needs
    the layer's shape and item range. A model whose item layer lives elsewhere (tied to its item
    embeddings, say) calls :func:`linear_sigmoid_focal_loss` with that weight instead.

    **Scores and top-k.** :meth:`scores` returns logits when they are wanted (all items for a
    small batch, or given items). For the top-k over a large catalogue, pass the layer's
    ``weight`` and ``bias`` as ``linear_weight`` and ``linear_bias`` to
    :func:`focalrec.topk_items_from_embeddings`, which never forms the ``(N, C)`` scores.

    Args:
        in_features: Size ``d`` of each feature vector.
        num_items: Number of items ``C`` in the catalogue (all ranks together).
        bias: Whether the layer has a bias.
        alpha: Positive-class weight in ``[0, 1]``, a per-item tensor ``(num_items,)``, or
            ``None``.
        gamma: Focusing parameter, ``>= 0``.
        pos_weight: Factor of the positive terms, ``>= 0``: a float, a per-item tensor
            ``(num_items,)``, or ``None``.
        reduction: ``"mean"``, ``"sum"`` or ``"sum_over_positives"``.
        prior: The positive rate the bias starts from: a float in ``(0, 1)``, a per-item
            tensor ``(num_items,)``, or ``None`` to keep ``nn.Linear``'s initialization.
        chunk_size: ``(rows, items)`` of one chunk of logits; see
            :func:`linear_sigmoid_focal_loss`.
        process_group: The group over which the catalogue is split, or ``None``.
        accidental_hits: ``"remove"`` or ``"keep"``: sampled negatives (``forward``'s
            ``negatives``) equal to a positive of their row; see
            :func:`linear_sigmoid_focal_loss`.
        sparse_grad: Give ``weight`` and ``bias`` sparse COO gradients in calls with
            ``negatives`` (as ``nn.Embedding(sparse=True)``; calls without them, over the
            whole catalogue, give dense ones); see :func:`linear_sigmoid_focal_loss`.
        validate_args: Check argument values on every call.
        device: Device of the parameters.
        dtype: Dtype of the parameters.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> head = LinearFocalLoss(16, 1000, prior=0.01, chunk_size=(64, 256))
        >>> features = torch.randn(32, 16, requires_grad=True)
        >>> loss = head(features, torch.randint(-1, 1000, (32, 3)))
        >>> loss.backward()
        >>> head.weight.grad.shape, features.grad.shape
        (torch.Size([1000, 16]), torch.Size([32, 16]))
        >>> head.scores(features[:2], items=torch.tensor([3, 999])).shape
        torch.Size([2, 2])
    """

    weight: Tensor
    bias: Tensor | None
    alpha: Tensor | float | None
    pos_weight: Tensor | float | None

    def __init__(
        self,
        in_features: int,
        num_items: int,
        *,
        bias: bool = True,
        alpha: float | Tensor | None = 0.25,
        gamma: float = 2.0,
        pos_weight: float | Tensor | None = None,
        reduction: LinearReduction = "mean",
        prior: float | Tensor | None = 0.01,
        chunk_size: tuple[int, int] | None = None,
        process_group: ProcessGroup | None = None,
        accidental_hits: AccidentalHits = "remove",
        sparse_grad: bool = False,
        validate_args: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("num_items", num_items)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"`{name}` must be an int >= 0, got {value!r}")
        check_reduction(reduction)
        _check_hyper(alpha, gamma, reduction, num_items, validate_args)
        _check_pos_weight(pos_weight, num_items, None, validate_args)
        check_chunk_size(chunk_size)
        check_process_group(process_group)
        check_accidental_hits(accidental_hits)
        check_sparse_grad(sparse_grad)
        if process_group is not None:
            eager_over_group()  # so that under torch.compile the graph break says why
        self.in_features = in_features
        self.num_items = num_items
        self.process_group = process_group
        self.item_offset, self.num_items_local = item_range(num_items, process_group)
        local = slice(self.item_offset, self.item_offset + self.num_items_local)
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(self.num_items_local, in_features, **factory))
        self.bias = nn.Parameter(torch.empty(self.num_items_local, **factory)) if bias else None
        local_prior = prior[local] if isinstance(prior, Tensor) else prior
        init_item_layer_(self.weight, self.bias, self.item_offset, num_items, local_prior)
        for name, option in (("alpha", alpha), ("pos_weight", pos_weight)):
            if isinstance(option, Tensor):  # per item: this rank's items
                local_option = option.detach().expand(num_items)[local].clone()
                self.register_buffer(name, local_option, persistent=False)
            else:
                setattr(self, name, None if option is None else float(option))
        self.gamma = float(gamma)
        self.reduction: LinearReduction = reduction
        self.chunk_size = chunk_size
        self.accidental_hits: AccidentalHits = accidental_hits
        self.sparse_grad = sparse_grad
        self.validate_args = validate_args

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        *,
        negatives: Tensor | None = None,
    ) -> Tensor:
        """The loss of ``F.linear(input, self.weight, self.bias)`` against ``target``; with
        ``negatives`` (catalogue ids ``(N, k)`` or ``(k,)``), over each row's positives and
        those items only (see :func:`linear_sigmoid_focal_loss`)."""
        return self._loss(
            input,
            self.weight,
            target,
            linear_bias=self.bias,
            alpha=self.alpha,
            **self._focusing(),
            pos_weight=self.pos_weight,
            reduction=self.reduction,
            weight=weight,
            chunk_size=self.chunk_size,
            item_offset=self.item_offset,
            num_items=self.num_items,
            process_group=self.process_group,
            negatives=negatives,
            accidental_hits=self.accidental_hits,
            sparse_grad=self.sparse_grad and negatives is not None,
            validate_args=self.validate_args,
        )

    def scores(self, input: Tensor, items: Tensor | None = None) -> Tensor:
        """Logits of this layer's items for ``input`` ``(N, d)``.

        Args:
            input: ``(N, in_features)``.
            items: ``None`` for every item of this layer (``(N, num_items_local)``: it forms
                the whole score matrix, so mind the size); catalogue ids ``(K,)`` scored for
                every row (``(N, K)``); or ``(N, K)`` ids scored row by row (``(N, K)``, e.g.
                each row's candidates). Ids lie in this layer's range
                ``[item_offset, item_offset + num_items_local)``.

        Returns:
            The logits, in the parameters' dtype.
        """
        if items is None:
            return nn.functional.linear(input, self.weight, self.bias)
        if not isinstance(items, Tensor) or not is_index_list(items):
            got = items.dtype if isinstance(items, Tensor) else type(items).__name__
            raise TypeError(f"`items` must be an integer tensor of catalogue ids, got {got}")
        if items.ndim not in (1, 2) or (items.ndim == 2 and items.shape[0] != input.shape[0]):
            raise ValueError(
                f"`items` must have shape (K,) or ({input.shape[0]}, K) for input of shape "
                f"{tuple(input.shape)}, got shape {tuple(items.shape)}"
            )
        local = items - self.item_offset
        if self.validate_args and values_readable() and local.numel() > 0:
            lo, hi = (int(v) for v in torch.aminmax(local))
            if lo < 0 or hi >= self.num_items_local:
                end = self.item_offset + self.num_items_local
                raise ValueError(
                    f"`items` holds ids in [{lo + self.item_offset}, {hi + self.item_offset}]; "
                    f"expected ids of this layer's items, in [{self.item_offset}, {end})"
                )
        if items.ndim == 1:
            bias = None if self.bias is None else self.bias[local]
            return nn.functional.linear(input, self.weight[local], bias)
        out = torch.bmm(self.weight[local], input.unsqueeze(-1)).squeeze(-1)
        return out if self.bias is None else out + self.bias[local]

    def _loss(self, *args: Any, **kwargs: Any) -> Tensor:
        """The fused loss the module computes."""
        return linear_sigmoid_focal_loss(*args, **kwargs)

    def _focusing(self) -> dict[str, float]:
        """The loss's own hyper-parameters, as keyword arguments of :meth:`_loss`."""
        return {"gamma": self.gamma}

    def extra_repr(self) -> str:
        alpha = "per-item" if isinstance(self.alpha, Tensor) else self.alpha
        focusing = ", ".join(f"{name}={value}" for name, value in self._focusing().items())
        text = (
            f"in_features={self.in_features}, num_items={self.num_items}, "
            f"bias={self.bias is not None}, alpha={alpha}, {focusing}, "
            f"reduction={self.reduction!r}"
        )
        if self.pos_weight is not None:
            pw = "per-item" if isinstance(self.pos_weight, Tensor) else self.pos_weight
            text += f", pos_weight={pw}"
        if self.sparse_grad:
            text += ", sparse_grad=True"
        if self.process_group is not None:
            text += f", items=[{self.item_offset}, {self.item_offset + self.num_items_local})"
        return text


class LinearAsymmetricLoss(LinearFocalLoss):
    r"""An output layer and its asymmetric loss (ASL) in one module, fused: a drop-in for
    ``nn.Linear(in_features, num_items)`` followed by :class:`focalrec.AsymmetricLoss`.

    ``loss = head(features, target)`` equals ``AsymmetricLoss(...)(linear(features), target)``
    for an ``nn.Linear`` with the same weight and bias, computed by
    :func:`linear_asymmetric_loss` without forming the ``(N, C)`` logits. Everything but the loss
    is :class:`LinearFocalLoss`'s: the parameters and their initialization (the bias at the
    logit of ``prior``), the state dict (either module loads the other's), item shards over
    ``process_group``, sampled ``negatives`` with ``sparse_grad``, and :meth:`scores`.

    Args:
        in_features: Size ``d`` of each feature vector.
        num_items: Number of items ``C`` in the catalogue (all ranks together).
        bias: Whether the layer has a bias.
        gamma_pos: Focusing exponent of the positive terms, ``>= 0``.
        gamma_neg: Focusing exponent of the negative terms, ``>= 0``.
        clip: Probability margin ``m`` of the negative terms, in ``[0, 1)``.
        alpha: Positive-class weight in ``[0, 1]``, a per-item tensor ``(num_items,)``, or
            ``None`` (the default, as :class:`focalrec.AsymmetricLoss`'s).
        pos_weight: Factor of the positive terms, ``>= 0``: a float, a per-item tensor
            ``(num_items,)``, or ``None``.
        reduction: ``"mean"``, ``"sum"`` or ``"sum_over_positives"``.
        prior: The positive rate the bias starts from: a float in ``(0, 1)``, a per-item
            tensor ``(num_items,)``, or ``None`` to keep ``nn.Linear``'s initialization.
        chunk_size: ``(rows, items)`` of one chunk of logits; see
            :func:`linear_sigmoid_focal_loss`.
        process_group: The group over which the catalogue is split, or ``None``.
        accidental_hits: ``"remove"`` or ``"keep"``: sampled negatives equal to a positive of
            their row; see :func:`linear_sigmoid_focal_loss`.
        sparse_grad: Give ``weight`` and ``bias`` sparse COO gradients in calls with
            ``negatives``; see :class:`LinearFocalLoss`.
        validate_args: Check argument values on every call.
        device: Device of the parameters.
        dtype: Dtype of the parameters.

    Example:
        >>> from focalrec import AsymmetricLoss
        >>> _ = torch.manual_seed(0)
        >>> head = LinearAsymmetricLoss(16, 1000, gamma_neg=4.0, clip=0.05)
        >>> features = torch.randn(32, 16)
        >>> target = torch.randint(-1, 1000, (32, 3))
        >>> logits = nn.functional.linear(features, head.weight, head.bias)
        >>> torch.allclose(head(features, target), AsymmetricLoss()(logits, target))
        True
        >>> head.gamma_pos, head.gamma_neg, head.clip
        (0.0, 4.0, 0.05)
    """

    def __init__(
        self,
        in_features: int,
        num_items: int,
        *,
        bias: bool = True,
        gamma_pos: float = 0.0,
        gamma_neg: float = 4.0,
        clip: float = 0.05,
        alpha: float | Tensor | None = None,
        pos_weight: float | Tensor | None = None,
        reduction: LinearReduction = "mean",
        prior: float | Tensor | None = 0.01,
        chunk_size: tuple[int, int] | None = None,
        process_group: ProcessGroup | None = None,
        accidental_hits: AccidentalHits = "remove",
        sparse_grad: bool = False,
        validate_args: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        gamma_pos = _check_gamma(gamma_pos, "gamma_pos")  # named as given, before the
        gamma_neg = _check_gamma(gamma_neg, "gamma_neg")  # focal module checks its "gamma"
        clip = _check_clip(clip)
        super().__init__(
            in_features,
            num_items,
            bias=bias,
            alpha=alpha,
            gamma=gamma_pos,
            pos_weight=pos_weight,
            reduction=reduction,
            prior=prior,
            chunk_size=chunk_size,
            process_group=process_group,
            accidental_hits=accidental_hits,
            sparse_grad=sparse_grad,
            validate_args=validate_args,
            device=device,
            dtype=dtype,
        )
        del self.gamma  # gamma_pos, by its name
        self.gamma_pos = float(gamma_pos)
        self.gamma_neg = float(gamma_neg)
        self.clip = float(clip)

    def _loss(self, *args: Any, **kwargs: Any) -> Tensor:
        return linear_asymmetric_loss(*args, **kwargs)

    def _focusing(self) -> dict[str, float]:
        return {"gamma_pos": self.gamma_pos, "gamma_neg": self.gamma_neg, "clip": self.clip}
