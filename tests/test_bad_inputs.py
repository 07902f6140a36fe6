"""Every bad input gets a named error before any work (issue 23).

One table of bad inputs over every command and every file kind a user hands zeustune: schedules,
search spaces, a model folder's zeustune.yaml, prompt files, cost models, storages, output paths,
flags and environment paths. Each row runs the CLI in this process and must end with exit status
2, no traceback, a short message naming the flag or the file, and nothing written: the folder the
row ran in (its input files included) is byte for byte as before. Loading a model, building a
tiny pipeline or starting a search fails the row, so every refusal comes before any work.
"""

from __future__ import annotations

import importlib

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml

from zeustune import cli
from zeustune.quality.metrics import alexnet_weights_path
from zeustune.schedule.format import ScheduleError
from zeustune.search import space as SP

# -- the files rows are made of ------------------------------------------------------------------

PLAN = "FFSRRRFSRRRFFSFSRRFSRFSRFSFF"  # 28 steps, as tiny-flux samples
SCHEDULE = {"zeustune_schedule": 4, "tag": "t1", "model": {"family": "flux"},
            "sampler": {"scheduler": "FlowMatchEulerDiscreteScheduler", "steps": 28}, "plan": PLAN}
SPACE = {"zeustune_space": 1, "family": "flux", "generators": ["periodic"],
         "periodic": {"boundary": [0.2, 0.8], "skips": [0, 3]}}
COST = {"fixed": 0.02, "call": 0.01, "skip": 0.0002, "steps": 28, "device": "cpu", "runs": 3}
INDEX = json.dumps({"_class_name": "FluxPipeline"})
DIR = object()  # a folder where a file is expected
DB = object()  # an Optuna storage with one study ("s1", no trials)


def edited(base: dict, **changes) -> dict:
    """``base`` with dotted fields set (``sampler__steps`` sets sampler.steps); None deletes."""
    out = json.loads(json.dumps(base))
    for key, value in changes.items():
        *path, last = key.split("__")
        d = out
        for p in path:
            d = d.setdefault(p, {})
        if value is None:
            d.pop(last, None)
        else:
            d[last] = value
    return out


def sched(**changes) -> str:
    return yaml.safe_dump(edited(SCHEDULE, **changes), sort_keys=False, width=10_000)


def space(**changes) -> str:
    return yaml.safe_dump(edited(SPACE, **changes), sort_keys=False)


def cost(**changes) -> str:
    return json.dumps(edited(COST, **changes))


def folder(text: str, **more) -> dict:
    """A model folder (a FLUX model_index.json) with ``text`` as its zeustune.yaml."""
    return {"m/model_index.json": INDEX, "m/zeustune.yaml": text, **more}


ALIAS_PLAN = f"zeustune_schedule: 4\ntag: t1\ndescription: &p {PLAN}\nmodel: {{family: flux}}\n" \
             f"sampler: {{scheduler: FlowMatchEulerDiscreteScheduler, steps: 28}}\nplan: *p\n"
LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")) + sched()
MERGE = sched().replace("sampler:", "base: &s {scheduler: FlowMatchEulerDiscreteScheduler}\nsampler:\n  <<: *s\n  steps: 28\nold_sampler:")
DUP_PLAN = sched() + f"plan: {PLAN}\n"
BINARY = bytes(range(256)) * 4


def _dup_nested() -> str:
    text = sched()
    return text.replace("  steps: 28\n", "  steps: 28\n  steps: 29\n")


@dataclass
class Row:
    kind: str
    id: str
    argv: list
    named: str  # what the message must name (the flag or the file)
    files: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)
    marks: tuple = ()


ROWS: list[Row] = []


def row(kind, id, argv, named, files=None, env=None, marks=()):
    ROWS.append(Row(kind, id, list(argv), named, files or {}, env or {}, marks))


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
NO_LPIPS = pytest.mark.skipif(os.path.isfile(alexnet_weights_path()), reason="LPIPS weights are installed here")
ROOT = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc (a folder nobody can write in)")

SHOW = ["show", "s.yaml"]
EVAL = ["eval", "tiny-flux/tuned-2x", "--model", "tiny-flux", "--metric", "gmsd", "--timing-runs", "0"]
SEARCH = ["search", "--model", "tiny-flux", "--metric", "gmsd", "--budget", "2x", "--no-progress"]
GEN = ["generate", "--model", "tiny-flux", "--prompt", "a red ring"]
RUN = ["run", "--repeats", "1"]
BENCH = ["bench", "--model", "tiny-flux", "--metric", "gmsd", "--no-progress"]
EXPORT = ["export", "--study", "s1", "--storage", "sqlite:///db.sqlite"]

