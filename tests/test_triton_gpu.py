"""The Triton backend on a CUDA GPU: more than 2**31 elements, no host synchronization, speed.

Skipped without CUDA: Triton's interpreter cannot run 2**31 elements. The rest of the kernel's
contract runs on the GPU too, in ``tests/test_triton_kernel.py`` (its device is CUDA when there
is one). No test here asserts a timing.
"""

from __future__ import annotations

import statistics

import pytest
import torch
import torch.nn.functional as F

from focalrec import sigmoid_focal_loss
from focalrec._focal import op, torch_kernel, triton_kernel
from focalrec._focal.inputs import FocalInputs
from focalrec.losses import REDUCTIONS

pytest.importorskip("triton", reason="triton is not installed (the test extra installs it)")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_more_than_2_31_elements() -> None:
    rows, cols = 2**16 + 3, 2**15 + 7  # 2**31 + 557,064 elements, bfloat16: 4.3 GB a tensor
    free, _ = torch.cuda.mem_get_info()
    if free < 24e9:
        pytest.skip(f"needs about 24 GB of free GPU memory, {free / 1e9:.0f} GB free")
    assert rows * cols > 2**31
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(rows, cols, generator=g, device="cuda", dtype=torch.bfloat16).mul_(3.0)
    index = torch.randint(-1, cols, (rows, 3), generator=g, device="cuda")
    index[-1] = torch.tensor([cols - 1, cols - 2, -1])  # positives at the very last offsets
    weight = torch.rand(1, cols, generator=g, device="cuda").expand(rows, cols)  # stride 0
    scale = torch.tensor(1.0 / (rows * cols), device="cuda")

    def problem(r: slice) -> FocalInputs:
        return FocalInputs(x[r], None, index[r], 0.25, None, 2.0, weight[r], scale)

    whole = slice(0, rows)
    total, grad = triton_kernel.forward(problem(whole), elementwise=False, need_grad=True)
    assert grad is not None
    # The last rows sit beyond 2**31 elements: alone they are small, in the block they are not.
    tail = slice(rows - 3, rows)
    tail_values, tail_grad = triton_kernel.forward(problem(tail), elementwise=True, need_grad=True)
    assert torch.equal(grad[tail], tail_grad)
    assert tail_grad[-1, -2:].float().abs().min() > 0  # the positives' gradients were written
    expected, _ = torch_kernel.forward(problem(whole), elementwise=False, need_grad=False)
    torch.testing.assert_close(total, expected, rtol=1e-5, atol=0.0)
    _, head_grad = torch_kernel.forward(problem(slice(0, 3)), elementwise=False, need_grad=True)
    torch.testing.assert_close(grad[:3], head_grad)
    assert torch.isfinite(tail_values).all()


def test_no_host_synchronization() -> None:
    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(512, 3001, generator=g, device="cuda")
    index = torch.randint(-1, 3001, (512, 4), generator=g, device="cuda")
    weight = torch.rand(3001, generator=g, device="cuda")
    dense = torch.rand(512, 3001, generator=g, device="cuda") < 0.01
    inp = FocalInputs(x, None, index, 0.25, None, 2.0, None, None)
    assert op.backend_name(inp) == "triton"

    def steps() -> None:
        for reduction in REDUCTIONS:
            for targets in (index, dense):
                xs = x.clone().requires_grad_()
                loss = sigmoid_focal_loss(
                    xs, targets, reduction=reduction, weight=weight, validate_args=False
                )
                loss.sum().backward()

    steps()  # compiles the kernel's variants
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        steps()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_speed_sanity(dtype: torch.dtype, capsys: pytest.CaptureFixture[str]) -> None:
    """Times forward + backward against BCE-with-logits and prints the ratio; asserts none."""
    g = torch.Generator(device="cuda").manual_seed(2)
    x = torch.randn(4096, 5501, generator=g, device="cuda", dtype=dtype)
    index = torch.randint(0, 5501, (4096, 3), generator=g, device="cuda")
    dense = torch.zeros_like(x).scatter_(1, index, 1.0)

    def focal() -> None:
        xs = x.clone().requires_grad_()
        sigmoid_focal_loss(xs, index, reduction="sum").backward()

    def bce() -> None:
        xs = x.clone().requires_grad_()
        F.binary_cross_entropy_with_logits(xs, dense, reduction="sum").backward()

    times: dict[str, list[float]] = {"focal": [], "bce": []}
    for fn in (focal, bce):
        fn()
    for _ in range(10):
        for name, fn in (("focal", focal), ("bce", bce)):
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            end.synchronize()
            times[name].append(begin.elapsed_time(end))
    ratio = statistics.median(times["focal"]) / statistics.median(times["bce"])
    with capsys.disabled():
        print(f"\n{dtype}: focalrec / BCE-with-logits, forward + backward: {ratio:.2f}x")
    assert ratio > 0
