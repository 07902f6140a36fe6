"""scripts/kill_resume.py (SIGKILL the search and resume it: no finished trial lost) and
scripts/gpu_check.sh (the prepared GPU check: syntax, options, its plan, and its CPU path end to
end without the FLUX-size step, about 30 s)."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import fake_clock
import pytest

from zeustune.models.registry import TINY_FLUX_DIR

from helpers import load_script

ROOT = Path(__file__).resolve().parent.parent
KILL_RESUME = ROOT / "scripts" / "kill_resume.py"
GPU_CHECK = ROOT / "scripts" / "gpu_check.sh"
HAVE_TINY_FLUX = (TINY_FLUX_DIR / "model_index.json").is_file()


def load_kill_resume():
    return load_script("scripts", "kill_resume")


# --------------------------------------------------------------------------- kill_resume.py: pieces
def test_kill_plan_spreads_the_kills_over_the_phases_in_order():
    kr = load_kill_resume()
    kills = kr.plan_kills(10, random.Random(0), trials=60, refine=20, phases=None)
    assert [k.phase for k in kills] == ["setup"] * 2 + ["trials"] * 6 + ["late"] * 2
    targets = [k.target for k in kills if k.phase == "trials"]
    assert targets == sorted(targets) and len(set(targets)) == 6 and all(1 <= t < 60 for t in targets)
    for k in kills[-2:]:  # refinement (a count in the refinement stage) or the tail
        assert k.tail or 60 <= k.target < 80
    assert [k.phase for k in kr.plan_kills(2, random.Random(0), 12, 3, None)] == ["trials", "late"]
    assert [k.phase for k in kr.plan_kills(3, random.Random(1), 40, 10, None)] == ["setup", "trials", "late"]
    same = kr.plan_kills(10, random.Random(7), 60, 20, None)
    again = kr.plan_kills(10, random.Random(7), 60, 20, None)
    assert [(k.phase, k.target, k.tail) for k in same] == [(k.phase, k.target, k.tail) for k in again]


def test_compare_reports_lost_and_changed_trials():
    kr = load_kill_resume()
    before = kr.Snapshot("s", {0: ("COMPLETE", (0.1, 2.0)), 1: ("PRUNED", None), 2: ("FAIL", None)})
    assert kr.compare(before, kr.Snapshot("s", {**before.trials, 3: ("COMPLETE", (0.2, 1.0))})) == []
    problems = kr.compare(before, kr.Snapshot("s", {0: ("COMPLETE", (0.1, 2.5)), 2: ("FAIL", None)}))
    assert problems == ["trial 0 changed: ('COMPLETE', (0.1, 2.0)) -> ('COMPLETE', (0.1, 2.5))",
                        "trial 1 ('PRUNED', None) is missing"]
    assert kr.compare(before, kr.Snapshot("other", {}))[0].startswith("study 's' is gone")


def test_kill_resume_refuses_the_options_it_sets_itself(capsys):
    kr = load_kill_resume()
    for extra in (["--storage", "sqlite:///x.db"], ["--out=report"], ["--export-dir", "d"]):
        with pytest.raises(SystemExit) as e:
            kr.main(["--kills", "1", "--", *extra])
        assert e.value.code == 2
        assert "is set by this script" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        kr.main(["--kills", "2", "--phases", "setup,nowhere"])
    assert "--phases: expected 2 of setup, trials, late" in capsys.readouterr().err


# --------------------------------------------------------------------------- kill_resume.py: for real
@pytest.mark.skipif(not HAVE_TINY_FLUX, reason="tiny-flux weights not built")
def test_two_sigkills_lose_no_finished_trial_and_the_search_exports(tmp_path):
    """Two kills (one during the TPE trials, one in refinement or the tail) of a small tiny-flux
    search (10 steps, 12 trials, 2 prompts): about 60 s on an idle 2-core machine. Timed by the
    fake stopwatch (tests/fake_clock.py): whether the search exports must not hang on a timing."""
    env = fake_clock.env({**os.environ, "ZEUSTUNE_CACHE": str(tmp_path / "cache"), "ZEUSTUNE_HOME": str(tmp_path / "home")})
    out = tmp_path / "table.md"
    command = [sys.executable, str(KILL_RESUME), "--kills", "2", "--seed", "3", "--budget", "1.5x", "--shared-cache",
               "--workdir", str(tmp_path / "work"), "--out", str(out), "--setup-prior", "5", "--tail-prior", "3",
               "--", "--steps", "10", "--trials", "12", "--refine", "3", "--calib", "2", "--heldout", "2",
               "--timing-runs", "2", "--batch", "2", "--metric", "gmsd"]
    r = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr[-4000:]
    rows = [line for line in r.stdout.splitlines() if re.match(r"^\| [12] \|", line)]
    assert len(rows) == 2, r.stdout
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        before, after, kept, lost = cells[5], cells[6], cells[7], cells[8]
        assert lost == "0" and int(after) >= int(before)
        assert kept == before or (kept == "new study" and before == "0")
    exported = r.stdout.strip().splitlines()[-1]
    assert exported.startswith("exported schedule: ") and Path(exported.split(": ", 1)[1]).is_file()
    assert out.read_text().startswith("# Kill and resume") and "OK: 2 kills" in r.stderr


# --------------------------------------------------------------------------- gpu_check.sh
def bash(*args, env=None, timeout=60):
    return subprocess.run(["bash", str(GPU_CHECK), *args], cwd=ROOT, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def test_gpu_check_is_valid_bash():
    r = subprocess.run(["bash", "-n", str(GPU_CHECK)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_gpu_check_plans_the_gpu_run_and_the_cpu_dry_run():
    r = bash("--dry-run", env={"DEVICE": "cuda"})
    assert r.returncode == 0, r.stderr
    assert "device cuda" in r.stdout and "install wheels: yes" in r.stdout
    assert "--budget 3x --trials 40 --refine 10 --calib 24 --heldout 16" in r.stdout
    assert "FLUX.1-dev size, steps 28" in r.stdout and "deadline 450 s" in r.stdout

    r = bash("--dry-run", env={"DEVICE": "cpu", "OUT": "/tmp/somewhere"})
    assert r.returncode == 0, r.stderr
    assert "device cpu" in r.stdout and "install wheels: no" in r.stdout
    assert "--steps 10" in r.stdout and "scaled-down architecture (smoke)" in r.stdout and "out /tmp/somewhere" in r.stdout

    r = bash("--dry-run", "--no-bench", "--install", "--full", env={"DEVICE": "cpu", "TRIALS": "7"})
    assert "install wheels: yes" in r.stdout and "--trials 7 " in r.stdout and "bench: skipped" in r.stdout


def test_gpu_check_refuses_bad_arguments_and_devices():
    r = bash("--frobnicate")
    assert r.returncode == 2 and "unknown argument '--frobnicate'" in r.stderr
    r = bash("--dry-run", env={"DEVICE": "tpu"})
    assert r.returncode == 2 and "DEVICE: got 'tpu'" in r.stderr
    r = bash("--wheels")
    assert r.returncode == 2 and "--wheels needs a folder" in r.stderr
    r = bash("--help")
    assert r.returncode == 0 and "--build-wheels" in r.stdout


def test_gpu_check_lists_the_wheels_it_would_build_pinned_to_this_environment():
    import diffusers
    import optuna

    r = bash("--build-wheels", "/tmp/not-made", "--dry-run", env={"PYTHON": sys.executable})
    assert r.returncode == 0, r.stderr
    assert "CPython 3.12" in r.stdout and "into /tmp/not-made" in r.stdout
    assert f"diffusers=={diffusers.__version__}" in r.stdout and f"optuna=={optuna.__version__}" in r.stdout
    assert not Path("/tmp/not-made").exists()


@pytest.mark.skipif(not HAVE_TINY_FLUX or not shutil.which("timeout"), reason="tiny-flux weights not built, or no timeout(1)")
def test_gpu_check_cpu_path_end_to_end(tmp_path):
    """DEVICE=cpu: no install, tiny counts at 10 steps, no step (d); about 30 s on 2 cores. Its
    timings come from the fake stopwatch (tests/fake_clock.py): the finalist's re-timing against
    the budget, which a shared machine put on either side of the line, is the same everywhere."""
    out = tmp_path / "out"
    r = bash("--no-bench", env={"DEVICE": "cpu", "OUT": str(out), "SCRATCH": str(tmp_path / "scratch"),
                                "PYTHON": sys.executable, "TOTAL_S": "400", "PYTHONPATH": fake_clock.env()["PYTHONPATH"]},
             timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    results = (out / "results.md").read_text()
    for row in ("| install | skipped", "| env | ok |", "| sync | ok |", "| search | ok |", "| eval | ok |", "| bench | skipped"):
        assert row in results, results
    # the static sync listing: the search, eval and bench timings go through evaluate.timed, which synchronises
    assert "`zeustune/quality/evaluate.py:" in results and "`timed`" in results.split("Functions that time and synchronise:")[1]
    assert "`time_run`" not in results
    assert "| schedule | NFE |" in results  # the search's report table and the eval table
    names = sorted(p.name for p in out.iterdir())
    assert "gpu-check.tar.gz" in names and "gpu-check.log" in names and len(names) <= 8  # what the device returns
    listing = subprocess.run(["tar", "-tzf", str(out / "gpu-check.tar.gz")], capture_output=True, text=True).stdout
    assert "docs/benchmarks/gpu/results.md" in listing and "docs/benchmarks/gpu/search/report.md" in listing


def test_ablation_table_ratios_and_plot(tmp_path):
    module = load_script("experiments", "ablation")
    row = lambda h, c: {"heldout": h, "calls_heldout": c}  # noqa: E731
    results = {"model": "m", "steps": 28, "metric": "st-lpips", "targets": [5, 7],
               "variants": {"today": {"label": "today's space", "rows": {"5": row(0.04, 5.0), "7": row(0.02, 7.0)}},
                            "all": {"label": "all together", "rows": {"5": row(0.03, 4.5), "7": row(0.01, 6.8)}}},
               "peers": {"7": {"name": "fbcache", "calls": 7.0, "heldout": 0.02}}}
    text = module.table(results)
    assert "| all together | 0.0300 (4.5) | 0.0100 (6.8) |" in text
    assert "| all together / best other | - | 0.50 |" in text  # no peer at 5 calls: no ratio
    module.plot(results, tmp_path / "a.png")
    assert (tmp_path / "a.png").stat().st_size > 1000


# --------------------------------------------------------------------------- bench_skip_cost.py
def test_bench_skip_cost_quick(tmp_path, capsys):
    """The quick mode (small width, 1 full + 2 skipped calls per method): every peer skips, and a
    skipped call costs a share of the projected FLUX.1-dev call. Run here with the work stopwatch
    (tests/fake_clock.py: elements written, not seconds), so every comparison below is the same on
    any machine; without cache-dit, whose patching would outlive the run in this process."""
    from types import SimpleNamespace

    from zeustune.bench.peers import PEERS

    script = load_script("experiments", "bench_skip_cost")
    out = tmp_path / "skip.json"
    with fake_clock.Work() as clock:
        script.time = SimpleNamespace(perf_counter=clock.perf_counter, strftime=time.strftime)
        assert script.main(["--quick", "--no-cache-dit", "--json", str(out)]) == 0
    stdout = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["blocks"] == [2, 2] and data["repeats"] == {"full": 1, "skip": 2}
    assert set(data["peers"]) == set(PEERS) | {"zeustune-g", "zeustune-g-modulated"}
    for name in data["peers"]:
        assert name in stdout
        peer = data["peers"][name]
        assert 0 < peer["share"] < 1, (name, peer)
        assert len(peer["double_s"]) == 2 and len(peer["single_s"]) == 2
    # FirstBlockCache runs the first block on a skipped call; MagCache only adds its cached residual there
    assert data["peers"]["fbcache"]["share"] > data["peers"]["magcache"]["share"]
    # zeustune's G step runs the first block too (its residual probe), or only up to its norm1 (modulated)
    assert data["peers"]["zeustune-g"]["share"] > data["peers"]["zeustune-g-modulated"]["share"]
    assert data["peers"]["zeustune-g"]["share"] > data["peers"]["magcache"]["share"]
    assert data["flux_dev_call_s"] > data["full"]["call_s"]  # 57 blocks cost more than the 4 measured


# --------------------------------------------------------------------------- projected_cost_model.py
def test_projected_cost_models_reproduce_the_shipped_files_and_read_back(tmp_path):
    """The FLUX.1-dev files the probe searches used come out byte for byte; the Wan2.1-14B model is
    accepted by the search's reader and prices a fresh step at the target's share."""
    from zeustune.bench import compute
    from zeustune.search.cost import read

    pcm = load_script("scripts", "projected_cost_model")
    assert pcm.main(["--target", "flux", "--steps", "28,50", "--out", str(tmp_path)]) == 0
    for n in (28, 50):
        name = f"cost-model-flux-{n}.json"
        assert (tmp_path / name).read_bytes() == (ROOT / "docs" / "search" / "probe" / name).read_bytes()
    assert pcm.main(["--target", "wan", "--steps", "40,50", "--out", str(tmp_path)]) == 0
    wan = read(tmp_path / "cost-model-wan14b-50.json", 50, probe=True)
    # tiny-wan's searches price their budgets with these files, shipped beside its space (Wan's two step counts)
    for n in (40, 50):
        shipped = ROOT / "search_spaces" / f"tiny-wan-cost-{n}.json"
        assert (tmp_path / f"cost-model-wan14b-{n}.json").read_bytes() == shipped.read_bytes()
    f = compute.WAN_TARGET.fixed_share_50
    assert wan.fixed == pytest.approx(f) and wan.call == pytest.approx((1 - f) / 50)
    assert wan.full == pytest.approx(1.0)  # a full-step run is the unit
    # a plan's projected speedup from this model is the bench's projection of its calls
    assert wan.speedup(17) == pytest.approx(compute.projected_speedup(17 + 33 * wan.skip / wan.call, 50, target=compute.WAN_TARGET))
    with pytest.raises(SystemExit):
        pcm.main(["--target", "wan", "--steps", "fifty", "--out", str(tmp_path)])
