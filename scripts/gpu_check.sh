#!/usr/bin/env bash
# The GPU check: one prepared script for a lent GPU machine (one NVIDIA H200, PyTorch installed,
# no network), under 8 minutes, everything it writes under $OUT. docs/benchmarks/gpu/README.md
# says how to build the wheels, how to send it and what comes back.
#
#   bash scripts/gpu_check.sh --build-wheels [DIR]   # here, with network: the wheels the GPU machine lacks
#   bash scripts/gpu_check.sh                        # there: DEVICE=cuda, carried wheels installed offline
#   DEVICE=cpu bash scripts/gpu_check.sh             # here: the same steps on the CPU, tiny counts, no install
#   bash scripts/gpu_check.sh --dry-run              # parse the options, print the plan, run nothing
#
# Steps, each under `timeout` and within one overall deadline (TOTAL_S, default 450 s):
#   env      python, torch, CUDA device, versions
#   install  (a) the carried wheels, offline, into $SITE (pip --no-index --no-deps --target), then a
#            check of the project's requirements against what is importable
#   sync     timing sites in zeustune without torch.cuda.synchronize (static), and on CUDA how much an
#            unsynchronised tiny-flux timing differs from a synchronised one
#   search   (b) zeustune search --model tiny-flux --budget 3x --device $DEVICE (small trial counts)
#   eval     (c) zeustune eval of the exported schedule on $DEVICE
#   bench    (d) the FLUX-size GPU latency part of `zeustune bench` (zeustune/bench/gpu.py: FLUX.1-dev
#            architecture, random bf16 weights, 1024x1024), for the exported plan (and ZEUS's FLUX
#            presets at 50 steps when BENCH_STEPS has 50). On the CPU it runs bench_gpu's scaled-down
#            architecture instead (a smoke test of the code path, not a measurement); --no-bench skips it.
#
# Writes $OUT/results.md (summary), $OUT/gpu-check.tar.gz (docs/benchmarks/gpu/: results.md, the
# search report and Pareto plot, eval report, GPU latency, the study database, every step's log;
# unpack it in the repository root), $OUT/gpu-check.log, $OUT/tuned-<budget>x.yaml, $OUT/pareto.png.
# Exit status 0 when every step that ran passed, 1 otherwise, 2 for a usage error.
#
# Settings (environment): DEVICE (cuda), OUT (out/gpu-check when unset), PYTHON (python3; on the CPU
# .venv/bin/python when present), WHEELS (out/gpu-wheels), SITE (/tmp/zeustune-site), SCRATCH
# (a new /tmp folder), TOTAL_S (450), TRIALS, REFINE, CALIB, HELDOUT, TIMING_RUNS, BUDGET (3x),
# SEARCH_ARGS (more `zeustune search` arguments), EVAL_LIMIT, BENCH_STEPS (28), BENCH_RUNS (2),
# BENCH_PRESETS (more plans for (d), e.g. tiny-flux/tuned-2x,tiny-flux/tuned-4x), PY_VERSION (3.12,
# for --build-wheels). When the search exports nothing, (c) and (d) use schedules/tiny-flux/tuned-3x.yaml.

set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEVICE=${DEVICE:-cuda}
MODE=check
DRY=0
INSTALL=auto
QUICK=auto
BENCH=1

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --build-wheels) MODE=wheels; if [ $# -gt 1 ] && [ "${2#-}" = "$2" ]; then WHEELS=$2; shift; fi ;;
        --wheels) [ $# -gt 1 ] || { echo "gpu_check.sh: --wheels needs a folder" >&2; exit 2; }; WHEELS=$2; shift ;;
        --install) INSTALL=1 ;;
        --no-install) INSTALL=0 ;;
        --quick) QUICK=1 ;;
        --full) QUICK=0 ;;
        --no-bench) BENCH=0 ;;
        --dry-run) DRY=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument '$1' (--help lists them)" >&2; exit 2 ;;
    esac
    shift
done

case "$DEVICE" in
    cpu|cuda|cuda:[0-9]*) ;;
    *) echo "gpu_check.sh: DEVICE: got '$DEVICE', expected cuda, cuda:N or cpu" >&2; exit 2 ;;