# -- schedule files (show; a few through eval, run, generate and bench) ---------------------------

SCHEDULE_FILES = {
    # tracebacks before
    "no F: all D": sched(plan="D" * 28),
    "no F: D and predicted": sched(plan="DD" + "E" * 26),
    "no F: D and adaptive": sched(plan="DD" + "A" * 26),
    "no F: D and reuse": sched(plan="DR" * 14),
    "alias: the plan": ALIAS_PLAN,
    "alias: billion laughs": LAUGHS,
    "alias: merge key": MERGE,
    "duplicate key: plan": DUP_PLAN,
    "duplicate key: sampler.steps": _dup_nested(),
    "duplicate key: tag": sched() + "tag: t2\n",
    "predictor.degree huge": sched(predictor={"degree": 1_000_000_000}),
    "predictor.degree 17": sched(predictor={"degree": 17}),
    "predictor.degree negative": sched(predictor={"degree": -1}),
    "predictor.lagrange_term huge": sched(predictor={"lagrange_term": 10**9}),
    "sampler.steps huge": sched(sampler__steps=200_000),
    "plan of 200,000 letters": sched(plan="F" * 200_000),
    "binary file": BINARY,
    "latin-1 text": sched().replace("tag: t1", "tag: t1\ndescription: caf\u00e9").encode("latin-1"),
    "nesting too deep": "a: " + "[" * 5000 + "]" * 5000 + "\n",
    # wrong behaviours and good errors before, kept
    "tag Bad_TAG": sched(tag="Bad_TAG"),
    "tag ../x": sched(tag="../x"),
    "tag with a newline": sched(tag="t1\n"),
    "tag too long": sched(tag="t" * 65),
    "yaml syntax": "zeustune_schedule: 4\nplan: [FF\n",
    "a list": "- 1\n- 2\n",
    "empty": "",
    "version 99": sched(zeustune_schedule=99),
    "version a string": sched(zeustune_schedule="4"),
    "unknown key": sched(colour="red"),
    "model.family unknown": sched(model__family="dalle"),
    "sampler.steps zero": sched(sampler__steps=0),
    "sampler.steps a string": sched(sampler__steps="28"),
    "plan bad letter": sched(plan=PLAN[:5] + "X" + PLAN[6:]),
    "plan starts with E": sched(plan="E" + PLAN[1:]),
    "plan E after one F": sched(plan="FE" + PLAN[2:]),
    "plan too short": sched(plan=PLAN[:-1]),
    "plan not a string": sched(plan=123),
    "predictor.gates bad": sched(predictor={"gates": "EXQ"}),
    "predictor.blend 2": sched(predictor={"blend": 2}),
    "predictor.ridge negative": sched(predictor={"ridge": -1}),
    "predictor.gamma nan": sched(predictor={"gamma": float("nan")}),
    "predictor.gamma inf": sched(predictor={"gamma": float("inf")}),
    "predictor.reduced 0.3": sched(predictor={"reduced": 0.3}),
    "predictor.reduced_axes time": sched(zeustune_schedule=6, predictor={"reduced_axes": "time"}),
    "guidance.scale nan": sched(sampler__guidance={"mode": "cfg", "scale": float("nan")}),
    "sampler.sigmas short": sched(sampler__sigmas=[1.0, 0.5]),
    "branch plan without F": sched(branch_plans={"uncond": "D" * 28}),
    "branch plan too short": sched(branch_plans={"uncond": PLAN[:-2]}),
    "branch plan unknown branch": sched(branch_plans={"neutral": PLAN}),
    "lora sha256 bad": sched(model__loras=[{"name": "x", "sha256": "abc"}]),
    "sampler.call a list": sched(sampler__call={"max_sequence_length": [1, 2]}),
    "cfg.branches bad": sched(cfg={"branches": "both"}),
    "metrics a list": sched(metrics=[1, 2]),
}
for name, text in SCHEDULE_FILES.items():
    row("schedule file", f"show: {name}", SHOW, "s.yaml", {"s.yaml": text})
row("schedule file", "show: a folder named s.yaml", SHOW, "s.yaml", {"s.yaml": DIR})
row("schedule file", "show: missing s.yaml", SHOW, "s.yaml")
row("schedule file", "show: unknown preset", ["show", "no-such-preset"], "no-such-preset")
for name in ("no F: all D", "alias: the plan", "duplicate key: plan", "predictor.degree huge", "plan of 200,000 letters",
             "binary file", "tag ../x"):
    row("schedule file", f"eval: {name}", ["eval", "s.yaml", *EVAL[2:]], "s.yaml", {"s.yaml": SCHEDULE_FILES[name]})
