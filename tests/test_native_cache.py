"""The compiled kernel's cache cannot hurt: hostile cache states, each in a fresh process.

Every case runs in a subprocess with its own ``FOCALREC_CACHE_DIR``, so that a crash (a SIGBUS
from loading a truncated library) fails the test instead of killing pytest, and so that each
process starts as a user's would: nothing loaded, the cache as the case leaves it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from focalrec._focal import native

needs_native = pytest.mark.skipif(
    native.load() is None, reason=f"no compiled kernel here: {native.unavailable()}"
)

# Runs the loss (forward and backward, on the default backend) a few times and prints what the
# process saw: the backend chosen, where the kernel came from, why not, and how many times the
# compiler's version was asked and the kernel loaded.
PROBE = textwrap.dedent(
    """
    import json, subprocess, warnings
    import torch
    from focalrec import SlowPathWarning, show_config, sigmoid_focal_loss
    from focalrec._focal import native, op
    from focalrec._focal.inputs import FocalInputs

    calls = {"version": 0, "load": 0}
    run = subprocess.run
    def counting_run(cmd, *args, **kwargs):
        calls["version"] += "--version" in cmd
        return run(cmd, *args, **kwargs)
    subprocess.run = counting_run
    load = native._load
    def counting_load():
        calls["load"] += 1
        return load()
    native._load = counting_load

    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(0), requires_grad=True)
    values = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            loss = sigmoid_focal_loss(x, torch.tensor([[0, 2]] * 6))
            loss.backward()
            values.append(loss.item())
    config = show_config()
    inp = FocalInputs(x, None, None, 0.25, None, 2.0, None, None)
    print(json.dumps({
        "backend": op.backend_name(inp),
        "origin": native.origin(),
        "reason": native.unavailable(),
        "calls": calls,
        "values": values,
        "warnings": [str(w.message) for w in caught],
        "slow_path_warnings": sum(w.category is SlowPathWarning for w in caught),
        "warned_at": [w.filename for w in caught],
        "config": config,
    }))
    """
)


def _env(cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FOCALREC_BACKEND", "CC")}
    env.update(
        FOCALREC_CACHE_DIR=str(cache),
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT / "tests")]),
        OMP_NUM_THREADS="1",
    )
    env.update(extra)
    return env


def _without_root_write() -> list[str]:
    """A command prefix under which permission bits bind (root ignores them otherwise)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: a read-only folder cannot be made")
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", "--"]


