#!/usr/bin/env python3
"""SIGKILL `zeustune search` at random moments, resume it with the identical command, and check
that no finished trial is ever lost or changed.

    python scripts/kill_resume.py [--kills 10] [--seed 0] [--workdir DIR] [--out FILE] -- --trials 60 --refine 20

Everything the search writes goes to the work folder (default ``out/kill-resume``, git-ignored):
its own SQLite storage (``studies.db``, wiped at the start), the exported schedule
(``export/``), the report (``report/``), the references cache (``cache/``, fresh, so that early
kills can land while references are rendered; ``--shared-cache`` uses the user's cache or
``$ZEUSTUNE_CACHE`` instead) and one log per run (``run-K.log``). Arguments after ``--`` go to
``zeustune search`` unchanged (every run gets the same command line).

Each run is started in a new session, so ``os.killpg(SIGKILL)`` takes its children too. The kill
moments are spread over the search's phases: some during start-up (model loading, cost-model
fitting, reference rendering), most during the TPE trials, some during refinement and the tail
(finalists re-timed, held-out scores, export). A start-up kill comes after a delay drawn uniformly
between 0.5 s and the start-up time observed so far; a trial or refinement kill after a finished-
trial count drawn uniformly over its stage (observed in the storage), plus a delay drawn uniformly
within one trial's observed duration so it lands mid-trial; a tail kill after a delay drawn
uniformly within the observed tail. ``--seed`` makes the draws repeatable (the moments still
depend on the machine's speed). The table says in which phase each kill actually landed.

After each kill the storage is read with Optuna: the finished (COMPLETE, PRUNED, FAIL) trials,
their numbers, states and values. The same command is started again; when it reports the study
(``resumed study ...: N finished trials kept``, or ``new study`` when none was stored yet) the
storage is read again: every trial finished before the kill must still be there, unchanged, and N
must equal their count. After the last kill the run goes on to the end and exports a schedule;
the final storage must still hold every trial seen after any kill.

Writes a markdown table (stdout and ``--out``), progress on stderr. Exit status: 0 when nothing
was lost, 1 when a finished trial was lost or changed (or another check failed), 2 when a run of
the search itself failed or hung.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FINISHED_STATES = ("COMPLETE", "PRUNED", "FAIL")
RESUMED = re.compile(r"resumed study '(?P<name>[^']+)' in .*?: (?P<kept>\d+) finished trials kept")
NEW = re.compile(r"new study '(?P<name>[^']+)'")
EXPORTED = re.compile(r"^exported (?P<path>\S+) \(trial")
# log markers of the driver (zeustune/search/driver.py), in order: what a line means has started
MARKERS = [
    ("references", re.compile(r"^budget \S+: at most")),  # cost model known; references next
    ("study", re.compile(r"^references: \d+ calibration prompts")),  # study opened next
    ("trials", re.compile(r"^(resumed|new) study '")),
    ("tail", re.compile(r"^(timing finalists:|finalist trial \d+:)")),
    ("done", re.compile(r"^exported \S+ \(trial")),
]
PHASES = ("setup", "trials", "late")


def log(msg: str) -> None:
    print(f"[kill-resume {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def option(extra: list[str], name: str, default: str | None) -> str | None:
    """The value of ``--name V`` or ``--name=V`` in the pass-through arguments (the last one)."""
    value = default
    for i, a in enumerate(extra):
        if a == name and i + 1 < len(extra):
            value = extra[i + 1]
        elif a.startswith(name + "="):
            value = a.split("=", 1)[1]
    return value


# --------------------------------------------------------------------------- the storage
def finished_count(db: Path) -> int:
    """Finished trials in the SQLite file, read directly (cheap enough to poll every 0.2 s; the
    checks use Optuna). 0 while the file or its tables do not exist yet."""
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.5)
        try:
            q = f"SELECT COUNT(*) FROM trials WHERE state IN ({','.join('?' * len(FINISHED_STATES))})"
            return int(con.execute(q, FINISHED_STATES).fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


@dataclass
class Snapshot:
    study: str | None
    trials: dict[int, tuple]  # number -> (state, values)
    running: int = 0

    @property
    def n(self) -> int:
        return len(self.trials)


def snapshot(storage: str) -> Snapshot:
    """The finished trials of the (one) study in the storage, read with Optuna."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if storage.startswith("sqlite:///") and not Path(storage[len("sqlite:///"):]).exists():
        return Snapshot(None, {})  # killed before it made the file; Optuna would create one
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    if not summaries:
        return Snapshot(None, {})
    if len(summaries) > 1:
        raise RuntimeError(f"{storage} holds {len(summaries)} studies ({[s.study_name for s in summaries]}); expected one")
    name = summaries[0].study_name
    study = optuna.load_study(study_name=name, storage=storage)
    trials, running = {}, 0
    for t in study.get_trials(deepcopy=False):
        if t.state.is_finished():
            trials[t.number] = (t.state.name, None if t.values is None else tuple(t.values))
        elif t.state.name == "RUNNING":
            running += 1
    return Snapshot(name, trials, running)