for name in ("no F: all D", "alias: billion laughs", "duplicate key: sampler.steps", "predictor.lagrange_term huge",
             "latin-1 text"):
    row("schedule file", f"run: {name}", [*RUN, "--schedule", "s.yaml"], "s.yaml", {"s.yaml": SCHEDULE_FILES[name]})
for name in ("no F: all D", "alias: merge key", "predictor.degree 17"):
    row("schedule file", f"generate: {name}", [*GEN, "--schedule", "s.yaml"], "s.yaml", {"s.yaml": SCHEDULE_FILES[name]})
for name in ("no F: all D", "alias: the plan", "binary file"):
    row("schedule file", f"bench: {name}", [*BENCH, "--schedule", "s.yaml"], "s.yaml", {"s.yaml": SCHEDULE_FILES[name]})
row("schedule file", "eval: a schedule of another family", ["eval", "sdxl/zeus-xl-demo", *EVAL[2:]], "model.family")
row("schedule file", "eval: a schedule at other settings", [*EVAL, "--height", "128"], "sampler.height")
row("schedule file", "run: schedule at other steps", [*RUN, "--schedule", "tiny-flux/tuned-2x", "--model", "tiny-random-flux",
                                                      "--steps", "30"], "--steps")
row("schedule file", "generate: schedule at other steps", [*GEN, "--schedule", "tiny-flux/tuned-2x", "--steps", "30"], "--steps")
row("schedule file", "bench: schedule at other steps", [*BENCH, "--schedule", "s.yaml"], "s.yaml",
    {"s.yaml": sched(sampler__steps=27, plan=PLAN[:27])})

# -- search spaces (search --space) -------------------------------------------------------------

SPACE_FILES = {
    "gamma: infinite high": space(gamma=[0.5, float("inf")]),
    "gamma: infinite low": space(gamma=[float("-inf"), 1.0]),
    "gamma: nan": space(gamma=[float("nan"), 1.0]),
    "growing_gaps.window infinite": space(generators=["periodic", "growing_gaps"],
                                          growing_gaps={"window": [1.0, float("inf")], "alpha": [0, 1]}),
    "spaced.rho nan": space(generators=["periodic", "spaced"], spaced={"fresh": [0.1, 0.5], "rho": [float("nan"), 2]}),
    "adaptive threshold -inf": space(generators=["periodic", "adaptive"],
                                     adaptive={"sada_threshold": [float("-inf"), 0.1]}),
    "forecast.degree huge": space(forecast={"degree": [1, 1000]}),
    "forecast.ridge zero": space(forecast={"ridge": [0.0, 1.0]}),
    "alias": "zeustune_space: 1\nfamily: flux\ngenerators: [periodic]\nperiodic: &p {boundary: [0.2, 0.8]}\nzeus: *p\n",
    "duplicate key": space() + "family: sdxl\n",
    "binary": BINARY,
    "yaml syntax": "zeustune_space: 1\ngenerators: [periodic\n",
    "unknown key": space(colour="red"),
    "generators empty": space(generators=[]),
    "generators unknown": space(generators=["magic"]),
    "zeus.patterns bad": space(generators=["periodic", "zeus"], zeus={"patterns": ["3:05"]}),
    "max_run zero": space(max_run=0),
    "warmup reversed": space(warmup=[4, 2]),
    "uncond_drop 1": space(uncond_drop=[1]),
    "reduced.factors 0.3": space(reduced={"factors": [0.3]}),
    "reduced.axes time": space(reduced={"factors": [0.5], "axes": ["time"]}),
    "fraction above 1": space(periodic={"boundary": [0.2, 1.5]}),
    "gates unknown": space(gates=["Q"]),
    "version 2": space(zeustune_space=2),
    "periodic listed, no section": space(periodic=None),
    "another family": space(family="sdxl"),
}
for name, text in SPACE_FILES.items():
    row("space file", f"search: {name}", [*SEARCH, "--space", "sp.yaml"], "sp.yaml", {"sp.yaml": text})
row("space file", "search: no such space", [*SEARCH, "--space", "no-such-space"], "no-such-space")

# -- a model folder's zeustune.yaml (search, eval, generate, bench --model m) ----------------------

