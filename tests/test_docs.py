"""The documentation's code runs, and its pages include what they claim to include."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SNIPPETS = sorted((DOCS / "snippets").glob("*.py"))
SNIPPET_INCLUDE = re.compile(r'--8<--\s+"([^"]+)"')
# Snippets that show an optional integration run only where its library is installed.
OPTIONAL = {"metrics_torchmetrics.py": "torchmetrics", "lightning_module.py": "lightning"}


def _included_files() -> set[str]:
    found: set[str] = set()
    for page in DOCS.rglob("*.md"):
        found.update(SNIPPET_INCLUDE.findall(page.read_text(encoding="utf-8")))
    return found


@pytest.mark.parametrize("snippet", SNIPPETS, ids=lambda p: p.name)
def test_snippet_runs(snippet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if snippet.name in OPTIONAL:
        pytest.importorskip(OPTIONAL[snippet.name])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    runpy.run_path(str(snippet), run_name="__main__")


@pytest.mark.parametrize("snippet", SNIPPETS, ids=lambda p: p.name)
def test_snippet_compiles(snippet: Path) -> None:
    compile(snippet.read_text(encoding="utf-8"), str(snippet), "exec")


def test_every_snippet_is_on_a_page() -> None:
    included = _included_files()
    orphans = [p.name for p in SNIPPETS if f"docs/snippets/{p.name}" not in included]
    assert not orphans, f"snippets no page includes: {orphans}"


def test_quick_start_is_taken_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"--8<-- \[start:quickstart\](.*?)--8<-- \[end:quickstart\]", readme, re.S)
    assert section is not None, "README.md lacks the quickstart section markers"
    commands = [line for line in section.group(1).splitlines() if line.startswith("pip ")]
    assert commands == [
        'pip install -e ".[examples]" && python examples/challenge.py',
        'pip install -e ".[test]" && python -m pytest',
    ]
    assert "README.md:quickstart" in _included_files()


def test_api_pages_name_public_modules_or_names() -> None:
    import focalrec

    pages = sorted((DOCS / "api").glob("*.md"))
    assert pages
    for page in pages:
        text = page.read_text(encoding="utf-8")
        targets = re.findall(r"^::: ([\w.]+)\s*$", text, re.M)
        if page.name == "index.md":
            assert not targets
            assert "docs/generated/api_table.md" in text
            continue
        assert targets, f"{page.name} documents nothing"
        for target in targets:
            parts = target.split(".")
            assert not any(p.startswith("_") for p in parts), f"{page.name}: private {target}"
            if len(parts) == 2 and parts[1] in focalrec.__all__:
                continue  # a public name of the package, documented on its own
            path = ROOT / "src" / Path(*parts)
            assert path.with_suffix(".py").is_file() or (path / "__init__.py").is_file(), target


def test_getting_started_loop_learns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace = runpy.run_path(str(DOCS / "snippets" / "training_loop.py"), run_name="__main__")
    # 3 relevant items among 500: a random ranking scores about 0.006.
    assert namespace["metric"].compute().item() > 0.3


def test_generated_tables_match_their_json() -> None:
    render = runpy.run_path(str(DOCS / "scripts" / "render.py"))
    assert render["render"](check=True, figures=False) == []


def test_docs_assets_are_served_from_the_site_itself() -> None:
    """The math renders offline: no script or stylesheet of the site comes from another host."""
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    assets = [*config.get("extra_javascript", []), *config.get("extra_css", [])]
    assert assets, "mkdocs.yml names no extra_javascript / extra_css"
    remote = [a for a in assets if re.match(r"(?i)^(https?:)?//", str(a))]
    assert not remote, f"assets fetched from another host: {remote}"
    assert config["theme"].get("font") is False, "the theme would fetch its fonts from Google Fonts"
    missing = [a for a in assets if not (DOCS / str(a)).is_file()]
    assert not missing, f"assets missing under docs/: {missing}"
    css = (DOCS / "vendor/katex/katex.min.css").read_text(encoding="utf-8")
    fonts = set(re.findall(r"url\((fonts/[^)]+\.woff2)\)", css))
    assert fonts, "katex.min.css names no woff2 font"
    absent = sorted(f for f in fonts if not (DOCS / "vendor/katex" / f).is_file())
    assert not absent, f"fonts katex.min.css needs but docs/vendor/katex lacks: {absent}"
