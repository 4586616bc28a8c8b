"""The loss as PyTorch operators: custom ops, autograd to any order that is defined, dispatch.

Two operators are registered with :mod:`torch.library`, each with a fake (meta) implementation
and a vmap rule, so that ``torch.compile`` (``fullgraph=True`` included), ``torch.export`` and
``torch.func`` see through them:

- ``focalrec::focal_loss(logits, ...) -> (loss, grad)``: the loss (elementwise or summed) and,
  when asked, its gradient, computed in one pass by a backend;
- ``focalrec::focal_loss_derivative(logits, ..., order) -> d``: the first or second derivative
  of each term.

:class:`FocalLossFunction` wraps the first: forward keeps the gradient for backward, which scales
it by the incoming gradient. In plain eager mode the first backward hands the kept gradient on
and scales it in place (no second logits-sized tensor), and a later backward through a retained
graph recomputes it; under ``torch.compile`` and ``torch.func`` the gradient is a saved output
and backward is out of place. When backward itself is differentiated (``create_graph=True``,
``torch.func.hessian``), the gradient comes from :class:`FocalDerivativeFunction`, whose own
backward is the second derivative; the second derivative has no derivative registered, so a
third-order derivative raises PyTorch's error for that instead of returning a wrong number.

The operators serve the machinery that needs them: ``torch.compile``, ``torch.export``,
``torch.func``, tracing, modes and tensor subclasses. A plain eager call (:func:`_direct`) runs
the operators' Python implementations directly, inside the same autograd functions: the same
values and gradients, without the import of ``torch._dynamo`` that the first call of a
``torch.library`` operator costs (a second and over 100 MB in a fresh process).

The inputs travel as one record, :class:`~focalrec._focal.inputs.FocalInputs`, from the public
function to the backend: the operators take its fields positionally, in its order (their schema is
written from the record's fields), and every function here rebuilds the record from them, or
splits it into the tensors autograd saves and the rest.

Backends (:func:`backend_name`, :mod:`focalrec._focal.backends`): ``native`` (the compiled CPU
kernel, float32 CPU logits), ``triton`` (the Triton kernel, float32/float16/bfloat16 logits on a
GPU Triton supports, when ``triton`` imports) and ``torch`` (everything else, and the second
derivative). ``focalrec.use_backend(name)`` or ``FOCALREC_BACKEND=auto|native|triton|torch``
chooses: the default, ``auto``, picks ``native`` for CPU tensors it takes, ``triton`` for
accelerator tensors it takes, else ``torch``; a forced backend that does not apply raises an error
that says why (``triton`` applies to CPU tensors only under Triton's interpreter,
``TRITON_INTERPRET=1``, which the tests use).
"""

from __future__ import annotations

import inspect
import os
import sys
import threading
import warnings
from typing import Any

import torch
from torch import Tensor

from focalrec._focal import backends, native, torch_kernel
from focalrec._focal.inputs import (
    FIELDS,
    SCHEMA,
    TENSOR_FIELDS,
    FocalInputs,
    join,
    split,
    values_of,
)
from focalrec._indices import values_readable
from focalrec._warnings import SlowPathWarning

__all__ = [
    "FocalDerivativeFunction",
    "FocalLossFunction",
    "SlowPathWarning",
    "backend_name",
    "evaluate",
    "focal_loss",
]

_N = len(FIELDS)
"""The number of the record's fields: the operators' leading arguments."""


def backend_name(inp: FocalInputs, *, warn: bool = True) -> str:
    """The backend that evaluates ``inp``: the one asked for (:func:`focalrec.use_backend`,
    ``FOCALREC_BACKEND``), else the first that runs here and takes ``inp``.

    With ``warn``, the first time in the process that a slower path serves than this machine
    could run, a :class:`SlowPathWarning` says why and how to fix it.
    """
    asked = backends.requested()
    if asked != "auto":
        backend = backends.get(asked)
        unavailable = backend.unavailable()
        if unavailable is not None:
            raise RuntimeError(
                f"{backends.asked_by()}: the {asked} backend is not available here ({unavailable})"
            )
        refusal = backend.refusal(inp)
        if refusal is not None:
            raise ValueError(f"{backends.asked_by()} does not apply: the {asked} backend {refusal}")
        return asked
    on_cpu = inp.logits.device.type == "cpu"
    for name in backends.ORDER:
        if name == "triton" and on_cpu:
            continue  # the interpreter runs Triton on CPU tensors, slowly: only when asked
        backend = backends.get(name)
        if backend.refusal(inp) is not None:
            continue
        unavailable = backend.unavailable()
        if unavailable is None:
            if warn and name == "native" and native.uncached_reason() is not None:
                _warn_once("uncached", _UNCACHED.format(reason=native.uncached_reason()))
            return name
        if warn and name == "native":
            _warn_once("native", _NO_KERNEL.format(reason=unavailable))
    return "torch"


