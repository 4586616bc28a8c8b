"""Release metadata and the GitHub Actions workflows, checked for structure (they run on GitHub)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

import focalrec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _workflow(name: str) -> dict[Any, Any]:
    data = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{name} is not a YAML mapping"
    # YAML 1.1 reads the bare key `on` as the boolean True.
    if True in data:
        data["on"] = data.pop(True)
    return data


def _steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    steps = job.get("steps", [])
    assert isinstance(steps, list)
    return steps


def _python_classifiers(project: dict[str, Any]) -> set[str]:
    prefix = "Programming Language :: Python :: "
    return {
        c.removeprefix(prefix)
        for c in project["classifiers"]
        if re.fullmatch(re.escape(prefix) + r"3\.\d+", c)
    }


def test_version_is_single_sourced_and_in_the_changelog() -> None:
    pyproject = _pyproject()
    assert "version" not in pyproject["project"]
    assert pyproject["project"]["dynamic"] == ["version"]
    assert pyproject["tool"]["hatch"]["version"]["path"] == "src/focalrec/__init__.py"
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.dev\d+)?", focalrec.__version__)
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"## [{focalrec.__version__}]" in changelog


def test_project_metadata() -> None:
    project = _pyproject()["project"]
    assert project["license"] == "MIT"
    assert "MIT License" in (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert project["readme"] == "README.md"
    assert {"Homepage", "Documentation", "Source", "Issues", "Changelog"} <= set(project["urls"])
    minimum = re.fullmatch(r">=3\.(\d+)", project["requires-python"])
    assert minimum is not None
    versions = _python_classifiers(project)
    assert min(int(v.split(".")[1]) for v in versions) == int(minimum.group(1))
    assert "Typing :: Typed" in project["classifiers"]
    assert (ROOT / "src" / "focalrec" / "py.typed").is_file()


def test_docs_extra_holds_what_mkdocs_yml_uses() -> None:
    docs_extra = " ".join(_pyproject()["project"]["optional-dependencies"]["docs"])
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert "name: material" in config
    assert "mkdocs-material" in docs_extra
    assert "mkdocstrings" in config
    assert "mkdocstrings[python]" in docs_extra
    assert "pymdownx." in config
    assert "pymdown-extensions" in docs_extra


def test_ci_workflow_tests_every_os_and_supported_python() -> None:
    wf = _workflow("ci.yml")
    assert {"push", "pull_request"} <= set(wf["on"])
    tests = wf["jobs"]["tests"]
    matrix = tests["strategy"]["matrix"]
    assert set(matrix["os"]) == {"ubuntu-latest", "macos-latest", "windows-latest"}
    assert set(matrix["python-version"]) == _python_classifiers(_pyproject()["project"])
    runs = "\n".join(str(step.get("run", "")) for step in _steps(tests))
    index = wf["env"]["TORCH_INDEX_URL"]
    assert index == "https://download.pytorch.org/whl/cpu"
    assert re.search(r"pip install torch --index-url \"\$TORCH_INDEX_URL\"", runs)
    assert "python -m pytest" in runs
    for name in ("lint", "package", "docs"):
        assert name in wf["jobs"], f"ci.yml lacks the {name!r} job"
    docs_runs = "\n".join(str(step.get("run", "")) for step in _steps(wf["jobs"]["docs"]))
    assert "mkdocs build --strict" in docs_runs


def test_release_workflow_publishes_with_trusted_publishing_on_a_tag() -> None:
    wf = _workflow("release.yml")
    assert wf["on"]["push"]["tags"] == ["v*"]
    sdist, publish = wf["jobs"]["sdist"], wf["jobs"]["publish"]
    sdist_runs = "\n".join(str(step.get("run", "")) for step in _steps(sdist))
    assert "python -m build --sdist" in sdist_runs
    assert "twine check" in sdist_runs
    assert set(publish["needs"]) == {"sdist", "wheels"}
    assert "refs/tags/v" in publish["if"]  # a manual run builds and tests, and publishes nothing
    assert publish["permissions"] == {"id-token": "write"}
    assert publish["environment"]["name"] == "pypi"
    uses = [step.get("uses", "") for step in _steps(publish)]
    assert any(u.startswith("pypa/gh-action-pypi-publish@") for u in uses)
    for step in _steps(publish):
        # Trusted Publishing: no stored token or password is passed to the action.
        assert not {"password", "user"} & set(step.get("with", {}) or {})
    assert wf.get("permissions") == {"contents": "read"}


def test_release_workflow_builds_and_tests_a_platform_wheel_per_platform() -> None:
    wheels = _workflow("release.yml")["jobs"]["wheels"]
    matrix = wheels["strategy"]["matrix"]["include"]
    # manylinux x86-64 and aarch64 (native ARM runners), macOS arm64, Windows x86-64.
    assert {(m["os"], m["archs"]) for m in matrix} == {
        ("ubuntu-latest", "x86_64"),
        ("ubuntu-24.04-arm", "aarch64"),
        ("macos-14", "arm64"),
        ("windows-latest", "AMD64"),
    }
    (cibw,) = [s for s in _steps(wheels) if str(s.get("uses", "")).startswith("pypa/cibuildwheel@")]
    env = cibw["env"]
    assert env["CIBW_ARCHS"] == "${{ matrix.archs }}"
    # One py3-none wheel per platform, built on the oldest Python and reused (and tested) on
    # the newest: cibuildwheel reuses a py3-none wheel for every later interpreter.
    supported = sorted(_python_classifiers(_pyproject()["project"]), key=lambda v: int(v[2:]))
    oldest, newest = (f"cp{v.replace('.', '')}-*" for v in (supported[0], supported[-1]))
    assert env["CIBW_BUILD"].split() == [oldest, newest]
    assert "FOCALREC_BUILD_KERNELS=require" in env["CIBW_ENVIRONMENT"]
    assert "download.pytorch.org/whl/cpu" in env["CIBW_BEFORE_TEST"]
    assert "tests/smoke_installed.py --require-prebuilt" in env["CIBW_TEST_COMMAND"]
    uploads = [s for s in _steps(wheels) if str(s.get("uses", "")).startswith("actions/upload")]
    assert uploads
    assert uploads[0]["with"]["path"] == "wheelhouse/*.whl"
    publish_steps = _steps(_workflow("release.yml")["jobs"]["publish"])
    downloads = [s for s in publish_steps if str(s.get("uses", "")).startswith("actions/download")]
    assert downloads[0]["with"]["merge-multiple"] is True


@pytest.mark.parametrize("name", sorted(p.name for p in WORKFLOWS.glob("*.yml")))
def test_every_workflow_pins_action_versions(name: str) -> None:
    wf = _workflow(name)
    for job_name, job in wf["jobs"].items():
        assert "runs-on" in job, f"{name}: job {job_name!r} has no runs-on"
        for step in _steps(job):
            if "uses" in step:
                assert "@" in step["uses"], f"{name}: {step['uses']!r} is not pinned"


def _build(out: Path, source: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), *args, str(source)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m build`` of this tree: the sdist, and the wheel built from that sdist."""
    pytest.importorskip("build", reason="needs the build frontend (the dev extra)")
    out = tmp_path_factory.mktemp("dist")
    _build(out, ROOT)
    return out


