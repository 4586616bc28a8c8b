"""The deep hypothesis profile: FOCALREC_HYPOTHESIS_DEPTH multiplies every property's examples."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DEPTH_VARIABLE, REPO_ROOT

PROPERTIES = """
import pytest
from hypothesis import Phase, given, settings, strategies as st

def _log(path, name):
    with open(path, "a") as f:
        f.write(name + "\\n")

@settings(max_examples=5, database=None, phases=[Phase.generate])
@given(st.integers())
def test_fixed(x):
    _log(LOG, "fixed")

@pytest.mark.parametrize("p", [1, 2])
@settings(max_examples=2, database=None, phases=[Phase.generate])
@given(st.integers())
def test_parametrized(p, x):
    _log(LOG, "param")

class TestMethods:
    @settings(max_examples=3, database=None, phases=[Phase.generate])
    @given(st.integers())
    def test_method(self, x):
        _log(LOG, "method")
"""


def _counts(tmp_path: Path, depth: str | None) -> dict[str, int]:
    log = tmp_path / f"log-{depth}.txt"
    (tmp_path / "conftest.py").write_text((REPO_ROOT / "tests" / "conftest.py").read_text())
    (tmp_path / "test_props.py").write_text(f"LOG = {str(log)!r}\n" + PROPERTIES)
    env = {k: v for k, v in os.environ.items() if k != DEPTH_VARIABLE}
    if depth is not None:
        env[DEPTH_VARIABLE] = depth
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    names = log.read_text().split()
    return {name: names.count(name) for name in ("fixed", "param", "method")}


def test_depth_multiplies_every_property(tmp_path: Path) -> None:
    assert _counts(tmp_path, None) == {"fixed": 5, "param": 4, "method": 3}
    assert _counts(tmp_path, "3") == {"fixed": 15, "param": 12, "method": 9}


@pytest.mark.parametrize("bad", ["0", "-2", "deep"])
def test_bad_depth_is_a_usage_error(tmp_path: Path, bad: str) -> None:
    (tmp_path / "conftest.py").write_text((REPO_ROOT / "tests" / "conftest.py").read_text())
    (tmp_path / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env={**os.environ, DEPTH_VARIABLE: bad},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert f"{DEPTH_VARIABLE} must be an integer >= 1, got {bad!r}" in done.stdout + done.stderr