def compare(before: Snapshot, after: Snapshot) -> list[str]:
    """What of ``before`` is missing or different in ``after``, one line per trial."""
    problems = []
    if before.study and after.study != before.study:
        problems.append(f"study {before.study!r} is gone (storage has {after.study!r})")
    for number, old in sorted(before.trials.items()):
        new = after.trials.get(number)
        if new is None:
            problems.append(f"trial {number} {old} is missing")
        elif new != old:
            problems.append(f"trial {number} changed: {old} -> {new}")
    return problems


def integrity(db: Path) -> str:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return str(con.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        con.close()


# --------------------------------------------------------------------------- one run of the search
class Run:
    """One `zeustune search` process in its own session, its output read line by line."""

    def __init__(self, index: int, command: list[str], env: dict, workdir: Path, db: Path, echo: bool):
        self.index, self.db = index, db
        self.lines: list[str] = []
        self.marks: dict[str, float] = {}  # marker -> seconds after start when it was seen
        self.resumed: tuple[str, int] | None = None  # (study, kept) or (study, -1) for a new study
        self.exported: str | None = None
        self.log_path = workdir / f"run-{index}.log"
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1, start_new_session=True)
        self._echo = echo
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        with open(self.log_path, "w") as f:
            for line in self.proc.stdout:
                f.write(line)
                f.flush()
                line = line.rstrip("\n")
                self.lines.append(line)
                now = self.elapsed
                for mark, rx in MARKERS:
                    if mark not in self.marks and rx.search(line):
                        self.marks[mark] = now
                m = RESUMED.search(line)
                if m:
                    self.resumed = (m["name"], int(m["kept"]))
                m = NEW.search(line)
                if m and self.resumed is None:
                    self.resumed = (m["name"], -1)
                m = EXPORTED.search(line)
                if m:
                    self.exported = m["path"]
                if self._echo:
                    print(f"    run {self.index} | {line}", file=sys.stderr, flush=True)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def phase(self) -> str:
        """Where the run is now, from its log and the storage."""
        if self.proc.poll() is not None:
            return "exited"
        for mark, label in (("done", "export"), ("tail", "finalists/held-out/export")):
            if mark in self.marks:
                return label
        if "trials" in self.marks:
            return "trials"  # refined by the caller with the finished count
        if "study" in self.marks:
            return "study set-up"
        if "references" in self.marks:
            return "references"
        return "model load/cost model"

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the session's process group: children die too
        except ProcessLookupError:
            pass
        self.proc.wait()
        self._reader.join(timeout=10)

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.lines[-n:])


# --------------------------------------------------------------------------- the kill plan
@dataclass
class Kill:
    phase: str  # setup | trials | late
    target: int | None = None  # finished-trial count to reach first (trials, late/refine)
    tail: bool = False  # late: during finalists/held-out/export rather than refinement
    # filled in when it happens
    landed: str = ""
    run: int = 0
    run_s: float = 0.0
    total_s: float = 0.0
    before: int = 0
    after: int | None = None
    kept: int | None = None
    lost: int = 0
    problems: list[str] = field(default_factory=list)


def plan_kills(n: int, rng: random.Random, trials: int, refine: int, phases: list[str] | None) -> list[Kill]:
    """``n`` kills in phase order: ~20% start-up, ~20% late, the rest during the TPE trials."""
    if phases is None:
        if n == 1:
            phases = ["trials"]
        elif n == 2:
            phases = ["trials", "late"]
        else:
            k = max(1, round(0.2 * n))
            phases = ["setup"] * k + ["trials"] * (n - 2 * k) + ["late"] * k
    kills = [Kill(p) for p in phases]
    tpe = [k for k in kills if k.phase == "trials"]
    span = list(range(1, max(trials, 2)))
    targets = sorted(rng.sample(span, len(tpe)) if len(span) >= len(tpe) else [rng.choice(span) for _ in tpe])
    for k, t in zip(tpe, targets):
        k.target = t
    late = [k for k in kills if k.phase == "late"]
    n_refine = (len(late) + rng.randint(0, 1)) // 2 if refine > 0 else 0
    refine_targets = sorted(rng.sample(range(trials, trials + refine), min(n_refine, refine))) if n_refine else []
    for i, k in enumerate(late):
        if i < len(refine_targets):
            k.target = refine_targets[i]
        else:
            k.tail = True
    return kills


