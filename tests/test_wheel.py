"""The wheel is the whole product: built from the repository's files and installed alone into a fresh
environment, run from another folder, it has its presets, search spaces and embedded model.

The new environment sees this one's packages (torch, diffusers, ...) but not its zeustune: a
checkout installed editable here must not stand in for the wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import fake_clock
import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Top-level folders the package links to (zeustune/schedule/shipped.py), and files they must hold.
SHIPPED = {"schedule/presets": "flux/zeus-flux-demo.yaml", "search/spaces": "tiny-flux.yaml",
           "models/embedded": "tiny-flux/model_index.json", "bench/figures": "skip-cost.json"}


def run(*command, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in command], capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{command}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r


def tracked_copy(dest: Path) -> Path:
    """The repository's files (tracked, and untracked ones git does not ignore) copied to ``dest``,
    links kept as links: a build from the working folder would reuse a stale build/."""
    listed = run("git", "-C", ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard").stdout
    for rel in filter(None, listed.split("\0")):
        src, out = ROOT / rel, dest / rel
        if not os.path.lexists(src):  # deleted, not yet committed
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), out)
        else:
            shutil.copy2(src, out)
    return dest


def fresh_venv(where: Path) -> Path:
    """A virtual environment with no zeustune that imports this environment's other packages. When this
    one is itself a venv, ``--system-site-packages`` reaches the base interpreter's only, so its
    site-packages go on the path as plain .pth lines, whose own .pth files (an editable zeustune's
    finder) are not run."""
    run(sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", where)
    python = where / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if sys.prefix != sys.base_prefix:
        purelib = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
        here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
        (purelib / "_test_environment.pth").write_text("".join(f"{p}\n" for p in sorted(here)))
    return python


def clean_env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # no checkout on the path
    env.update(ZEUSTUNE_HOME=str(tmp_path / "home"), ZEUSTUNE_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    return env


needs_git = pytest.mark.skipif(not (ROOT / ".git").exists() or shutil.which("git") is None, reason="needs a git checkout")


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return tracked_copy(tmp_path_factory.mktemp("src"))


def test_the_links_reach_the_top_level_folders():
    for link, inside in SHIPPED.items():
        path = ROOT / "zeustune" / link
        assert path.is_symlink() and (path / inside).is_file(), f"zeustune/{link}: not a link to a folder holding {inside}"


@needs_git
def test_a_wheel_installed_alone_has_presets_spaces_and_tiny_flux(tmp_path, source):
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "pip", "wheel", source, "--no-deps", "--no-build-isolation", "-q", "-w", dist)
    (wheel,) = dist.glob("zeustune-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for link, inside in SHIPPED.items():
        assert f"zeustune/{link}/{inside}" in names
    print(f"\n{wheel.name}: {len(names)} files, {wheel.stat().st_size / 2**20:.1f} MiB")

    venv = tmp_path / "venv"
    python = fresh_venv(venv)
    run(python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = clean_env(tmp_path)
    kw = {"cwd": elsewhere, "env": env, "timeout": 300}

    where = run(python, "-c", "import zeustune; print(zeustune.__file__)", **kw).stdout.strip()
    assert Path(where).is_relative_to(venv), where
    zeustune = venv / ("Scripts" if os.name == "nt" else "bin") / "zeustune"
    listed = run(zeustune, "show", "--list", **kw).stdout
    assert "flux/zeus-flux-demo" in listed and "tiny-flux/tuned-3x" in listed

    snippet = """
import zeustune
from zeustune.models import tiny
tp = tiny.build("flux")
zeustune.enable(tp.pipe, "zeus-flux-demo")
tp(steps=50)
print(zeustune.summary(tp.pipe))
"""
    assert "denoiser calls: 54" in run(python, "-c", snippet, **kw).stdout  # 27 fresh steps x 2 CFG branches

    out = tmp_path / "search"
    out.mkdir()
    searched = run(zeustune, "search", "--model", "tiny-flux", "--budget", "1.5x", "--trials", "4", "--refine", "1",
                   "--calib", "2", "--heldout", "2", "--batch", "2", "--timing-runs", "1", "--metric", "gmsd",
                   "--no-progress", "--storage", f"sqlite:///{out / 'studies.db'}", "--out", out / "report",
                   "--export-dir", out / "schedules", cwd=elsewhere, env=fake_clock.env(env), timeout=300)
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", **kw).stdout.strip())
    assert f"space: {site / 'zeustune' / 'search' / 'spaces' / 'tiny-flux.yaml'}" in searched.stdout
    assert (out / "schedules" / "tuned-1.5x.yaml").is_file()


@needs_git
def test_an_editable_install_reads_the_checkout_folders(tmp_path, source):
    """``pip install -e .`` (CI's install): the same lookups land on the checkout's top-level folders."""
    python = fresh_venv(tmp_path / "venv")
    run(python, "-m", "pip", "install", "--no-deps", "--no-index", "--no-build-isolation", "-q", "-e", source)
    probe = """
from zeustune.bench.compute import BENCHMARKS
from zeustune.models.registry import TINY_FLUX_DIR
from zeustune.schedule.format import BUILTIN_SCHEDULES
from zeustune.search.space import BUILTIN_SPACES
print(BUILTIN_SCHEDULES, BUILTIN_SPACES, TINY_FLUX_DIR, BENCHMARKS)
"""
    found = run(python, "-c", probe, cwd=tmp_path, env=clean_env(tmp_path)).stdout.split()
    assert found == [str(source.resolve() / p) for p in ("schedules", "search_spaces", "models/tiny-flux", "docs/benchmarks")]