FOLDER_FILES = {
    "guidance: unknown key": "guidance: {mode: distilled, scale: 3.5, sacle: 2}\n",
    "guidance.scale nan": "guidance: {mode: distilled, scale: .nan}\n",
    "guidance.scale inf": "guidance: {mode: distilled, scale: .inf}\n",
    "guidance.scale negative": "guidance: {mode: distilled, scale: -1}\n",
    "guidance.mode of another family": "guidance: {mode: cfg, scale: 3}\n",
    "guidance not a mapping": "guidance: 3.5\n",
    "prompts.calib absolute, outside": "prompts: {calib: /etc/hostname}\n",
    "prompts.calib ../ outside": "prompts: {calib: ../outside.txt}\n",
    "prompts.heldout ../../ outside": "prompts: {heldout: ../../outside.txt}\n",
    "prompts.calib missing inside": "prompts: {calib: calib.txt}\n",
    "prompts split unknown": "prompts: {train: p.txt}\n",
    "alias": "steps: &n 28\nheight: *n\n",
    "duplicate key": "steps: 28\nsteps: 30\n",
    "unknown key": "stepz: 28\n",
    "steps zero": "steps: 0\n",
    "steps huge": "steps: 200000\n",
    "call_kwargs sets the prompt": "call_kwargs: {prompt: hello}\n",
    "call_kwargs a list value": "call_kwargs: {max_sequence_length: [1, 2]}\n",
    "call_kwargs a nan value": "call_kwargs: {guidance_scale: .nan}\n",
    "call_kwargs not a mapping": "call_kwargs: [1, 2]\n",
    "dtype unknown": "dtype: float8\n",
    "negative_prompt not a string": "negative_prompt: [a, b]\n",
    "version 2": "zeustune_model: 2\n",
    "a list": "- steps\n",
    "binary": BINARY,
    "yaml syntax": "steps: [28\n",
}
for name, text in FOLDER_FILES.items():
    row("folder zeustune.yaml", f"search: {name}", ["search", "--model", "m", "--metric", "gmsd"], "zeustune.yaml",
        folder(text, **{"outside.txt": "a prompt\n"}))
row("folder zeustune.yaml", "search: prompts.calib a link out of the folder", ["search", "--model", "m", "--metric", "gmsd"],
    "zeustune.yaml", folder("prompts: {calib: link.txt}\n", **{"outside.txt": "a prompt\n", "m/link.txt": ("link", "../outside.txt")}))
row("folder zeustune.yaml", "search: zeustune.yaml is a folder", ["search", "--model", "m"], "zeustune.yaml",
    {"m/model_index.json": INDEX, "m/zeustune.yaml": DIR})
for name in ("guidance: unknown key", "guidance.scale nan", "prompts.calib ../ outside", "alias", "duplicate key"):
    text = FOLDER_FILES[name]
    row("folder zeustune.yaml", f"eval: {name}", ["eval", "s.yaml", "--model", "m", "--metric", "gmsd"], "zeustune.yaml",
        {**folder(text), "s.yaml": sched()})
    row("folder zeustune.yaml", f"generate: {name}", ["generate", "--model", "m", "--prompt", "x"], "zeustune.yaml", folder(text))
    row("folder zeustune.yaml", f"bench: {name}", ["bench", "--model", "m", "--metric", "gmsd"], "zeustune.yaml", folder(text))

# -- prompt files ----------------------------------------------------------------------------------

TWO = "a red ring\na blue square\n"
row("prompt file", "search: held-out file shorter than --heldout", [*SEARCH, "--heldout-prompts", "h.txt", "--heldout", "5"],
    "--heldout", {"h.txt": TWO})
row("prompt file", "search: calibration file shorter than --calib", [*SEARCH, "--prompts", "c.txt", "--calib", "5"],
    "--calib", {"c.txt": TWO})
row("prompt file", "search: collection shorter than --calib", [*SEARCH, "--calib", "1000"], "--calib")
row("prompt file", "search: no prompts left for --validation", [*SEARCH, "--calib", "40", "--validation", "40"], "--validation")
row("prompt file", "search: collection shorter than --heldout", [*SEARCH, "--heldout", "1000"], "--heldout")
for flag in ("--prompts", "--heldout-prompts"):
    for name, content in (("empty", ""), ("only comments", "# a\n\n# b\n"), ("binary", BINARY), ("a folder", DIR)):
        row("prompt file", f"search {flag}: {name}", [*SEARCH, flag, "p.txt"], "p.txt", {"p.txt": content})
    row("prompt file", f"search {flag}: missing", [*SEARCH, flag, "p.txt"], "p.txt")
for name, content in (("empty", ""), ("binary", BINARY), ("a folder", DIR)):
    row("prompt file", f"eval --prompts: {name}", [*EVAL, "--prompts", "p.txt"], "p.txt", {"p.txt": content})
row("prompt file", "eval --prompts: missing", [*EVAL, "--prompts", "p.txt"], "p.txt")
row("prompt file", "bench: held-out file shorter than --heldout", [*BENCH, "--heldout-prompts", "h.txt", "--heldout", "5"],
    "--heldout", {"h.txt": TWO})
row("prompt file", "bench: collection shorter than --heldout", [*BENCH, "--heldout", "1000"], "--heldout")
row("prompt file", "bench --heldout-prompts: binary", [*BENCH, "--heldout-prompts", "p.txt"], "p.txt", {"p.txt": BINARY})