class Trigger:
    """Decides, while a run goes on, when the pending kill fires."""

    def __init__(self, kill: Kill, run: Run, rng: random.Random, history: dict, trials: int, refine: int):
        self.kill, self.run, self.rng, self.history = kill, run, rng, history
        self.trials, self.refine = trials, refine
        self.fire_at: float | None = None  # run seconds
        self.count_at_start = finished_count(run.db)
        if kill.phase == "setup":
            observed = history.get("setup_s", [])
            hi = max(observed) if observed else history["setup_prior"]
            self.fire_at = rng.uniform(0.5, max(hi, 1.0))
            self._study_slack = rng.uniform(0.0, 0.5)

    def _trial_s(self, count: int) -> float:
        """Observed seconds per finished trial in this run (1 s before there is any)."""
        start = self.run.marks.get("trials")
        done = count - self.count_at_start
        if start is None or done <= 0:
            return 1.0
        return min(max((self.run.elapsed - start) / done, 0.05), 10.0)

    def due(self, count: int) -> bool:
        k, r = self.kill, self.run
        now = r.elapsed
        if self.fire_at is not None:
            if k.phase == "setup" and "trials" in r.marks:  # start-up over before the delay: fire at once
                self.fire_at = min(self.fire_at, r.marks["trials"] + self._study_slack)
            return now >= self.fire_at
        if k.phase == "setup":  # unreachable: set in __init__
            return True
        if k.tail:
            begin = r.marks.get("tail")
            if begin is None and count >= self.trials + self.refine and "trials" in r.marks:
                begin = now  # refinement over: the finalists are being timed
            if begin is None:
                return False
            observed = self.history.get("tail_s", [])
            hi = max(observed) if observed else self.history["tail_prior"]
            self.fire_at = begin + self.rng.uniform(0.0, hi)
            return now >= self.fire_at
        # a trial or refinement kill: once the stored count reaches the target (or the run moves
        # on past the stage), wait a fraction of one trial so the kill lands mid-trial
        if "trials" not in r.marks:  # armed once this run has opened the study (the count is the study's)
            return False
        if count >= (k.target or 0) or "tail" in r.marks:
            self.fire_at = now + self.rng.uniform(0.0, self._trial_s(count))
            return now >= self.fire_at
        return False


def landed(run: Run, count: int, trials: int, refine: int) -> str:
    p = run.phase()
    if p == "trials":
        if count < trials:
            return f"TPE trials ({count} finished)"
        if count < trials + refine:
            return f"refinement ({count} finished)"
        return "finalists/held-out/export"  # refinement done, the finalists not yet logged
    return p


