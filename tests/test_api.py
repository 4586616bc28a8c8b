"""The public API keeps its naming rule, and the generated table of it is current."""

from __future__ import annotations

import inspect
import runpy
from pathlib import Path

import pytest

import focalrec

ROOT = Path(__file__).resolve().parents[1]
API_TABLE = ROOT / "docs" / "scripts" / "api_table.py"

LOSSES = ["sigmoid_focal_loss", "asymmetric_loss"]
FUSED = ["linear_sigmoid_focal_loss", "linear_asymmetric_loss"]
METRICS = [
    "hit_rate_at_k",
    "map_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "precision_at_k",
    "ranking_metrics_at_k",
    "recall_at_k",
]
STREAMING = ["MeanAveragePrecisionAtK", "RankingMetricsAtK"]


def _public_callables() -> list[tuple[str, object]]:
    return [(n, getattr(focalrec, n)) for n in focalrec.__all__ if callable(getattr(focalrec, n))]


def _first(fn: object, count: int) -> list[str]:
    return list(inspect.signature(fn).parameters)[:count]  # type: ignore[arg-type]


@pytest.mark.parametrize("name", LOSSES)
def test_losses_take_input_target(name: str) -> None:
    assert _first(getattr(focalrec, name), 2) == ["input", "target"]


def test_loss_modules_take_input_target() -> None:
    assert _first(focalrec.FocalLoss.forward, 3) == ["self", "input", "target"]
    assert _first(focalrec.LinearFocalLoss.forward, 3) == ["self", "input", "target"]


@pytest.mark.parametrize("name", FUSED)
def test_fused_losses_take_the_output_layer_as_f_linear_cross_entropy(name: str) -> None:
    fn = getattr(focalrec, name)
    assert _first(fn, 3) == ["input", "linear_weight", "target"]
    assert "linear_bias" in inspect.signature(fn).parameters


@pytest.mark.parametrize("name", METRICS)
def test_metrics_take_preds_target(name: str) -> None:
    assert _first(getattr(focalrec, name), 2) == ["preds", "target"]


@pytest.mark.parametrize("name", STREAMING)
def test_streaming_metrics_update_with_preds_target(name: str) -> None:
    assert _first(getattr(focalrec, name).update, 3) == ["self", "preds", "target"]


def test_topk_from_embeddings_names_the_output_layer_as_the_fused_loss() -> None:
    params = inspect.signature(focalrec.topk_items_from_embeddings).parameters
    assert list(params)[:2] == ["input", "linear_weight"]
    assert "linear_bias" in params


def test_no_public_function_uses_a_retired_name() -> None:
    retired = {"logits", "targets", "queries", "item_embeddings", "item_bias"}
    for name, obj in _public_callables():
        if isinstance(obj, type) and issubclass(obj, BaseException):
            continue  # a warning or an error: its arguments are BaseException's
        for fn in (obj, getattr(obj, "forward", None), getattr(obj, "update", None)):
            if fn is None or not callable(fn):
                continue
            used = retired & set(inspect.signature(fn).parameters)
            assert not used, f"{name}: {sorted(used)}"


def test_every_chunk_size_is_a_rows_items_pair() -> None:
    found = 0
    for name, obj in _public_callables():
        fn = obj.__init__ if inspect.isclass(obj) else obj
        params = inspect.signature(fn).parameters  # type: ignore[misc]
        if "chunk_size" in params:
            found += 1
            # The modules use postponed annotations: the annotation is its source text.
            assert params["chunk_size"].annotation == "tuple[int, int] | None", name
    assert found >= 3  # the fused loss, its module, top-k from embeddings


def test_every_public_name_has_a_docstring_and_is_sorted() -> None:
    assert list(focalrec.__all__) == sorted(focalrec.__all__)
    for name, obj in _public_callables():
        assert inspect.getdoc(obj), name


def test_the_api_table_is_current() -> None:
    table = runpy.run_path(str(API_TABLE))
    rendered = table["render"]()
    committed = (ROOT / "docs" / "generated" / "api_table.md").read_text(encoding="utf-8")
    assert rendered == committed, "run: python docs/scripts/api_table.py"
    for name in focalrec.__all__:
        assert f"`{name}`" in rendered, name


# The kernel-variant benchmark swaps the compiled library under the loss and builds the wheel's
# variants with the build hook's code: a tool for the kernel's maintainers, which no public name
# can do. Every other benchmark measures what a user calls.
KERNEL_TOOLS = {"bench_kernels.py"}


def test_benchmarks_import_public_names_only() -> None:
    import ast

    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        if script.name in KERNEL_TOOLS:
            continue
        tree = ast.parse(script.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            modules: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            for module in modules:
                parts = module.split(".")
                if parts[0] == "focalrec":
                    assert not any(p.startswith("_") for p in parts), f"{script.name}: {module}"