# -- cost models (search --cost-model) -------------------------------------------------------------

COST_FILES = {
    "all zeros": cost(fixed=0, call=0, skip=0),
    "call negative": cost(call=-0.01),
    "call below skip": cost(call=0.0001, skip=0.001),
    "call equal to skip": cost(call=0.001, skip=0.001),
    "skip negative": cost(skip=-0.001),
    "fixed negative": cost(fixed=-1),
    "call a string": cost(call="0.01"),
    "fixed null": json.dumps({**COST, "fixed": None}),
    "call true": cost(call=True),
    "steps a string": cost(steps="28"),
    "steps 50": cost(steps=50),
    "steps zero": cost(steps=0),
    "call NaN": json.dumps(COST).replace('"call": 0.01', '"call": NaN'),
    "fixed Infinity": json.dumps(COST).replace('"fixed": 0.02', '"fixed": Infinity'),
    "call missing": cost(call=None),
    "unknown field": cost(colour="red"),
    "a list": "[1, 2]",
    "invalid JSON": "{fixed: 1}",
    "binary": BINARY,
    "duplicate key": json.dumps(COST)[:-1] + ', "call": 0.5}',
    "reduced a list": cost(reduced=[0.5]),
    "reduced factor 0.3": cost(reduced={"0.3": 0.004}),
    "reduced frames:0.6": cost(reduced={"frames:0.6": 0.004}),
    "reduced cost below skip": cost(reduced={"0.5": 0.0}),
    "device a number": cost(device=5),
    "runs negative": cost(runs=-1),
    "budget out of reach": cost(fixed=10.0),
}
for name, text in COST_FILES.items():
    named = "--budget" if name == "budget out of reach" else "cost.json"
    row("cost model", f"search: {name}", [*SEARCH, "--cost-model", "cost.json"], named, {"cost.json": text})
PROBE_SPACE = [*SEARCH, "--space", "tiny-flux-probe", "--cost-model", "cost.json"]
row("cost model", "search: no probe price for a space with G steps", PROBE_SPACE, "cost.json", {"cost.json": cost()})
row("cost model", "search: probe negative", PROBE_SPACE, "cost.json", {"cost.json": cost(probe=-0.001)})
row("cost model", "search: missing", [*SEARCH, "--cost-model", "cost.json"], "cost.json")
row("cost model", "search: a folder", [*SEARCH, "--cost-model", "cost.json"], "cost.json", {"cost.json": DIR})

# -- flags -----------------------------------------------------------------------------------------

for flag, value in (("--calib", "0"), ("--calib", "-1"), ("--validation", "-1"), ("--heldout", "0"), ("--heldout", "-3"), ("--trials", "0"),
                    ("--trials", "-5"), ("--refine", "-1"), ("--batch", "0"), ("--timing-runs", "0"), ("--workers", "0"),
                    ("--workers", "-2"), ("--budget", "0"), ("--budget", "1"), ("--budget", "1x"), ("--budget", "fast"),
                    ("--budget=-3x", None), ("--budget", "inf"), ("--device", "banana"), ("--device", "cuda:99"),
                    ("--device", "meta"), ("--device", "CPU"), ("--device", ""), ("--study-name", "../../../x"),
                    ("--study-name", "Bad_NAME"), ("--study-name", "a/b"), ("--study-name", ""), ("--study-name", ".hidden"),
                    ("--study-name", "s" * 129), ("--metric", "nope"), ("--metric", "LPIPS"), ("--prefix-mib", "-1"),
                    ("--prefix-mib", "inf"), ("--prefix-mib", "nan"), ("--multi-fidelity-z", "0"),
                    ("--multi-fidelity-z", "nan"), ("--multi-fidelity-z", "inf"), ("--storage", "studies.db"),
                    ("--steps", "0"), ("--steps", "1000000"), ("--height", "0"), ("--width", "-1"), ("--frames", "5"),
                    ("--height", "1000000"), ("--width", "16385"),
                    ("--guidance", "-1"), ("--guidance", "nan"), ("--true-cfg", "inf"), ("--dtype", "float8"),
                    ("--lora", "no-such-lora.safetensors"), ("--lora", "lora.safetensors:strong"), ("--model", "no-such-model"),
                    ("--model", "./no/such/folder"), ("--space", "adir")):
    # "models: model: got ..." (the registry's form); a space is named by what was given
    named = {"--model": "model", "--space": "adir", "--budget=-3x": "--budget"}.get(flag, flag)
    argv = [*SEARCH, flag] if value is None else [*SEARCH, flag, value]
    row("flag", f"search {flag} {(value or '')[:20]!r}", argv, named, {"lora.safetensors": b"0", "adir": DIR})