_NO_KERNEL = (
    "focalrec: float32 CPU logits run on the torch path, slower than the compiled kernel, which "
    "is not available here: {reason}. To fix: install a C compiler (cc, gcc or clang) or set CC "
    "to one; or set FOCALREC_BACKEND=torch to choose the torch path and silence this warning. "
    "focalrec.show_config() lists the backends."
)
_UNCACHED = (
    "focalrec: the compiled CPU kernel could not be cached, so every process compiles it "
    "anew: {reason}. To fix: set FOCALREC_CACHE_DIR to a folder that only you can write to; "
    "or set FOCALREC_BACKEND=torch to skip the kernel. focalrec.show_config() lists the backends."
)
_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(key: str, message: str) -> None:
    """Warn with ``message`` the first time ``key`` comes up in this process, at the user's call
    (the first frame outside focalrec and torch)."""
    if key in _warned:
        return
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    inside = (os.path.dirname(os.path.dirname(__file__)), os.path.dirname(torch.__file__))
    frame, level = sys._getframe(0), 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(inside):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, SlowPathWarning, stacklevel=level)


def evaluate(
    inp: FocalInputs, elementwise: bool, need_grad: bool, grad_into: Tensor | None = None
) -> tuple[Tensor, Tensor | None]:
    """The loss of ``inp`` (elementwise, or its sum) and, if asked, its gradient, by the backend
    that :func:`backend_name` picks: the one entry point to the backends.

    The gradient is written into ``grad_into`` when given (``(R, C)`` in the logits' dtype with a
    unit column stride; it may be the logits themselves, as the fused output layer does).
    """
    backend = backends.get(backend_name(inp))
    return backend.forward(inp, elementwise, need_grad, grad_into)


def _derivative(inp: FocalInputs, order: int) -> Tensor:
    if order == 1 and backend_name(inp) != "torch":
        grad = evaluate(inp, elementwise=False, need_grad=True)[1]
        assert grad is not None
        return grad
    return torch_kernel.derivative(inp, order)


# --------------------------------------------------------------------------------------------------
# custom operators: the record's fields, then the call's own arguments


def _focal_loss_impl(*args: Any) -> tuple[Tensor, Tensor]:
    """The loss and, if asked, its gradient (empty if not): the operator's implementation.
    ``args``: the record's fields, ``elementwise``, ``need_grad``."""
    inp = FocalInputs(*args[:_N])
    elementwise, need_grad = args[_N:]
    out, grad = evaluate(inp, elementwise, need_grad)
    return out, inp.logits.new_empty(0) if grad is None else grad


_focal_loss_op = torch.library.custom_op(
    "focalrec::focal_loss",
    _focal_loss_impl,
    mutates_args=(),
    schema=f"({SCHEMA}, bool elementwise, bool need_grad) -> (Tensor, Tensor)",
)


@_focal_loss_op.register_fake
def _(*args: Any) -> tuple[Tensor, Tensor]:
    logits = args[0]
    elementwise, need_grad = args[_N:]
    cd = torch.promote_types(logits.dtype, torch.float32)
    out = logits.new_empty(logits.shape if elementwise else (), dtype=cd)
    return out, torch.empty_like(logits) if need_grad else logits.new_empty(0)


def _focal_loss_derivative_impl(*args: Any) -> Tensor:
    """The first or second derivative of each term: the operator's implementation.
    ``args``: the record's fields, ``order``."""
    return _derivative(FocalInputs(*args[:_N]), args[_N])


_focal_loss_derivative_op = torch.library.custom_op(
    "focalrec::focal_loss_derivative",
    _focal_loss_derivative_impl,
    mutates_args=(),
    schema=f"({SCHEMA}, SymInt order) -> Tensor",
)


@_focal_loss_derivative_op.register_fake
def _(*args: Any) -> Tensor:
    return torch.empty_like(args[0])