# --------------------------------------------------------------------------- main
def markdown(kills: list[Kill], info: dict) -> str:
    lines = ["# Kill and resume: `zeustune search`", "",
             f"Command (every run): `{info['command']}`", "",
             f"- kills: {len(kills)}, seed {info['seed']}; runs: {info['runs']}; total {info['total_s']:.0f} s",
             f"- study: `{info['study']}`; finished trials at the end: {info['final']}",
             f"- storage integrity (SQLite `PRAGMA integrity_check`): {info['integrity']}",
             "",
             "| kill # | phase targeted | landed in | time in run (s) | total time (s) | finished before | "
             "finished after resume | kept (search's log) | lost |",
             "|---|---|---|---|---|---|---|---|---|"]
    for i, k in enumerate(kills, 1):
        target = k.phase + (f" (>= {k.target} finished)" if k.target is not None else "") + (" (tail)" if k.tail else "")
        kept = "new study" if k.kept == -1 else ("-" if k.kept is None else str(k.kept))
        after = "-" if k.after is None else str(k.after)
        lines.append(f"| {i} | {target} | {k.landed} | {k.run_s:.1f} | {k.total_s:.1f} | {k.before} | {after} | {kept} | {k.lost} |")
    lines += ["", f"Exported schedule: {info['exported']}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    else:
        extra = []
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 usage="%(prog)s [options] [-- zeustune search arguments]")
    ap.add_argument("--kills", type=int, default=10, help="SIGKILLs before the last run finishes (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill moments (default: %(default)s)")
    ap.add_argument("--model", default="tiny-flux")
    ap.add_argument("--budget", default="3x")
    ap.add_argument("--workdir", type=Path, default=ROOT / "out" / "kill-resume",
                    help="storage, export, report, cache and logs (default: out/kill-resume; wiped at the start)")
    ap.add_argument("--out", type=Path, help="also write the markdown table here (default: WORKDIR/kill-resume.md)")
    ap.add_argument("--phases", help="comma-separated phase of each kill (setup, trials, late) instead of the default mix")
    ap.add_argument("--shared-cache", action="store_true",
                    help="use the user's reference cache ($ZEUSTUNE_CACHE or the default) instead of a fresh one in WORKDIR")
    ap.add_argument("--setup-prior", type=float, default=15.0,
                    help="seconds of start-up assumed before one is observed (default: %(default)s)")
    ap.add_argument("--tail-prior", type=float, default=30.0,
                    help="seconds of the tail (finalists, held-out, export) assumed before one is observed (default: %(default)s)")
    ap.add_argument("--run-timeout", type=float, default=3600.0, help="seconds one run may take (default: %(default)s)")
    ap.add_argument("--threads", type=int, help="OMP/MKL threads of the search (default: the search's own)")
    ap.add_argument("--echo", action="store_true", help="copy the search's output to stderr")
    args = ap.parse_args(argv)

    if args.kills < 0:
        ap.error("--kills: expected 0 or more")
    for name in ("--storage", "--export-dir", "--out", "--study-name"):
        if option(extra, name, None) is not None:
            ap.error(f"{name} is set by this script (its own storage and folders in --workdir); leave it out")
    phases = None
    if args.phases:
        phases = [p.strip() for p in args.phases.split(",") if p.strip()]
        bad = [p for p in phases if p not in PHASES]
        if bad or len(phases) != args.kills:
            ap.error(f"--phases: expected {args.kills} of {', '.join(PHASES)}, got {args.phases!r}")
    trials = int(option(extra, "--trials", "240"))
    refine = int(option(extra, "--refine", "80"))

    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    for name in ("studies.db", "studies.db-journal", "export", "report", "cache"):
        p = work / name
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    for p in work.glob("run-*.log"):
        p.unlink()
    db = work / "studies.db"
    storage = f"sqlite:///{db}"
    command = [sys.executable, "-m", "zeustune.cli", "search", "--model", args.model, "--budget", args.budget,
               "--storage", storage, "--export-dir", str(work / "export"), "--out", str(work / "report"), "--no-progress"]
    if not args.shared_cache and option(extra, "--cache", None) is None:
        command += ["--cache", str(work / "cache")]
    command += extra
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))

    rng = random.Random(args.seed)
    kills = plan_kills(args.kills, rng, trials, refine, phases)
    shown = " ".join(c if " " not in c else repr(c) for c in command)
    log(f"work folder {work}; {args.kills} kills planned: "
        + ", ".join(k.phase + (f"@{k.target}" if k.target is not None else "") + ("@tail" if k.tail else "") for k in kills))
    log(f"command: {shown}")

    history = {"setup_prior": args.setup_prior, "tail_prior": args.tail_prior, "setup_s": [], "tail_s": []}
    t_start = time.monotonic()
    runs: list[Run] = []
    failures: list[str] = []
    seen: dict[int, tuple] = {}  # every finished trial seen after any kill: must survive to the end
    pending = list(kills)
    # kills whose resume is still to be checked, with the storage read right after each: a run
    # killed before it opens the study (a start-up kill) leaves them for the next run
    unchecked: list[tuple[Kill, Snapshot]] = []
    finished_early = 0

    def learn(run: Run) -> None:
        if "trials" in run.marks:
            history["setup_s"].append(run.marks["trials"])
        if "tail" in run.marks and "done" in run.marks:
            history["tail_s"].append(run.marks["done"] - run.marks["tail"])

    while True:
        run = Run(len(runs) + 1, command, env, work, db, args.echo)
        runs.append(run)
        kill = pending[0] if pending else None
        trigger = Trigger(kill, run, rng, history, trials, refine) if kill else None
        log(f"run {run.index} started" + (f"; next kill #{len(kills) - len(pending) + 1}: {kill.phase}"
                                          + (f" at >= {kill.target} finished" if kill.target is not None else "")
                                          + (" in the tail" if kill.tail else "") if kill else "; no more kills: runs to the end"))
        fired = False
        while True:
            time.sleep(0.1)
            count = finished_count(db)
            if unchecked and run.resumed is not None:  # the restarted run has opened the study
                after = snapshot(storage)
                study, kept = run.resumed
                for k, before in unchecked:
                    problems = compare(before, after)
                    k.kept, k.after = kept, after.n
                    if kept == -1 and before.n:
                        problems.append(f"the restarted run made a new study {study!r} although {before.n} trials were stored")
                    elif kept != -1 and kept != before.n:
                        problems.append(f"the search reports {kept} finished trials kept, the storage had {before.n} at the kill")
                    k.lost = sum(1 for p in problems if p.startswith("trial "))
                    k.problems += problems
                    for p in problems:
                        log(f"LOST/CHANGED after kill #{kills.index(k) + 1}: {p}")
                    log(f"run {run.index} after kill #{kills.index(k) + 1}: "
                        f"{'new study' if kept == -1 else f'resumed, {kept} finished trials kept'}; storage now "
                        f"{after.n} finished (had {before.n} at the kill): "
                        f"{'OK' if not problems else f'{len(problems)} problem(s)'}")
                unchecked.clear()
            if run.proc.poll() is not None:
                break
            if run.elapsed > args.run_timeout:
                log(f"run {run.index} is still going after {args.run_timeout:.0f} s: killed, giving up")
                run.kill()
                print(run.tail(), file=sys.stderr)
                return 2
            if trigger and trigger.due(count):
                kill.landed = landed(run, count, trials, refine)
                kill.run, kill.run_s, kill.total_s = run.index, run.elapsed, time.monotonic() - t_start
                run.kill()
                fired = True
                break
        learn(run)
        if fired:
            snap = snapshot(storage)
            kill.before = snap.n
            if snap.running:
                log(f"note: {snap.running} trial(s) left RUNNING in the storage by the kill")
            for number, v in snap.trials.items():
                if number in seen and seen[number] != v:
                    kill.problems.append(f"trial {number} changed: {seen[number]} -> {v}")
                seen[number] = v
            log(f"kill #{kills.index(kill) + 1} at {kill.run_s:.1f} s into run {run.index} ({kill.total_s:.0f} s in all), "
                f"landed in: {kill.landed}; {snap.n} finished trials stored")
            unchecked.append((kill, snap))
            pending.pop(0)
            continue
        rc = run.proc.returncode
        if rc != 0:
            log(f"run {run.index} failed with exit status {rc}; its output ends with:")
            print(run.tail(), file=sys.stderr)
            return 2
        if pending:  # finished before the kill fired (a target past the end): the tail is left
            finished_early += 1
            if finished_early > len(kills) + 2:
                log("the search keeps finishing before the pending kill: giving up")
                return 2
            k = pending[0]
            log(f"run {run.index} finished before kill #{kills.index(k) + 1} fired; that kill moves to the tail of the next run")
            k.target, k.tail = None, True
            if k.phase == "setup":
                k.phase = "late"
            continue
        break

    for k, _ in unchecked:
        failures.append(f"kill #{kills.index(k) + 1} was never checked: no restarted run reported the study "
                        "('resumed study ...: N finished trials kept' or 'new study ...')")
    final = snapshot(storage)
    final_problems = compare(Snapshot(final.study, seen), final)
    for p in final_problems:
        log(f"LOST/CHANGED at the end: {p}")
    failures += [p for k in kills for p in k.problems] + final_problems
    check = integrity(db)
    if check != "ok":
        failures.append(f"SQLite integrity check: {check}")
    exported = runs[-1].exported
    if not exported or not Path(exported).is_file():
        failures.append(f"no exported schedule (the last run printed {exported!r})")
    else:
        from zeustune.schedule.format import Schedule

        try:
            Schedule.load(exported)
        except Exception as e:  # a truncated or invalid file
            failures.append(f"the exported schedule does not load: {e}")
    info = {"command": "zeustune " + " ".join(command[3:]), "seed": args.seed, "runs": len(runs),
            "total_s": time.monotonic() - t_start, "study": final.study, "final": final.n, "integrity": check,
            "exported": exported}
    text = markdown(kills, info)
    out = args.out or work / "kill-resume.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    lost = sum(k.lost for k in kills) + sum(1 for p in final_problems if p.startswith("trial "))
    if failures:
        log(f"FAILED: {len(failures)} problem(s), {lost} finished trial(s) lost or changed:")
        for p in failures:
            log(f"  - {p}")
        return 1
    log(f"OK: {len(kills)} kills, {len(runs)} runs, no finished trial lost or changed; table in {out}")
    print(f"exported schedule: {exported}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