row("flag", "search --device cuda without CUDA", [*SEARCH, "--device", "cuda"], "--device", marks=(NO_CUDA,))
row("flag", "search --metric lpips without its weights", [*SEARCH, "--metric", "lpips"], "--metric", marks=(NO_LPIPS,))
row("flag", "search --negative-prompt without true CFG", ["search", "--model", "flux", "--negative-prompt", "x"],
    "--negative-prompt")

for flag, value in (("--limit", "0"), ("--limit", "-1"), ("--timing-runs", "-1"), ("--device", "banana"),
                    ("--device", "cuda:99"), ("--metric", "nope"), ("--steps", "1000000"), ("--steps", "0"),
                    ("--steps", "30"), ("--dtype", "int8"), ("--guidance", "inf"), ("--model", "no-such-model")):
    row("flag", f"eval {flag} {value!r}", [*EVAL, flag, value], "model" if flag == "--model" else flag)
row("flag", "eval --device cuda without CUDA", [*EVAL, "--device", "cuda"], "--device", marks=(NO_CUDA,))
row("flag", "eval --metric lpips without its weights", [*EVAL[:4], "--metric", "lpips"], "--metric", marks=(NO_LPIPS,))
row("flag", "eval: no such preset", ["eval", "no-such-preset", *EVAL[2:]], "no-such-preset")

for flag, value in (("--model", "no-such"), ("--model", "tiny-flux"), ("--repeats", "0"), ("--repeats", "-1"),
                    ("--steps", "0"), ("--steps", "20000"), ("--steps", "-3")):
    row("flag", f"run {flag} {value!r}", [*RUN, flag, value], flag)
row("flag", "run --schedule: no such preset", [*RUN, "--schedule", "no-such-preset"], "no-such-preset")

for flag, value in (("--device", "banana"), ("--device", "cuda:99"), ("--steps", "0"), ("--steps", "1000000"),
                    ("--dtype", "float8"), ("--model", "no-such-model"), ("--frames", "9")):
    row("flag", f"generate {flag} {value!r}", [*GEN, flag, value], "model" if flag == "--model" else flag)
row("flag", "generate --device cuda without CUDA", [*GEN, "--device", "cuda"], "--device", marks=(NO_CUDA,))

for flag, value in (("--budgets", "0,1"), ("--budgets", "1"), ("--budgets", "2,-3"), ("--budgets", "inf"),
                    ("--budgets", "nan"), ("--budgets", ""), ("--budgets", "2,fast"), ("--heldout", "0"),
                    ("--heldout", "-1"), ("--timing-runs", "0"), ("--metric", "nope"), ("--steps", "0"),
                    ("--model", "no-such-model"), ("--schedule", "no-such.yaml"), ("--skip-cost", "no-such.json")):
    named = {"--model": "model", "--schedule": "--schedule", "--skip-cost": "--skip-cost"}.get(flag, flag)
    row("flag", f"bench {flag} {value!r}", [*BENCH, flag, value], named)
row("flag", "bench --metric lpips without its weights", [*BENCH[:3], "--metric", "lpips"], "--metric", marks=(NO_LPIPS,))

for flag, value in (("--tag", "../../x"), ("--tag", "Bad_TAG"), ("--tag", ""), ("--tag", "a b"), ("--tag", "t" * 65),
                    ("--tag", "/abs/x"), ("--trial", "-1")):
    row("flag", f"export {flag} {value!r}", [*EXPORT, flag, value], flag, {"db.sqlite": DB})

# -- storages (search, export --storage) ------------------------------------------------------------

for name, url, files in (("not a URL", "studies.db", {}), ("no such SQLite file", "sqlite:///missing.sqlite", {}),
                         ("an unknown driver", "nosuchdb://host/x", {}), ("a folder", "sqlite:///adir", {"adir": DIR}),
                         ("not a database", "sqlite:///text.sqlite", {"text.sqlite": "hello, not a database\n" * 100})):
    row("storage", f"export: {name}", ["export", "--study", "s1", "--storage", url], "--storage", files)
row("storage", "export: no such study", ["export", "--study", "nope", "--storage", "sqlite:///db.sqlite"], "--study",
    {"db.sqlite": DB})
row("storage", "export: a study with no trial", ["export", "--study", "s1", "--storage", "sqlite:///db.sqlite"], "--trial",
    {"db.sqlite": DB})
