"""Release metadata and the GitHub Actions workflows, checked for structure (they run on GitHub)."""

from __future__ import annotations

import re
import sys
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
    build, publish = wf["jobs"]["build"], wf["jobs"]["publish"]
    build_runs = "\n".join(str(step.get("run", "")) for step in _steps(build))
    assert "python -m build" in build_runs
    assert "twine check" in build_runs
    assert publish["needs"] == "build"
    assert publish["permissions"] == {"id-token": "write"}
    assert publish["environment"]["name"] == "pypi"
    uses = [step.get("uses", "") for step in _steps(publish)]
    assert any(u.startswith("pypa/gh-action-pypi-publish@") for u in uses)
    for step in _steps(publish):
        # Trusted Publishing: no stored token or password is passed to the action.
        assert not {"password", "user"} & set(step.get("with", {}) or {})
    assert wf.get("permissions") == {"contents": "read"}


@pytest.mark.parametrize("name", sorted(p.name for p in WORKFLOWS.glob("*.yml")))
def test_every_workflow_pins_action_versions(name: str) -> None:
    wf = _workflow(name)
    for job_name, job in wf["jobs"].items():
        assert "runs-on" in job, f"{name}: job {job_name!r} has no runs-on"
        for step in _steps(job):
            if "uses" in step:
                assert "@" in step["uses"], f"{name}: {step['uses']!r} is not pinned"


def test_bug_report_template_asks_for_show_config() -> None:
    template = ROOT / ".github" / "ISSUE_TEMPLATE" / "bug_report.yml"
    data = yaml.safe_load(template.read_text(encoding="utf-8"))
    fields = {item["id"]: item for item in data["body"]}
    config = fields["config"]
    assert "focalrec.show_config()" in config["attributes"]["description"]
    assert config["validations"]["required"] is True
    assert "show_config" in focalrec.__all__