esac
ON_GPU=0; [ "$DEVICE" != cpu ] && ON_GPU=1
[ "$INSTALL" = auto ] && INSTALL=$ON_GPU
[ "$QUICK" = auto ] && QUICK=$((1 - ON_GPU))
WHEELS=${WHEELS:-$REPO/out/gpu-wheels}
case "$WHEELS" in /*) ;; *) WHEELS=$REPO/$WHEELS ;; esac
PYTHON_SET=${PYTHON:-}
if [ -z "${PYTHON:-}" ]; then
    if [ "$ON_GPU" = 0 ] && [ -x "$REPO/.venv/bin/python" ]; then PYTHON=$REPO/.venv/bin/python; else PYTHON=python3; fi
fi

# ---------------------------------------------------------------------------------------------- wheels
# Packages zeustune needs that the GPU machine's image lacks (docs: /work/.library/device/KINDS.md
# lists what it has: torch, transformers, tokenizers, accelerate, peft, torchmetrics, matplotlib,
# pyyaml, tqdm, numpy, pillow, huggingface-hub, safetensors, scipy, torchvision ...). Pinned to the
# versions of the interpreter that builds them (this project's .venv), so the GPU runs what was
# tested here. The project itself runs from the carried working tree (PYTHONPATH), not from a
# wheel: a wheel would shadow the tree and lacks models/.
MISSING="diffusers optuna sqlalchemy alembic mako colorlog importlib-metadata lazy-importer lpips stlpips-pytorch"
# The rest of the project's requirements, pinned alike, for a machine whose image lacks them too
# (EXTRA_WHEELS=1; about 30 MB more of the 64 MiB a call may carry).
PRESENT="transformers tokenizers huggingface-hub safetensors pyyaml torchmetrics accelerate peft tqdm matplotlib"

if [ "$MODE" = wheels ]; then
    PYV=${PY_VERSION:-3.12}
    BUILD_PY=${PYTHON_SET:-}
    [ -z "$BUILD_PY" ] && { [ -x "$REPO/.venv/bin/python" ] && BUILD_PY=$REPO/.venv/bin/python || BUILD_PY=python3; }
    names=$MISSING; [ "${EXTRA_WHEELS:-0}" = 1 ] && names="$names $PRESENT"
    specs=$("$BUILD_PY" - $names <<'EOF'
import importlib.metadata as m, sys
out = []
for name in sys.argv[1:]:
    try:
        out.append(f"{name}=={m.version(name)}")
    except m.PackageNotFoundError:
        out.append(name)
print(" ".join(out))
EOF
)
    echo "wheels for CPython $PYV, x86-64 Linux, into $WHEELS: $specs"
    if [ "$DRY" = 1 ]; then exit 0; fi
    mkdir -p "$WHEELS" || exit 1
    # shellcheck disable=SC2086
    "$BUILD_PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$WHEELS" $specs || exit 1
    # stlpips-pytorch's wheel is 64 MB, nearly all of it VGG weights: zeustune reads only the AlexNet
    # file (10 MB, found through the package's folder), so keep that and the metadata as a folder
    # that is copied into the site there, and drop the wheel.
    for whl in "$WHEELS"/stlpips_pytorch-*.whl; do
        [ -f "$whl" ] || continue
        "$BUILD_PY" - "$whl" "$WHEELS/site" <<'EOF' || exit 1
import sys, zipfile
whl, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    keep = [n for n in z.namelist() if n.endswith("weights/vST0.0/alex_shift_tolerant.pth") or ".dist-info/" in n]
    z.extractall(dest, keep)
print(f"{whl}: kept {len(keep)} files in {dest} (the AlexNet weights and the metadata)")
EOF
        rm -f "$whl"
    done
    ls -la "$WHEELS"
    du -sh "$WHEELS"
    # one version of each: two stop the whole install there
    dups=$(ls "$WHEELS"/*.whl | xargs -n1 basename | cut -d- -f1 | tr 'A-Z-' 'a-z_' | sort | uniq -d)
    [ -z "$dups" ] || { echo "gpu_check.sh: several versions of: $dups (remove the old ones from $WHEELS)" >&2; exit 1; }
    exit 0
fi

# ---------------------------------------------------------------------------------------------- settings
if [ "$QUICK" = 1 ]; then
    # the CPU dry run: tiny counts at 10 steps (a path check in a couple of minutes, not a result)
    BUDGET=${BUDGET:-1.5x}; TRIALS=${TRIALS:-12}; REFINE=${REFINE:-3}; CALIB=${CALIB:-2}; HELDOUT=${HELDOUT:-2}
    TIMING_RUNS=${TIMING_RUNS:-2}; EVAL_LIMIT=${EVAL_LIMIT:-2}; BENCH_RUNS=${BENCH_RUNS:-2}
    SETTINGS="--steps 10"; SEARCH_QUICK="--batch 2"
else
    BUDGET=${BUDGET:-3x}; TRIALS=${TRIALS:-40}; REFINE=${REFINE:-10}; CALIB=${CALIB:-24}; HELDOUT=${HELDOUT:-16}
    TIMING_RUNS=${TIMING_RUNS:-11}; EVAL_LIMIT=${EVAL_LIMIT:-16}; BENCH_RUNS=${BENCH_RUNS:-2}
    SETTINGS=""; SEARCH_QUICK=""
fi
BENCH_STEPS=${BENCH_STEPS:-28}
TOTAL_S=${TOTAL_S:-450}
OUT=${OUT:-$REPO/out/gpu-check}
SITE=${SITE:-/tmp/zeustune-site}

if [ "$DRY" = 1 ]; then
    echo "device $DEVICE; python $PYTHON; install wheels: $([ "$INSTALL" = 1 ] && echo "yes, from $WHEELS into $SITE" || echo no)"
    echo "search: --budget $BUDGET --trials $TRIALS --refine $REFINE --calib $CALIB --heldout $HELDOUT --timing-runs $TIMING_RUNS $SETTINGS $SEARCH_QUICK ${SEARCH_ARGS:-}"
    echo "eval: --limit $EVAL_LIMIT; bench: $([ "$BENCH" = 1 ] && { [ "$ON_GPU" = 1 ] && echo "FLUX.1-dev size, steps $BENCH_STEPS, $BENCH_RUNS runs" || echo "scaled-down architecture (smoke)"; } || echo skipped)"
    echo "deadline ${TOTAL_S} s; out $OUT"
    exit 0
fi

mkdir -p "$OUT" || exit 1
rm -f "$OUT"/results.md "$OUT"/gpu-check.tar.gz "$OUT"/gpu-check.log "$OUT"/pareto.png "$OUT"/tuned-*.yaml  # an earlier run's
if [ -z "${SCRATCH:-}" ]; then
    SCRATCH=$(mktemp -d /tmp/zeustune-gpu-check.XXXXXX) || exit 1
    trap 'rm -rf "$SCRATCH"' EXIT  # everything worth keeping is in $OUT by then
fi
TREE=$SCRATCH/tree/docs/benchmarks/gpu
LOGS=$TREE/logs
mkdir -p "$LOGS" "$SCRATCH/home"
LOG=$OUT/gpu-check.log
: > "$LOG"
export ZEUSTUNE_HOME=$SCRATCH/home ZEUSTUNE_CACHE=$SCRATCH/cache MPLBACKEND=Agg PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
cd "$REPO" || exit 1

T_START=$(date +%s)
ROWS=()
FAILED=0
say() { echo "$*" | tee -a "$LOG"; }
left() { echo $((TOTAL_S - ($(date +%s) - T_START))); }

# run NAME LIMIT_S CMD...: the command under `timeout`, capped by the overall deadline (15 s kept
# for the summary), its output in $LOGS/NAME.log, a row for the summary table.
run() {
    local name=$1 limit=$2; shift 2
    local remain=$(( $(left) - 15 ))
    if [ "$remain" -lt 20 ]; then
        say "== [$name] skipped: ${remain} s left before the deadline"
        ROWS+=("| $name | skipped (deadline) | - | - |"); FAILED=1; return 124
    fi
    [ "$limit" -gt "$remain" ] && limit=$remain
    say "== [$name] $(date -u +%H:%M:%S) (timeout ${limit} s): $*"
    local t0 rc dt
    t0=$(date +%s.%N)
    timeout --kill-after=10 "$limit" "$@" > "$LOGS/$name.log" 2>&1
    rc=$?
    dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    tail -n 25 "$LOGS/$name.log" | sed "s/^/    [$name] /" | tee -a "$LOG"
    local what="ok"
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then what="TIMED OUT"; elif [ "$rc" != 0 ]; then what="FAILED (exit $rc)"; fi
    [ "$rc" = 0 ] || FAILED=1
    say "== [$name] $what in ${dt} s"
    ROWS+=("| $name | $what | $dt | $limit |")
    return "$rc"
}

# ---------------------------------------------------------------------------------------------- (a) install
if [ "$INSTALL" = 1 ]; then
    if ! ls "$WHEELS"/*.whl > /dev/null 2>&1; then
        say "== [install] no wheels in $WHEELS: build them here with 'bash scripts/gpu_check.sh --build-wheels' and carry the folder"
        ROWS+=("| install | FAILED (no wheels in $WHEELS) | - | - |"); FAILED=1
    else
        run install 180 "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" "$WHEELS"/*.whl
        if [ -d "$WHEELS/site" ]; then cp -r "$WHEELS/site/." "$SITE/"; fi  # files kept out of a wheel (st-lpips' weights)
        export PYTHONPATH=$REPO:$SITE${PYTHONPATH#$REPO}
    fi
else
    ROWS+=("| install | skipped (DEVICE=$DEVICE or --no-install) | - | - |")
fi

# ---------------------------------------------------------------------------------------------- env
cat > "$SCRATCH/env.py" <<'EOF'
"""The interpreter, the device and the project's requirements against what is importable."""
import importlib.metadata as m
import platform
import re
import sys
from pathlib import Path

dev = sys.argv[1]
print(f"python {platform.python_version()} ({sys.executable}), cp{sys.version_info[0]}{sys.version_info[1]}, {platform.machine()}")
import torch

print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}, built for CUDA {torch.version.cuda}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"GPU: {torch.cuda.get_device_name(0)}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs, "
          f"capability {p.major}.{p.minor}")
text = Path("pyproject.toml").read_text()
deps = re.findall(r'^\s*"([A-Za-z0-9_.\-]+)([^"]*)"', text.split("dependencies = [", 1)[1].split("]", 1)[0], re.M)
try:
    from packaging.specifiers import SpecifierSet
except ImportError:
    SpecifierSet = None
bad = []
print("| requirement | installed | where |\n|---|---|---|")
for name, spec in deps:
    try:
        dist = m.distribution(name)
        v = dist.version
        ok = SpecifierSet is None or not spec.strip() or v in SpecifierSet(spec.split(";")[0].strip())
        where = str(dist.locate_file("")).replace(str(Path.home()), "~")
        print(f"| {name}{spec} | {v}{'' if ok else ' (DOES NOT MATCH)'} | {where} |")
        if not ok:
            bad.append(f"{name} {v} (wants {spec})")
    except m.PackageNotFoundError:
        print(f"| {name}{spec} | MISSING | - |")
        bad.append(f"{name} missing")
for mod in ("diffusers", "optuna", "sqlalchemy", "transformers", "yaml", "zeustune", "zeustune.search.driver"):
    __import__(mod)
import zeustune

print(f"zeustune from {Path(zeustune.__file__).parent}")
if dev.startswith("cuda") and not torch.cuda.is_available():
    sys.exit(f"DEVICE={dev} but torch sees no CUDA device")
if bad:
    print("requirements not met (the run goes on; they may not matter): " + "; ".join(bad))
EOF
run env 120 "$PYTHON" "$SCRATCH/env.py" "$DEVICE"
PYV=$(grep -m1 '^python ' "$LOGS/env.log" | cut -d' ' -f2)
if [ "$INSTALL" = 1 ] && [ -n "$PYV" ]; then
    tag=cp$(echo "$PYV" | cut -d. -f1,2 | tr -d .)
    odd=$(ls "$WHEELS"/*.whl 2>/dev/null | xargs -n1 basename | grep -E -- '-cp3[0-9]+-' | grep -v -- "-$tag-" || true)
    [ -z "$odd" ] || say "note: the GPU machine's python is $PYV ($tag), these wheels are for another: $odd"
fi

# ---------------------------------------------------------------------------------------------- sync
cat > "$SCRATCH/sync.py" <<'EOF'
"""Where zeustune times with time.perf_counter without torch.cuda.synchronize in the same function
(static), and on CUDA how far an unsynchronised tiny-flux timing is from a synchronised one."""
import ast
import statistics
import sys
import time
from pathlib import Path

dev, out = sys.argv[1], Path(sys.argv[2])
lines = ["## Timing and CUDA synchronisation", "",
         "Functions in zeustune/ that read `time.perf_counter()` and never call `torch.cuda.synchronize()`"
         " (on CUDA their figures include only what the CPU has queued, not what the GPU still runs):", ""]


def own_names(fn):
    """Attribute and function names used in ``fn``'s own body (nested functions are separate)."""
    names, todo = set(), list(fn.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        if isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.Name):
            names.add(node.id)
        todo.extend(ast.iter_child_nodes(node))
    return names


unsynced, synced = [], []
for path in sorted(Path("zeustune").rglob("*.py")):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names = own_names(node)
            if "perf_counter" in names:
                (synced if "synchronize" in names else unsynced).append(f"`{path}:{node.lineno}` `{node.name}`")
lines += [f"- {x}" for x in unsynced] + [
    "", "Some only log wall-clock durations (the driver's stage times, reference rendering); those that feed "
    "speedups and the cost model are `Evaluator.time_run`, `time_interleaved`, `bench.run` and the CLI's timings.",
    "", "Functions that time and synchronise: " + (", ".join(synced) or "none"), ""]
lines.append("")
if dev.startswith("cuda"):
    import torch

    from zeustune.quality.evaluate import sample
    from zeustune.models import load

    pipe, spec = load("tiny-flux", device=dev, progress=False)
    pipe.set_progress_bar_config(disable=True)
    for _ in range(3):
        sample(pipe, spec, "a red circle", 0)  # warm-up
    torch.cuda.synchronize()
    plain, synced, lag = [], [], []
    for _ in range(7):
        t0 = time.perf_counter()
        sample(pipe, spec, "a red circle", 0)
        t1 = time.perf_counter()
        torch.cuda.synchronize()
        t2 = time.perf_counter()
        plain.append(t1 - t0)
        synced.append(t2 - t0)
        lag.append(t2 - t1)
    p, s, g = (statistics.median(v) * 1e3 for v in (plain, synced, lag))
    lines += [f"tiny-flux on {torch.cuda.get_device_name()}, one image, median of 7: unsynchronised {p:.1f} ms, "
              f"synchronised {s:.1f} ms; the GPU was still busy {g:.2f} ms after the call returned "
              f"({100 * g / s:.1f}% of the run).", ""]
else:
    lines += [f"(no CUDA measurement: DEVICE={dev})", ""]
out.write_text("\n".join(lines))
print("\n".join(lines))
EOF
run sync 120 "$PYTHON" "$SCRATCH/sync.py" "$DEVICE" "$TREE/sync.md"

# ---------------------------------------------------------------------------------------------- (b) search
FAILED_BEFORE_SEARCH=${FAILED:-0}
# shellcheck disable=SC2086
run search 300 "$PYTHON" -m zeustune.cli search --model tiny-flux --budget "$BUDGET" --device "$DEVICE" \
    --trials "$TRIALS" --refine "$REFINE" --calib "$CALIB" --heldout "$HELDOUT" --timing-runs "$TIMING_RUNS" $SETTINGS $SEARCH_QUICK \
    --export-dir "$SCRATCH/export" --out "$TREE/search" --storage "sqlite:///$SCRATCH/studies.db" --no-progress ${SEARCH_ARGS:-}
EXPORTED=$(ls "$SCRATCH"/export/*.yaml 2>/dev/null | head -n1)
SCHED=$EXPORTED
RESAMPLE=""
if [ -z "$EXPORTED" ]; then
    # a search that ran but exported nothing (no finalist's measured speedup reached the budget)
    # leaves (c) and (d) something to measure: the committed tiny-flux preset
    SCHED=$REPO/schedules/tiny-flux/tuned-3x.yaml
    [ -n "$SETTINGS" ] && RESAMPLE="--resample"
    say "note: the search exported no schedule; (c) and (d) use the committed preset $SCHED instead"
    if [ "$QUICK" = 1 ] && grep -q "no finalist's measured speedup reached" "$LOGS/search.log" 2>/dev/null; then
        # the CPU dry run checks the path: 2 timing runs on a shared host can put the finalist at the
        # budget line just under it, which is a timing outcome, not a broken step
        FAILED=$FAILED_BEFORE_SEARCH
        say "note: (dry run) a finalist just under the budget is not counted as a failure"
    fi
    ROWS+=("| note | the search exported nothing: eval and bench use schedules/tiny-flux/tuned-3x.yaml | - | - |")
fi

# ---------------------------------------------------------------------------------------------- (c) eval
cp "$SCHED" "$TREE/"
# shellcheck disable=SC2086
run eval 180 "$PYTHON" -m zeustune.cli eval "$SCHED" --model tiny-flux --device "$DEVICE" --limit "$EVAL_LIMIT" \
    --timing-runs 5 --out "$TREE/eval" $SETTINGS $RESAMPLE

# ---------------------------------------------------------------------------------------------- (d) bench
cat > "$SCRATCH/bench.py" <<'EOF'
"""bench_gpu's measurement (what `zeustune bench` runs after the peers) for the exported plan and
ZEUS's FLUX presets, written after each step count so a timeout keeps what was measured."""
import json
import sys
from pathlib import Path

import torch

from zeustune.bench import gpu as bench_gpu
from zeustune.schedule import Schedule

dev, exported, steps, runs, out = sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3].split(",")], int(sys.argv[4]), Path(sys.argv[5])
presets = [p for p in sys.argv[6].split(",") if p] if len(sys.argv) > 6 else []
full = dev.startswith("cuda")
s = Schedule.load(exported)
scheds = {f"{s.tag} (plan)": s}
for name in presets + ["zeus-flux-demo", "zeus-flux-default"]:  # ZEUS's FLUX presets: 50 steps
    scheds[f"{name} (plan)" if "/" in name else name] = Schedule.from_preset(name)
if not full:  # the scaled-down architecture on the CPU: the exported plan's own step count
    steps = [s.steps]
name = torch.cuda.get_device_name() if full else "cpu (scaled-down architecture: a smoke test, not a measurement)"
result = {}
for n in steps:
    part = {k: v for k, v in scheds.items() if v.steps == n}
    if not part:
        print(f"{n} steps: no schedule at this step count (have {sorted({v.steps for v in scheds.values()})})")
        continue
    r = bench_gpu.measure(part, steps_list=(n,), runs=runs, size="full" if full else "small", device=dev,
                          dtype=torch.bfloat16 if full else torch.float32)
    result.update(r)
    text = bench_gpu.markdown(result, name)
    out.write_text(text)
    (out.with_suffix(".json")).write_text(json.dumps(result, indent=1))
    print(text)
EOF
if [ "$BENCH" = 1 ]; then
    run bench 300 "$PYTHON" "$SCRATCH/bench.py" "$DEVICE" "$SCHED" "$BENCH_STEPS" "$BENCH_RUNS" "$TREE/gpu-latency.md" \
        "${BENCH_PRESETS:-}"
else
    ROWS+=("| bench | skipped (--no-bench) | - | - |")
fi

# ---------------------------------------------------------------------------------------------- summary
{
    echo "# GPU check: zeustune on $DEVICE"
    echo
    echo "Made by \`scripts/gpu_check.sh\` ($(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown));"
    echo "total $(( $(date +%s) - T_START )) s of a ${TOTAL_S} s deadline.$([ "$QUICK" = 1 ] && echo " Quick settings (tiny counts): a path check, not results.")"
    echo
    echo "| step | result | seconds | timeout (s) |"
    echo "|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "## Machine and packages"
    echo
    grep -v '^==' "$LOGS/env.log" 2>/dev/null
    echo
    echo "## (b) Search: tiny-flux, budget $BUDGET, $TRIALS trials + $REFINE refinement moves, $CALIB calibration and $HELDOUT held-out prompts"
    echo
    grep -E '^(cost model|budget|references|new study|resumed study|finalist|noisy|exported|zeustune:|note:)' "$LOGS/search.log" 2>/dev/null | sed 's/^/    /'
    echo
    sed -n '/^| schedule/,/^$/p' "$TREE/search/report.md" 2>/dev/null
    echo
    echo "## (c) Eval of $([ -n "$EXPORTED" ] && echo "the exported schedule" || echo "the committed preset tiny-flux/tuned-3x (the search exported nothing)")"
    echo
    sed -n '/^|/p' "$LOGS/eval.log" 2>/dev/null
    echo
    echo "## (d) FLUX-size latency (zeustune/bench/gpu.py)"
    echo
    cat "$TREE/gpu-latency.md" 2>/dev/null || echo "(none: see the bench step above)"
    echo
    cat "$TREE/sync.md" 2>/dev/null
} > "$TREE/results.md"
cp "$TREE/results.md" "$OUT/results.md"
cp "$SCRATCH/studies.db" "$TREE/studies.db" 2>/dev/null
[ -n "$EXPORTED" ] && cp "$EXPORTED" "$OUT/"  # (a fallback preset is in the tarball only)
[ -f "$TREE/search/pareto.png" ] && cp "$TREE/search/pareto.png" "$OUT/pareto.png"
tar -czf "$OUT/gpu-check.tar.gz" -C "$SCRATCH/tree" docs
say "wrote $OUT/results.md, $OUT/gpu-check.tar.gz (unpack in the repository root: docs/benchmarks/gpu/), $LOG"
say "$([ "$FAILED" = 0 ] && echo "gpu_check: every step passed" || echo "gpu_check: some step FAILED or was skipped by the deadline") ($(( $(date +%s) - T_START )) s)"
exit "$FAILED"