row("storage", "export: --trial not in the study", [*EXPORT, "--trial", "5"], "--trial", {"db.sqlite": DB})
for name, url, files in (("in a file's place", "sqlite:///f/x.db", {"f": "a file"}), ("a folder", "sqlite:///adir", {"adir": DIR}),
                         ("not a URL", "x.db", {}), ("an unknown driver", "nosuchdb://host/x", {}),
                         ("a PostgreSQL server that does not answer", "postgresql+psycopg2://u:pw@127.0.0.1:9/x", {})):
    row("storage", f"search: {name}", [*SEARCH, "--storage", url], "--storage", files)
row("storage", "search: a folder nobody can write", [*SEARCH, "--storage", "sqlite:////proc/zt/x.db"], "--storage",
    marks=(ROOT,))

# -- output paths and environment paths ------------------------------------------------------------

for cmd, argv in (("search", SEARCH), ("eval", EVAL), ("generate", GEN), ("bench", BENCH)):
    flags = ("--out", "--cache", "--export-dir") if cmd == "search" else ("--out", "--cache") if cmd == "eval" else ("--out",)
    for flag in flags:
        row("output path", f"{cmd} {flag}: a file", [*argv, flag, "f"], flag, {"f": "a file"})
        row("output path", f"{cmd} {flag}: under a file", [*argv, flag, "f/sub"], flag, {"f": "a file"})
        row("output path", f"{cmd} {flag}: read-only place", [*argv, flag, "/proc/zeustune-out"], flag, marks=(ROOT,))
row("output path", "export --out: a folder", [*EXPORT, "--trial", "0", "--out", "adir"], "--out", {"db.sqlite": DB, "adir": DIR})
row("output path", "export --out: under a file", [*EXPORT, "--trial", "0", "--out", "f/x.yaml"], "--out",
    {"db.sqlite": DB, "f": "a file"})
row("output path", "export --to cache-dit --out: a folder", [*EXPORT, "--to", "cache-dit", "--out", "adir"], "--out",
    {"db.sqlite": DB, "adir": DIR})
for cmd, argv in (("search", SEARCH), ("export", EXPORT)):
    row("environment path", f"{cmd}: $ZEUSTUNE_HOME a file", argv, "$ZEUSTUNE_HOME", {"home": "a file", "db.sqlite": DB},
        {"ZEUSTUNE_HOME": "{tmp}/home"})
    row("environment path", f"{cmd}: $ZEUSTUNE_HOME under a file", argv, "$ZEUSTUNE_HOME", {"f": "a file", "db.sqlite": DB},
        {"ZEUSTUNE_HOME": "{tmp}/f/home"})
    row("environment path", f"{cmd}: $ZEUSTUNE_HOME read-only", argv, "$ZEUSTUNE_HOME", {"db.sqlite": DB},
        {"ZEUSTUNE_HOME": "/proc/zeustune-home"}, marks=(ROOT,))
for cmd, argv in (("search", SEARCH), ("eval", EVAL)):
    row("environment path", f"{cmd}: $ZEUSTUNE_CACHE a file", argv, "$ZEUSTUNE_CACHE", {"cache": "a file"},
        {"ZEUSTUNE_CACHE": "{tmp}/cache"})
    row("environment path", f"{cmd}: $ZEUSTUNE_CACHE read-only", argv, "$ZEUSTUNE_CACHE", {},
        {"ZEUSTUNE_CACHE": "/proc/zeustune-cache"}, marks=(ROOT,))


# -- the check -------------------------------------------------------------------------------------


class ModelLoaded(BaseException):
    """Raised where a row would load a model: its refusal came too late (BaseException, so the
    CLI's error handling does not turn it into exit status 2)."""


@pytest.fixture(scope="module")
def study_db(tmp_path_factory) -> bytes:
    """An Optuna SQLite storage holding study s1 (no trials), as bytes to copy."""
    import optuna

    path = tmp_path_factory.mktemp("db") / "db.sqlite"
    optuna.create_study(study_name="s1", storage=f"sqlite:///{path}", directions=["minimize", "minimize"])
    return path.read_bytes()


def _write(tmp: Path, files: dict, db: bytes) -> None:
    for rel, content in files.items():
        p = tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if content is DIR:
            p.mkdir()
        elif content is DB:
            p.write_bytes(db)
        elif isinstance(content, tuple):  # ("link", target)
            p.symlink_to(content[1])
        elif isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)


def _snapshot(tmp: Path) -> dict:
    """Every path under ``tmp`` with its bytes (folders and links by kind)."""
    out = {}
    for p in sorted(tmp.rglob("*")):
        rel = p.relative_to(tmp).as_posix()
        out[rel] = "link" if p.is_symlink() else "dir" if p.is_dir() else p.read_bytes()
    return out


def _param(r: Row):
    return pytest.param(r, id=f"{r.kind}: {r.id}", marks=r.marks)