def _probe(cache: Path, *, prefix: list[str] | None = None, **extra: str) -> dict[str, object]:
    """Run :data:`PROBE` in a fresh process; its report (the test fails on any crash)."""
    done = subprocess.run(
        [*(prefix or []), sys.executable, "-c", PROBE],
        env=_env(cache, **extra),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"exit status {done.returncode}:\n{done.stderr[-3000:]}"
    report: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A build and its record, made once (in this process) for the cases to copy."""
    folder = tmp_path_factory.mktemp("template")
    compiler = native._compiler()
    assert compiler is not None
    name = native._build_name(compiler, native._compiler_version(compiler))
    lib = native._build_and_open(compiler, folder, name)
    assert not isinstance(lib, str), lib
    return folder / name


def _cached_build(cache: Path, template: Path) -> Path:
    """``cache`` holding a copy of the template build and its record; the build's path."""
    cache.mkdir(mode=0o700, exist_ok=True)
    for source in (template, native._record_path(template)):
        shutil.copy2(source, cache / source.name)
    return cache / template.name


def _matches_record(build: Path) -> bool:
    record = json.loads(build.with_name(build.name + ".json").read_text())
    return bool(record == native._fingerprint(build))


@needs_native
def test_a_build_is_cached_with_its_record(tmp_path: Path, template: Path) -> None:
    cache = tmp_path / "cache"
    report = _probe(cache)
    build = cache / template.name
    assert report["origin"] == f"built at run time into {build}"
    assert report["calls"] == {"version": 1, "load": 1}
    assert sorted(p.name for p in cache.iterdir()) == [build.name, build.name + ".json"]
    assert _matches_record(build)
    report = _probe(cache)
    assert report["origin"] == f"built at run time, cached in {build}"
    assert report["calls"] == {"version": 1, "load": 1}


@needs_native
def test_read_only_cache_folder(tmp_path: Path, template: Path) -> None:
    # Bug 2: an own cache folder with mode 500 made every call raise PermissionError.
    prefix = _without_root_write()
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    cache.chmod(0o500)
    try:
        report = _probe(cache, prefix=prefix)
        assert report["backend"] == "native", report
        origin = str(report["origin"])
        assert "temporary folder" in origin
        assert f"the cache folder {cache} is not writable" in origin
        assert not list(cache.iterdir())
        assert report["slow_path_warnings"] == 1, report["warnings"]
        assert "could not be cached" in str(report["warnings"])
        assert report["config"]["cpu_kernel"]["uncached"]  # type: ignore[index]
        # A read-only folder that holds a valid build serves it.
        cache.chmod(0o700)
        build = _cached_build(cache, template)
        cache.chmod(0o500)
        report = _probe(cache, prefix=prefix)
        assert report["origin"] == f"built at run time, cached in {build}"
    finally:
        cache.chmod(0o700)


@needs_native
@pytest.mark.parametrize("writable", [True, False])
def test_truncated_cached_build(tmp_path: Path, template: Path, writable: bool) -> None:
    # Bug 3: a cached library cut to half its size (a full disk, a killed copy) killed the next
    # process with SIGBUS. It is rebuilt into the cache, or built elsewhere when the cache is
    # read-only; never loaded.
    prefix = [] if writable else _without_root_write()
    build = _cached_build(tmp_path / "cache", template)
    cache = build.parent
    size = build.stat().st_size
    os.truncate(build, size // 2)
    if not writable:
        cache.chmod(0o500)
    try:
        report = _probe(cache, prefix=prefix)
    finally:
        cache.chmod(0o700)
    assert report["backend"] == "native", report
    origin = str(report["origin"])
    assert f"the cached build {build} was not loaded: it is {size // 2} bytes" in origin
    if writable:
        assert origin.startswith(f"built at run time into {build}")
        assert build.stat().st_size == size
        assert _matches_record(build)
    else:
        assert "temporary folder" in origin
        assert build.stat().st_size == size // 2


@needs_native
@pytest.mark.parametrize("damage", ["missing", "wrong hash"])
def test_missing_or_damaged_record(tmp_path: Path, template: Path, damage: str) -> None:
    build = _cached_build(tmp_path / "cache", template)
    record = native._record_path(build)
    if damage == "missing":
        record.unlink()
    else:
        fingerprint = native._fingerprint(build)
        fingerprint["sha256"] = "0" * 64
        record.write_text(json.dumps(fingerprint))
    report = _probe(build.parent)
    assert report["backend"] == "native", report
    assert f"the cached build {build} was not loaded" in str(report["origin"])
    assert _matches_record(build)  # rebuilt, with its record


def _foreign_library(cache: Path, target: Path) -> None:
    """A shared library without the kernel's functions at ``target``, with a matching record."""
    compiler = native._compiler()
    assert compiler is not None
    source = cache / "other.c"
    source.write_text("int not_the_kernel(void) { return 1; }\n")
    tmp = cache / "other.so"
    subprocess.run([*compiler, "-shared", "-fPIC", str(source), "-o", str(tmp)], check=True)
    os.replace(tmp, target)
    source.unlink()
    record = target.with_name(target.name + ".json")
    record.write_text(json.dumps(native._fingerprint(target)))


@needs_native
def test_cached_library_without_the_kernel(tmp_path: Path, template: Path) -> None:
    # Bug 4: a library at the cache path without the kernel's functions raised AttributeError
    # on every call, and the compiler's version was asked on every call.
    build = _cached_build(tmp_path / "cache", template)
    _foreign_library(build.parent, build)
    report = _probe(build.parent)
    assert report["backend"] == "native", report
    assert f"{build} is not focalrec's kernel" in str(report["origin"])
    assert report["calls"] == {"version": 1, "load": 1}
    assert _matches_record(build)  # rebuilt, with its record


@pytest.mark.skipif(sys.platform == "win32", reason="the kernel is not built on Windows")
def test_a_failing_compiler_is_asked_once_and_said_once(tmp_path: Path) -> None:
    # The outcome of loading is kept for the life of the process, failure included; the first
    # call on the slower path warns once, naming the reason and the fix, and show_config()
    # says which backend serves and why the kernel does not.
    report = _probe(tmp_path / "cache", CC="/bin/false")
    assert report["backend"] == "torch"
    assert report["origin"] is None
    reason = "/bin/false failed (exit status 1)"
    assert reason in str(report["reason"])
    assert report["calls"] == {"version": 1, "load": 1}
    assert report["slow_path_warnings"] == 1, report["warnings"]
    (message,) = report["warnings"]  # type: ignore[misc]
    assert reason in message
    assert "install a C compiler" in message
    assert "set CC" in message
    assert "FOCALREC_BACKEND=torch" in message
    assert report["warned_at"] == ["<string>"]  # the user's call, not focalrec's insides
    config = report["config"]
    assert isinstance(config, dict)
    row = config["backends"]["float32 CPU"]
    assert row["backend"] == "torch"
    assert reason in row["why_not"]["native"]
    assert config["cpu_kernel"]["unavailable"] == report["reason"]
    assert config["cpu_kernel"]["cache_folder"] == str(tmp_path / "cache")
    # FOCALREC_BACKEND=torch chooses the torch path: nothing to warn about.
    report = _probe(tmp_path / "cache", CC="/bin/false", FOCALREC_BACKEND="torch")
    assert report["warnings"] == []


@needs_native
def test_processes_starting_on_an_empty_cache_at_once(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", PROBE],
            env=_env(cache),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    reports = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["backend"] == "native" for r in reports), reports
    assert all(r["values"] == reports[0]["values"] for r in reports)
    builds = [p for p in cache.iterdir() if p.suffix != ".json"]
    assert len(builds) == 1, sorted(p.name for p in cache.iterdir())
    assert _matches_record(builds[0])
    assert not list(cache.glob(".*"))
