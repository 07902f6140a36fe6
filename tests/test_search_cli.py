"""`zeustune search` end to end on tiny-flux (small settings): a SIGKILL mid-search loses no
finished trial, the same command resumes the study, exports a schedule with calibration and
held-out metrics, a report and a Pareto plot; `zeustune export` re-exports it (also for cache-dit).

The searches are timed by the fake stopwatch (tests/fake_clock.py): the cost model and the
finalists' re-timing against the budget come out the same on any machine, however busy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import fake_clock
import optuna
import pytest
import yaml

from zeustune.models.registry import TINY_FLUX_DIR
from zeustune.schedule.format import Schedule

pytestmark = pytest.mark.skipif(not (TINY_FLUX_DIR / "model_index.json").is_file(), reason="tiny-flux weights not built")

ARGS = ["--model", "tiny-flux", "--budget", "1.5x", "--calib", "4", "--heldout", "4", "--batch", "4",
        "--timing-runs", "2", "--no-progress"]


def finished(storage):
    out = {}
    for s in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study = optuna.load_study(study_name=s.study_name, storage=storage)
        for t in study.get_trials(deepcopy=False):
            if t.state.is_finished():
                out[t.number] = (t.state, t.values, t.params, t.user_attrs.get("plan"))
    return out


def complete_count(db) -> int:
    """COMPLETE trials in an Optuna SQLite file, read through sqlite3 read-only: opening it through
    Optuna while the search is creating it races on the schema (both insert alembic's version row,
    and the search then failed on the UNIQUE constraint)."""
    import contextlib
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            return con.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0


def kill_after_four_complete(command, tmp_path, env, storage, timeout) -> None:
    """Run the search and SIGKILL it once at least 4 trials are complete in the storage."""
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
        if (tmp_path / "studies.db").exists() and complete_count(tmp_path / "studies.db") >= 4:
            break
    assert proc.poll() is None, proc.stdout.read()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_sigkill_loses_no_finished_trial_and_the_same_command_resumes(tmp_path):
    env = fake_clock.env({**os.environ, "ZEUSTUNE_CACHE": str(tmp_path / "cache")})
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    command = [sys.executable, "-m", "zeustune.cli", "search", *ARGS, "--storage", storage, "--trials", "40", "--refine", "3",
               "--export-dir", str(tmp_path / "schedules"), "--out", str(tmp_path / "report")]

    kill_after_four_complete(command, tmp_path, env, storage, 240)
    before = finished(storage)  # everything finished up to the kill
    assert len(before) >= 4

    assert len(before) < 40
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)  # the same command
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed study" in done.stderr and f"{len(before)} finished trials kept" in done.stderr
    after = finished(storage)
    for number, rec in before.items():
        assert after[number] == rec  # untouched by the resumed run
    assert 43 <= len(after) <= 44  # 40 search trials (+ the one killed, failed, if it had started) + 3 refinement

    # the export: a loadable schedule with calibration and held-out figures and provenance
    path = tmp_path / "schedules" / "tuned-1.5x.yaml"
    sched = Schedule.load(path)
    q = sched.metrics["quality"]
    assert q["calib"]["prompts"] == 4 and q["heldout"]["prompts"] == 4
    assert sched.metrics["speedup"]["measured"] >= 1.5
    assert sched.metrics["speedup"]["measured"] <= sched.metrics["speedup"]["bound"] * 1.1
    assert sched.provenance["prompts_sha256"] and sched.provenance["trial"] in after
    assert (tmp_path / "report" / "report.md").is_file() and (tmp_path / "report" / "pareto.png").stat().st_size > 10_000

    # re-export from the stored study, as zeustune and as a cache-dit mask
    study = sched.provenance["study"]
    again = tmp_path / "again.yaml"
    r = subprocess.run([sys.executable, "-m", "zeustune.cli", "export", "--study", study, "--storage", storage, "--out", str(again)],
                       cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert Schedule.load(again).plan == sched.plan and Schedule.load(again).metrics == sched.metrics
    cd = tmp_path / "cd.yaml"
    r = subprocess.run([sys.executable, "-m", "zeustune.cli", "export", "--study", study, "--storage", storage, "--to", "cache-dit",
                        "--out", str(cd)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    mask = yaml.safe_load(cd.read_text())["cache_config"]["steps_computation_mask"]
    assert mask == [1 if c == "F" else 0 for c in sched.plan.steps]


def test_unreachable_budget_is_refused_before_searching(tmp_path):
    env = fake_clock.env({**os.environ, "ZEUSTUNE_CACHE": str(tmp_path / "cache")})
    r = subprocess.run([sys.executable, "-m", "zeustune.cli", "search", *ARGS[:2], "--budget", "40x", "--calib", "2",
                        "--timing-runs", "1", "--no-progress", "--storage", f"sqlite:///{tmp_path / 's.db'}"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert "--budget 40x cannot be reached" in r.stderr and "caps the speedup at" in r.stderr


def test_a_killed_ray_driver_resumes_from_storage(tmp_path):
    pytest.importorskip("ray", reason="ray is in the test extra")
    env = fake_clock.env({**os.environ, "ZEUSTUNE_CACHE": str(tmp_path / "cache")})
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    command = [sys.executable, "-m", "zeustune.cli", "search", *ARGS, "--storage", storage, "--trials", "30", "--refine", "4",
               "--executor", "ray", "--workers", "2", "--export-dir", str(tmp_path / "schedules"), "--out", str(tmp_path / "report")]
    kill_after_four_complete(command, tmp_path, env, storage, 300)  # the driver: its workers are stranded mid-trial
    before = finished(storage)
    assert 4 <= len(before) < 30

    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{len(before)} finished trials kept" in done.stderr and "ray: 2 workers ready" in done.stderr
    after = finished(storage)
    for number, rec in before.items():
        assert after[number] == rec
    # 30 search trials (+ up to 2 that were running on the 2 workers, failed and queued again) + 4 refinement
    assert 34 <= len(after) <= 36
    failed = [n for n, rec in after.items() if rec[0] == optuna.trial.TrialState.FAIL]
    assert len(failed) <= 2 and all(n not in before for n in failed)
    sched = Schedule.load(tmp_path / "schedules" / "tuned-1.5x.yaml")
    assert sched.metrics["speedup"]["measured"] >= 1.5 and "1 of" in sched.metrics["speedup"]["device"]  # timed on a worker


def test_a_bad_multi_fidelity_confidence_is_refused_naming_the_flag(tmp_path):
    env = {**os.environ, "ZEUSTUNE_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-m", "zeustune.cli", "search", *ARGS[:2], "--budget", "3x", "--multi-fidelity-z", "0",
                        "--no-progress", "--storage", f"sqlite:///{tmp_path / 's.db'}"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert "--multi-fidelity-z: got 0.0, expected a number of standard errors > 0" in r.stderr


def test_a_ladder_of_budgets_is_one_study_that_exports_a_timed_schedule_per_budget(tmp_path):
    env = fake_clock.env({**os.environ, "ZEUSTUNE_CACHE": str(tmp_path / "cache")})
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    args = [a if a != "1.5x" else "1.5x,2x" for a in ARGS]
    r = subprocess.run([sys.executable, "-m", "zeustune.cli", "search", *args, "--storage", storage, "--trials", "20",
                        "--refine", "2", "--export-dir", str(tmp_path / "schedules"), "--out", str(tmp_path / "report")],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    names = optuna.get_all_study_names(storage)
    assert len(names) == 1 and "-1.5x-" in names[0] and names[0].endswith("-ladder-2x")  # one study, the loosest budget's
    study = optuna.load_study(study_name=names[0], storage=storage)
    stages = {t.user_attrs.get("stage") for t in study.trials}
    assert {"refine 1.5x", "refine 2x"} <= stages  # refined per budget
    for budget in (1.5, 2):
        sched = Schedule.load(tmp_path / "schedules" / f"tuned-{budget:g}x.yaml")
        assert sched.metrics["speedup"]["measured"] >= budget  # the fake stopwatch: measured as modelled
        assert sched.provenance["study"] == names[0]
        assert (tmp_path / "report" / f"{budget:g}x" / "report.md").is_file()
    ladder = (tmp_path / "report" / "ladder.md").read_text()
    assert "| 1.5x | tuned-1.5x |" in ladder and "| 2x | tuned-2x |" in ladder
    assert (tmp_path / "report" / "ladder.png").stat().st_size > 10_000