@pytest.mark.parametrize("case", [_param(r) for r in ROWS])
def test_bad_input_is_refused_by_name_before_any_work(case, tmp_path, monkeypatch, capsys, study_db):
    def loaded(*args, **kwargs):
        raise ModelLoaded(f"{case.id}: a model was loaded before the refusal")

    targets = ("zeustune.models.loading.load", "zeustune.models.registry.load", "zeustune.search.driver.load_model",
               "zeustune.bench.run.load_model", "zeustune.models.tiny.build")
    for target in targets:  # imported before any patch: a module first imported while loading.load is
        importlib.import_module(target.rsplit(".", 1)[0])  # patched would keep the fake after the test
    for target in targets:
        monkeypatch.setattr(target, loaded)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZEUSTUNE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ZEUSTUNE_CACHE", str(tmp_path / "cache"))
    for key, value in case.env.items():
        monkeypatch.setenv(key, value.format(tmp=tmp_path))
    _write(tmp_path, case.files, study_db)
    before = _snapshot(tmp_path)

    try:
        status = cli.main(case.argv)
    except SystemExit as e:  # argparse's own errors, and bench's
        status = e.code
    out, err = capsys.readouterr()

    assert status == 2, err
    assert "Traceback" not in out + err
    message = [line for line in err.splitlines() if line.startswith("zeustune")]
    assert 1 <= len(message) <= 2 and len(err) < 1500, err  # short: a long value is shortened
    assert case.named in message[-1] if len(message) == 1 else case.named in "\n".join(message), err
    assert _snapshot(tmp_path) == before  # inputs unchanged, nothing written


def test_the_table_covers_every_command_and_file_kind():
    kinds = {}
    for r in ROWS:
        kinds[r.kind] = kinds.get(r.kind, 0) + 1
    assert len(ROWS) >= 200, kinds
    commands = {r.argv[0] for r in ROWS}
    assert commands == {"show", "run", "generate", "eval", "search", "export", "bench"}
    assert set(kinds) == {"schedule file", "space file", "folder zeustune.yaml", "prompt file", "cost model", "flag",
                          "storage", "output path", "environment path"}
    assert len({(r.kind, r.id) for r in ROWS}) == len(ROWS)  # distinct rows


def test_a_long_plan_is_shown_shortened(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(sched(plan="F" * 200_000))
    assert cli.main(["show", "s.yaml"]) == 2
    err = capsys.readouterr().err
    assert "'" + "F" * 60 + "'... (200000 letters)" in err and len(err) < 300


# -- one bad file among many, and what the table's fixes let through ---------------------------------


def test_a_bad_file_in_the_users_schedules_is_skipped_with_a_warning_naming_it(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    mine = home / "schedules" / "flux"
    mine.mkdir(parents=True)
    (mine / "broken.yaml").write_bytes(BINARY)
    (mine / "nofresh.yaml").write_text(sched(plan="D" * 28, tag="nofresh"))
    monkeypatch.setenv("ZEUSTUNE_HOME", str(home))
    assert cli.main(["show", "--list"]) == 0
    out, err = capsys.readouterr()
    assert "tiny-flux/tuned-2x" in out and "flux/zeus-flux-demo" in out  # shipped presets still listed
    assert "broken.yaml" in err and "nofresh.yaml" in err and "warning" in err and "Traceback" not in err
    # lookup by tag reads every file of the user's folder first (tuned-2x is now both tiny-flux's and tiny-wan's)
    assert cli.main(["show", "zeus-flux-demo"]) == 0
    out, err = capsys.readouterr()
    assert "zeus-flux-demo" in out and "broken.yaml" in err and "Traceback" not in err


def test_a_space_of_one_generator_skips_the_seeds_outside_it():
    sp = SP.from_dict({"zeustune_space": 1, "family": "flux", "generators": ["zeus"], "zeus": {}})
    seed = SP.uniform_seed(sp, 28, 3)  # was a KeyError: no periodic section
    assert "generator" in SP.fits(seed, sp, 28)


def test_yaml_files_refuse_aliases_and_duplicate_keys_naming_them():
    from zeustune.schedule import safeyaml

    with pytest.raises(ScheduleError, match=r"x\.yaml: yaml: got '\*p', expected no aliases .*line 2"):
        safeyaml.load("a: &p 1\nb: *p\n", "x.yaml", ScheduleError)
    with pytest.raises(ScheduleError, match=r"x\.yaml: b: got 'b', expected each key once \(line 3 repeats line 2\)"):
        safeyaml.load("a: 1\nb: 2\nb: 3\n", "x.yaml", ScheduleError)
    assert safeyaml.load("a: &p 1\nb: [1, {c: 2}]\n", "x.yaml", ScheduleError) == {"a": 1, "b": [1, {"c": 2}]}