def _loop_vmap(op: Any) -> Any:
    """A vmap rule that applies ``op`` to each batch element in turn and stacks the results."""

    def rule(info: Any, in_dims: tuple[int | None, ...], *args: Any) -> tuple[Any, Any]:
        results = []
        for b in range(info.batch_size):
            sliced = [
                a if d is None or a is None else a.select(d, b)
                for a, d in zip(args, in_dims, strict=True)
            ]
            results.append(op(*sliced))
        if isinstance(results[0], tuple):
            stacked = tuple(torch.stack(parts) for parts in zip(*results, strict=True))
            return stacked, (0,) * len(stacked)
        return torch.stack(results), 0

    return rule


torch.library.register_vmap("focalrec::focal_loss", _loop_vmap(_focal_loss_op))
torch.library.register_vmap(
    "focalrec::focal_loss_derivative", _loop_vmap(_focal_loss_derivative_op)
)


# --------------------------------------------------------------------------------------------------
# plain eager calls: the operators' implementations, called directly

_PLAIN_TENSORS = (Tensor, torch.nn.Parameter)


def _direct(args: tuple[Any, ...]) -> bool:
    """Whether a call with ``args`` may run the operator's implementation directly.

    Calling a ``torch.library`` operator in eager mode imports ``torch._dynamo`` on its first
    call (a second and over 100 MB in a fresh process). Only the machinery that needs the
    operator gets it: ``torch.compile`` and ``torch.export`` (compiling), ``torch.func``
    transforms (functorch), ``torch.jit.trace``, any torch-function or dispatch mode (fake
    tensors, ``torch.device`` contexts, FLOP counters), tensor subclasses or meta tensors; so
    does a call that autograd records (in a backward with ``create_graph=True``: differentiating
    the second derivative must raise PyTorch's error for an operator without a derivative). A
    plain eager call runs the same Python function without the dispatcher: the same values and
    gradients.
    """
    if (
        torch.compiler.is_compiling()
        or torch._C._are_functorch_transforms_active()
        or torch._C._is_torch_function_mode_enabled()
        or torch._C._len_torch_dispatch_stack() > 0
        or torch._C._get_tracing_state() is not None  # torch.jit.trace
    ):
        return False
    tensors = [a for a in args if isinstance(a, Tensor)]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False  # recorded by autograd: the operator, whose derivative raises if undefined
    return all(type(t) in _PLAIN_TENSORS and t.device.type != "meta" for t in tensors)


def _loss_call(*args: Any) -> tuple[Tensor, Tensor]:
    """``focalrec::focal_loss``, or its implementation directly where :func:`_direct`."""
    out: tuple[Tensor, Tensor] = (_focal_loss_impl if _direct(args) else _focal_loss_op)(*args)
    return out


def _derivative_call(inp: FocalInputs, order: int) -> Tensor:
    """``focalrec::focal_loss_derivative`` of ``inp``, or its implementation directly where
    :func:`_direct`."""
    args = (*values_of(inp), order)
    direct = _direct(args)
    out: Tensor = (_focal_loss_derivative_impl if direct else _focal_loss_derivative_op)(*args)
    return out


# --------------------------------------------------------------------------------------------------
# autograd


class FocalDerivativeFunction(torch.autograd.Function):
    """The first derivative of each term, differentiable once more (its backward is ``f''``).
    Its arguments are the record's fields."""

    generate_vmap_rule = True

    @staticmethod
    def forward(*args: Any) -> Tensor:
        return _derivative_call(FocalInputs(*args), 1)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        tensors, ctx.others = split(FocalInputs(*inputs))
        ctx.save_for_backward(*tensors)
        ctx.save_for_forward(*tensors)

    @staticmethod
    def _second(ctx: Any, tensors: tuple[Tensor | None, ...]) -> Tensor:
        return _derivative_call(join(tensors, ctx.others), 2)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        second = FocalDerivativeFunction._second(ctx, ctx.saved_tensors)
        return (second * grad).to(second.dtype), *((None,) * (_N - 1))