def _only(folder: Path, pattern: str) -> Path:
    (found,) = folder.glob(pattern)
    return found


@pytest.mark.slow
def test_the_wheel_carries_the_kernel_for_this_platform(dist: Path) -> None:
    wheel = _only(dist, "*.whl")
    pytest.importorskip("packaging")
    from packaging.tags import sys_tags
    from packaging.utils import parse_wheel_filename

    from focalrec._focal import prebuilt

    (tag,) = parse_wheel_filename(wheel.name)[3]
    # No Python ABI in the kernel: one wheel per platform, for every Python 3.
    assert (tag.interpreter, tag.abi) == ("py3", "none")
    assert tag.platform != "any"
    assert tag in set(sys_tags())  # this machine's platform (linux_x86_64 before auditwheel)
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        wheel_meta = z.read(f"focalrec-{focalrec.__version__}.dist-info/WHEEL").decode()
        manifest = json.loads(z.read("focalrec/_focal/_kernels/manifest.json"))
        source = z.read("focalrec/_focal/native.c")
    assert "Root-Is-Purelib: false" in wheel_meta
    assert manifest["arch"] == prebuilt.machine()
    assert manifest["source_sha256"] == hashlib.sha256(source).hexdigest()
    suffix = prebuilt._suffix(sys.platform)
    expected = {f"focal-{v.name}{suffix}" for v in prebuilt.variants()}
    assert {entry["file"] for entry in manifest["variants"].values()} == expected
    kernels = {n.rsplit("/", 1)[1] for n in names if n.startswith("focalrec/_focal/_kernels/")}
    assert kernels == expected | {"manifest.json"}
    for entry in manifest["variants"].values():
        assert "-march=native" not in entry["flags"]


@pytest.mark.slow
def test_the_sdist_holds_the_kernel_source_and_the_hook_but_no_binary(dist: Path) -> None:
    with tarfile.open(_only(dist, "*.tar.gz")) as tar:
        names = [n.split("/", 1)[1] for n in tar.getnames() if "/" in n]
    for needed in (
        "hatch_build.py",
        "src/focalrec/_focal/native.c",
        "src/focalrec/_focal/prebuilt.py",
    ):
        assert needed in names
    binaries = [n for n in names if n.endswith((".so", ".dylib", ".dll", ".pyd", ".o", ".obj"))]
    assert binaries == []
    assert not [n for n in names if "_focal/_kernels" in n]


@pytest.mark.slow
def test_a_wheel_from_the_sdist_without_a_compiler_is_the_pure_one(
    dist: Path, tmp_path: Path
) -> None:
    """Where the kernel does not compile, installing from the sdist still works (run-time build)."""
    with tarfile.open(_only(dist, "*.tar.gz")) as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12: extraction filters
            tar.extractall(tmp_path, filter="data")
        else:  # pragma: no cover - our own sdist, built just now
            tar.extractall(tmp_path)
    source = _only(tmp_path, "focalrec-*")
    env = {k: v for k, v in os.environ.items() if k != "FOCALREC_BUILD_KERNELS"}
    env["CC"] = "/bin/false"
    env["PATH"] = str(Path(sys.executable).parent)
    out = tmp_path / "out"
    log = _build(out, source, "--wheel", env=env)
    wheel = _only(out, "*.whl")
    assert wheel.name.endswith("-py3-none-any.whl")
    assert "building a wheel without a prebuilt kernel" in log
    with zipfile.ZipFile(wheel) as z:
        assert not [n for n in z.namelist() if "_focal/_kernels" in n]
        assert "focalrec/_focal/native.c" in z.namelist()
    env["FOCALREC_BUILD_KERNELS"] = "require"
    failed = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(source)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert failed.returncode != 0
    assert "FOCALREC_BUILD_KERNELS=require" in failed.stdout + failed.stderr


def test_bug_report_template_asks_for_show_config() -> None:
    template = ROOT / ".github" / "ISSUE_TEMPLATE" / "bug_report.yml"
    data = yaml.safe_load(template.read_text(encoding="utf-8"))
    fields = {item["id"]: item for item in data["body"]}
    config = fields["config"]
    assert "focalrec.show_config()" in config["attributes"]["description"]
    assert config["validations"]["required"] is True
    assert "show_config" in focalrec.__all__
