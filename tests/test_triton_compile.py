"""The Triton kernel compiles for NVIDIA and AMD GPUs: checked ahead of time, without a GPU.

Triton's interpreter (``tests/test_triton_kernel.py``) runs the kernel's Python with numpy; it
does not lower it, so code that only the compiler rejects would pass there. Triton compiles for a
named GPU on any machine (PTX and a cubin with the ``ptxas`` it ships; AMDGCN and an HSA code
object), so each variant below is compiled here exactly as a launch would specialize it, in a
subprocess: this test session has Triton's interpreter on (``tests/conftest.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton", reason="triton is not installed (the test extra installs it)")

# Each variant: logits dtype, targets, gamma, alpha, weight, outputs; and the GPU it compiles for.
VARIANTS = [
    {"dtype": "bfloat16", "targets": "index", "gamma": 2.0, "alpha": 0.25, "weight": "row",
     "elementwise": False, "target": ["cuda", 90, 32]},
    {"dtype": "float32", "targets": "soft", "gamma": 0.5, "alpha": "per-class", "weight": None,
     "elementwise": True, "target": ["cuda", 80, 32]},
    {"dtype": "float16", "targets": "bool", "gamma": 2.5, "alpha": None, "weight": "full",
     "elementwise": False, "target": ["hip", "gfx942", 64]},
]  # fmt: skip

SCRIPT = r"""
import json, sys
import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.jit import mangle_type

from focalrec._focal import triton_kernel
from focalrec._focal.inputs import FocalInputs


def compile_variant(v):
    rows, cols = 64, 3000
    x = torch.zeros(rows, cols, dtype=getattr(torch, v["dtype"]))
    index = dense = None
    if v["targets"] == "index":
        index = torch.zeros(rows, 3, dtype=torch.long)
    elif v["targets"] == "bool":
        dense = torch.zeros(rows, cols, dtype=torch.bool)
    else:
        dense = torch.zeros(rows, cols)
    alpha_vec = torch.zeros(cols) if v["alpha"] == "per-class" else None
    alpha = v["alpha"] if isinstance(v["alpha"], float) else None
    weight = {"row": torch.zeros(rows, 1).expand(rows, cols), "full": torch.zeros(rows, cols)}.get(
        v["weight"]
    )
    inp = FocalInputs(x, dense, index, alpha, alpha_vec, v["gamma"], weight, torch.tensor(0.5))
    value = torch.zeros(rows, cols) if v["elementwise"] else None
    partial = None if v["elementwise"] else torch.zeros(100)
    args, constants = triton_kernel.launch_arguments(inp, torch.empty_like(x), value, partial)
    kernel = triton_kernel._kernel(False)
    assert isinstance(kernel, triton.runtime.jit.JITFunction), type(kernel)
    names = [n for n in kernel.arg_names if n not in constants]
    signature = {name: mangle_type(arg) for name, arg in zip(names, args, strict=True)}
    signature.update({name: "constexpr" for name in constants})
    # As a launch specializes: torch's allocations and these strides are multiples of 16 bytes.
    attrs = {
        (kernel.arg_names.index(name),): [["tt.divisibility", 16]]
        for name, arg in zip(names, args)
        if isinstance(arg, torch.Tensor) or (isinstance(arg, int) and arg % 16 == 0 and arg > 0)
    }
    try:
        source = ASTSource(fn=kernel, signature=signature, constexprs=constants, attrs=attrs)
    except TypeError:  # older Triton (3.2): constants by name, no attributes
        source = ASTSource(kernel, signature, constants)
    options = {"num_warps": triton_kernel.NUM_WARPS, "enable_fp_fusion": True}
    compiled = triton.compile(source, target=GPUTarget(*v["target"]), options=options)
    return sorted(compiled.asm)


for variant in json.loads(sys.argv[1]):
    print(json.dumps(compile_variant(variant)), flush=True)
"""


@pytest.mark.slow
def test_kernel_compiles_for_gpus() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(VARIANTS)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    results = [json.loads(line) for line in done.stdout.strip().splitlines()]
    assert len(results) == len(VARIANTS)
    for variant, binaries in zip(VARIANTS, results, strict=True):
        assert ("cubin" if variant["target"][0] == "cuda" else "hsaco") in binaries, variant