class FocalLossFunction(torch.autograd.Function):
    """The loss (elementwise or summed), differentiable in the logits; see the module docstring.

    Its arguments are the record's fields, ``elementwise`` and ``need_grad``. ``forward`` returns
    ``(loss, grad)``; ``grad`` is a non-differentiable by-product (empty unless ``need_grad``)
    that callers drop.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(*args: Any) -> tuple[Tensor, Tensor]:
        return _loss_call(*args)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        tensors, ctx.others = split(FocalInputs(*inputs[:_N]))
        ctx.elementwise, need_grad = inputs[_N:]
        grad = output[1]
        ctx.mark_non_differentiable(grad)
        ctx.set_materialize_grads(False)  # no zeros for the gradient's (absent) gradient
        ctx.eager = values_readable()  # neither torch.compile nor torch.func is running
        ctx.save_for_forward(*tensors)
        if ctx.eager:
            ctx.kept = grad if need_grad else None  # handed to the first backward
            ctx.save_for_backward(*tensors)
        else:
            ctx.kept = None
            ctx.save_for_backward(*tensors, grad if need_grad else None)

    @staticmethod
    def _inputs(ctx: Any, saved: tuple[Any, ...]) -> FocalInputs:
        """The record again, from the saved tensors (backward's, which may end with the kept
        gradient, or forward mode's) and the other fields."""
        return join(saved[: len(TENSOR_FIELDS)], ctx.others)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor | None, _: Tensor | None) -> tuple[Tensor | None, ...]:
        saved = ctx.saved_tensors
        rest: tuple[None, ...] = (None,) * (_N + 1)
        if grad_out is None:
            return None, *rest
        inp = FocalLossFunction._inputs(ctx, saved)
        logits = inp.logits
        if torch.is_grad_enabled():  # backward is differentiated: a differentiable gradient
            grad = _derivative_function().apply(*values_of(inp))  # type: ignore[no-untyped-call]
            return (grad * grad_out).to(logits.dtype), *rest
        if not ctx.eager:
            kept = saved[len(TENSOR_FIELDS)]
            if kept is None:
                kept = _derivative_call(inp, 1)
            return (kept * grad_out).to(logits.dtype), *rest
        grad = ctx.kept
        ctx.kept = None  # handed on: a second backward (retain_graph=True) recomputes it
        if grad is None:
            grad = _derivative_call(inp, 1)
        if ctx.elementwise or grad_out.device.type != "cpu" or float(grad_out) != 1.0:
            grad.mul_(grad_out.to(grad.dtype))
        return grad, *rest


def _positional(names: tuple[str, ...]) -> inspect.Signature:
    """A signature of these positional parameters. ``torch.compile`` reads the signature of an
    ``autograd.Function``'s ``forward`` to tell whether it takes ``ctx`` (it does not when it has
    one parameter per argument), which ``*args`` hides."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    return inspect.Signature([inspect.Parameter(name, kind) for name in names])


FocalDerivativeFunction.forward.__signature__ = _positional(FIELDS)  # type: ignore[attr-defined]
FocalLossFunction.forward.__signature__ = _positional((*FIELDS, "elementwise", "need_grad"))  # type: ignore[attr-defined]


class _ForwardModeDerivative(FocalDerivativeFunction):
    """:class:`FocalDerivativeFunction` with forward-mode AD (``jvp``), outside torch.compile,
    which cannot trace a custom ``jvp``."""

    @staticmethod
    def jvp(ctx: Any, tangent: Tensor | None, *_: Any) -> Tensor:
        second = FocalDerivativeFunction._second(ctx, ctx.saved_tensors)
        if tangent is None:
            return torch.zeros_like(second)
        return (second * tangent).to(second.dtype)


class _ForwardModeFocalLoss(FocalLossFunction):
    """:class:`FocalLossFunction` with forward-mode AD (``jvp``: ``torch.func.jacfwd``,
    ``torch.func.hessian``), outside torch.compile, which cannot trace a custom ``jvp``."""

    @staticmethod
    def jvp(ctx: Any, tangent: Tensor | None, *_: Any) -> tuple[Tensor, None]:
        inp = FocalLossFunction._inputs(ctx, ctx.saved_tensors)
        logits = inp.logits
        cd = torch.promote_types(logits.dtype, torch.float32)
        if tangent is None:
            out = logits.new_zeros(logits.shape if ctx.elementwise else (), dtype=cd)
            return out, None
        grad = _derivative_function().apply(*values_of(inp))  # type: ignore[no-untyped-call]
        product = (grad * tangent).to(cd)
        return (product if ctx.elementwise else product.sum()), None


def _derivative_function() -> type[FocalDerivativeFunction]:
    return FocalDerivativeFunction if torch.compiler.is_compiling() else _ForwardModeDerivative


def focal_loss(inp: FocalInputs, elementwise: bool) -> Tensor:
    """The loss of ``inp`` (elementwise ``(R, C)``, or the sum), differentiable in its logits."""
    need_grad = torch.is_grad_enabled() and inp.logits.requires_grad
    function = FocalLossFunction if torch.compiler.is_compiling() else _ForwardModeFocalLoss
    out: tuple[Tensor, Tensor] = function.apply(*values_of(inp), elementwise, need_grad)  # type: ignore[no-untyped-call]
    return out[0]
