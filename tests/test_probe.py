"""G, probe-gated steps: the denoiser's first block looks at the step, then the rest runs or the
step is predicted.

On the tiny FLUX pipeline (two double-stream and two single-stream blocks): a threshold that never
fires is the full run bit for bit; one that always fires is the static plan of the gates bit for bit
(``probe_output: gate``), capped by max_run, and a skip runs the head block and nothing after it;
with ``probe_output: tail`` a skip runs the head and the output layers on the head's output plus
the last tail residual, the tail blocks passing it through. Which parts of the model ran is counted
with torch pre-hooks on modules inside the blocks (a passed-through block is still called, its
attention is not). Then the thresholds' segments, UNets refused, the file format (version 5), the
hooks taken off with the schedule, and per-CFG-branch probe references.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from types import SimpleNamespace

import pytest
import torch
import yaml

import zeustune
from zeustune.models import tiny
from zeustune.runtime.actions import probe as G
from zeustune.runtime.probes import (HEAD_HOOK, NORM_HOOK, TAIL_HOOK, BlockProbe, Capture, ProbeUnsupportedError,
                                     relative_change)
from zeustune.schedule.format import MAX_PROBE_SEGMENTS, Model, Predictor, Sampler, Schedule, ScheduleError
from zeustune.schedule.plans import Plan, gate_for, resample

from helpers import schedule_for

N = 8
PLAN = "FF" + "G" * (N - 3) + "F"  # FFGGGGGF
HUGE = 1e9  # every probe passes: every G step that may skip does


@pytest.fixture(scope="module")
def flux():
    tp = tiny.build("flux", cfg=False)
    return tp, tp(N)  # the untouched pipeline's output


@pytest.fixture(scope="module")
def flux_cfg():
    return tiny.build("flux", cfg=True)  # true CFG: a cond and an uncond call per step


# -- helpers -------------------------------------------------------------------------------------


class Parts:
    """Per denoiser call, how often each part of the FLUX transformer ran: the call itself (its
    x_embedder), the head block (its norm1), the tail blocks (their attention: a block that passes
    its input through never reaches it) and the output layers (norm_out)."""

    def __init__(self, model):
        self.calls: list[Counter] = []
        tail = [*model.transformer_blocks[1:], *model.single_transformer_blocks]
        parts = {"call": [model.x_embedder], "head": [model.transformer_blocks[0].norm1],
                 "tail": [b.attn for b in tail], "out": [model.norm_out]}
        self.handles = [m.register_forward_pre_hook(self._hit(name)) for name, ms in parts.items() for m in ms]

    def _hit(self, name):
        def hook(module, args):
            if name == "call":
                self.calls.append(Counter())
            self.calls[-1][name] += 1
        return hook

    def close(self):
        for h in self.handles:
            h.remove()


def run(tp, schedule, steps=N, **overrides):
    """One run under a schedule: (output, Parts.calls, RunSummary)."""
    parts = Parts(tp.pipe.transformer)
    zeustune.enable(tp.pipe, schedule)
    try:
        out = tp(steps, **overrides)
        return out, parts.calls, zeustune.summary(tp.pipe)
    finally:
        zeustune.disable(tp.pipe)
        parts.close()


def static_of(plan: str, max_run: int, gates: str, skips=lambda k: True) -> str:
    """The static plan a G plan executes when the probe passes at the steps where ``skips(k)``: a G
    step is fresh until two fresh outputs exist and after max_run skips in a row, else the gate
    of its position in the run."""
    out, last, fresh = [], None, 0
    for k, c in enumerate(plan):
        if c == "G" and fresh >= 2 and k - last <= max_run and skips(k):
            out.append(gate_for(k - last, gates))
        else:
            out.append("F")
            last, fresh = k, fresh + 1
    return "".join(out)


def longest_skip_run(fresh: list[bool]) -> int:
    return max((len(list(g)) for f, g in itertools.groupby(fresh) if not f), default=0)


def probe_hooks(model) -> list[tuple[str, str]]:
    """(module, hook name) of every zeustune probe hook on the model's modules."""
    found = []
    for name, module in model.named_modules():
        registry = getattr(module, "_diffusers_hook", None)
        if registry is not None:
            found += [(name, h) for h in registry.hooks if h.startswith("zeustune_probe")]
    return sorted(found)


FLUX_HOOKS = sorted([("transformer_blocks.0", HEAD_HOOK), ("transformer_blocks.1", TAIL_HOOK),
                     ("single_transformer_blocks.0", TAIL_HOOK), ("single_transformer_blocks.1", TAIL_HOOK)])


# -- never and always ------------------------------------------------------------------------------


def test_the_static_plan_helper_follows_the_documented_rule():
    assert static_of(PLAN, 2, "R") == "FFRRFRRF"
    assert static_of(PLAN, 1, "ER") == "FFEFEFEF"
    assert static_of(PLAN, 10, "ER") == "FFERERER"[:N - 1] + "F"
    assert static_of("GGGGF", 5, "R") == "FFRRF"  # the first two G steps have no history: fresh


@pytest.mark.parametrize("probe", ["residual", "modulated"])
@pytest.mark.parametrize("output", ["gate", "tail"])
def test_a_zero_threshold_never_skips_and_is_the_full_run_bit_for_bit(flux, probe, output):
    tp, untouched = flux
    out, calls, summ = run(tp, schedule_for(tp, PLAN, probe=probe, probe_output=output, probe_thresholds=(0.0,),
                                            gates="R"))
    assert torch.equal(out, untouched)
    assert list(summ.branches.values()) == [Counter(F=N)]  # every G step counted as fresh, none as G
    assert summ.denoiser_calls == N and summ.probe_skips == 0
    model = tp.pipe.transformer
    full = Counter(call=1, head=1, tail=len(model.transformer_blocks) - 1 + len(model.single_transformer_blocks), out=1)
    assert calls == [full] * N


@pytest.mark.parametrize("max_run, gates", [(1, "R"), (2, "R"), (3, "ERE"), (10, "ER"), (3, "SCR")])
def test_a_huge_threshold_is_the_static_gate_plan_and_max_run_caps_the_skips(flux, max_run, gates):
    tp, untouched = flux
    out, calls, summ = run(tp, schedule_for(tp, PLAN, probe_thresholds=(HUGE,), max_run=max_run, gates=gates))
    static = static_of(PLAN, max_run, gates)
    assert static.count("F") < N - 1  # the check bites: some steps are skipped
    static_out, static_calls, _ = run(tp, schedule_for(tp, static))
    assert torch.equal(out, static_out) and not torch.equal(out, untouched)

    counts = next(iter(summ.branches.values()))
    assert counts == Counter(F=static.count("F"), G=N - static.count("F"))
    assert summ.denoiser_calls == static.count("F") and summ.probe_skips == N - static.count("F")
    # every call reached the head block; only fresh ones went on (a skip abandons the call there)
    assert len(calls) == N and all(c["call"] == c["head"] == 1 for c in calls)
    fresh = [c["tail"] > 0 for c in calls]
    assert fresh == [c == "F" for c in static]
    assert longest_skip_run(fresh) == min(max_run, PLAN.count("G"))
    assert all(c["out"] == int(f) for c, f in zip(calls, fresh))
    assert static_calls == [c for c, f in zip(calls, fresh) if f]  # the static plan calls nothing on the others


def test_modulated_and_residual_probes_skip_alike_when_every_probe_passes(flux):
    tp, _ = flux
    a, _, sa = run(tp, schedule_for(tp, PLAN, probe="residual", probe_thresholds=(HUGE,), max_run=2, gates="ER"))
    b, _, sb = run(tp, schedule_for(tp, PLAN, probe="modulated", probe_thresholds=(HUGE,), max_run=2, gates="ER"))
    assert torch.equal(a, b) and sa.branches == sb.branches


# -- tail output ---------------------------------------------------------------------------------


@pytest.mark.parametrize("gates", ["R", "ER", "E"])
def test_tail_output_runs_the_head_and_output_layers_on_the_head_plus_the_tail_residual(flux, gates):
    """On a skipped step the output layers see this step's head output plus the tail residual
    (tail output - head output) of the last full call (R) or 2 r_last - r_prev (E)."""
    tp, untouched = flux
    model = tp.pipe.transformer
    head = model.transformer_blocks[0]
    seen = {"head_in": [], "head_out": [], "out_in": []}
    handles = [
        head.register_forward_pre_hook(
            lambda m, args, kwargs: seen["head_in"].append(dict(kwargs)), with_kwargs=True),
        head.register_forward_hook(lambda m, args, out: seen["head_out"].append(out[1].clone())),
        model.norm_out.register_forward_pre_hook(lambda m, args: seen["out_in"].append(args[0].clone())),
    ]
    try:
        out, calls, summ = run(tp, schedule_for(tp, PLAN, probe_output="tail", probe_thresholds=(HUGE,), max_run=2,
                                                gates=gates))
    finally:
        for h in handles:
            h.remove()
    static = static_of(PLAN, 2, gates)
    assert static == {"R": "FFRRFRRF", "ER": "FFERFERF", "E": "FFEEFEEF"}[gates]
    assert list(summ.branches.values()) == [Counter(F=4, G=4)] and summ.probe_skips == 4
    fresh = [c == "F" for c in static]
    # the head and the output layers ran on every call, the tail blocks only on full ones
    assert all(c["head"] == 1 and c["out"] == 1 and (c["tail"] > 0) == f for c, f in zip(calls, fresh))

    tails = []  # tail residuals of the full calls, oldest first
    for k, f in enumerate(fresh):
        if f:
            tails.append(seen["out_in"][k] - seen["head_out"][k])
            continue
        assert torch.equal(seen["out_in"][k], seen["head_out"][k])  # the tail blocks passed the head's output through
        with torch.no_grad():
            own_head = head(**seen["head_in"][k])[1]  # the head block's own output at this step
        letter = static[k]
        residual = tails[-1] if letter == "R" or len(tails) < 2 else tails[-1].mul(2).sub_(tails[-2])
        assert torch.equal(seen["out_in"][k], own_head + residual), f"step {k} ({letter})"

    gate_out, _, _ = run(tp, schedule_for(tp, static))  # the gate output of the same skips
    assert torch.isfinite(out).all()
    assert not torch.equal(out, gate_out) and not torch.equal(out, untouched)


# -- thresholds by segment -----------------------------------------------------------------------


def at(k: int, n: int, thresholds: tuple) -> float:
    ctx = SimpleNamespace(k=k, plan=Plan("F" * n), predictor=SimpleNamespace(probe_thresholds=thresholds))
    return G.threshold_at(ctx)


def test_threshold_at_splits_the_steps_into_equal_segments():
    th = (0.1, 0.2, 0.3)
    assert [at(k, 9, th) for k in range(9)] == [0.1] * 3 + [0.2] * 3 + [0.3] * 3
    assert [at(k, 10, th) for k in range(10)] == [0.1] * 4 + [0.2] * 3 + [0.3] * 3  # k * 3 // 10
    assert [at(k, 5, (0.5,)) for k in range(5)] == [0.5] * 5
    eight = tuple(range(8))
    assert [at(k, 3, eight) for k in range(3)] == [0, 2, 5]  # more segments than steps: k * 8 // 3
    assert [at(k, 16, eight) for k in range(16)] == [j // 2 for j in range(16)]


def test_each_segment_gates_with_its_own_threshold(flux):
    tp, _ = flux
    # the first half of the steps (k < 4) skips whenever it may, the second half never
    out, calls, summ = run(tp, schedule_for(tp, PLAN, probe_thresholds=(HUGE, 0.0), max_run=3, gates="R"))
    static = static_of(PLAN, 3, "R", skips=lambda k: k < N // 2)
    assert static == "FFRRFFFF"
    assert [c["tail"] > 0 for c in calls] == [c == "F" for c in static]
    assert torch.equal(out, run(tp, schedule_for(tp, static))[0])
    assert list(summ.branches.values()) == [Counter(F=6, G=2)]


def test_resampling_a_g_plan_keeps_its_g_steps(flux):
    tp, _ = flux
    assert resample(Plan(PLAN), N) == Plan(PLAN)  # the same step count: the identity, G steps kept
    assert "G" in str(resample(Plan(PLAN), N + 4)) and "G" in str(resample(Plan(PLAN), N - 2))
    steps = N + 4
    zeustune.enable(tp.pipe, schedule_for(tp, PLAN, probe_thresholds=(HUGE,), max_run=2, gates="R"), resample=True)
    try:
        out = tp(steps)
        summ = zeustune.summary(tp.pipe)
    finally:
        zeustune.disable(tp.pipe)
    assert summ.steps == steps and summ.plan.count("G") >= PLAN.count("G")  # not turned into static skips
    counts = next(iter(summ.branches.values()))
    assert counts["G"] > 0 and sum(counts.values()) == steps and torch.isfinite(out).all()


# -- probes, and where they cannot go --------------------------------------------------------------


def test_relative_change_and_tail_predictions():
    ref = torch.tensor([1.0, -3.0])
    assert relative_change(ref.clone(), ref) == 0.0
    assert relative_change(torch.tensor([2.0, -3.0]), ref) == pytest.approx(0.5 / 2.0)
    assert relative_change(ref, torch.zeros(2)) == math.inf  # no reference scale: never a skip
    r0, r1 = torch.tensor([1.0, 2.0]), torch.tensor([2.0, 5.0])
    assert G.tail_prediction([], "R") is None
    assert torch.equal(G.tail_prediction([r0, r1], "R"), r1)
    assert torch.equal(G.tail_prediction([r0, r1], "E"), torch.tensor([3.0, 8.0]))
    assert torch.equal(G.tail_prediction([r1], "E"), r1)  # one residual: E falls back to R
    assert torch.equal(r1, torch.tensor([2.0, 5.0]))  # E did not touch the stored residuals
    assert Capture(head_out=torch.zeros(2), tail_out=torch.zeros(3)).tail_residual is None


def test_block_probe_refuses_what_it_cannot_hook():
    with pytest.raises(ProbeUnsupportedError, match="Linear has 0 transformer blocks"):
        BlockProbe(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"predictor\.probe: got 'first', expected one of residual, modulated"):
        BlockProbe(torch.nn.Linear(2, 2), "first")


def test_a_unet_pipeline_is_refused_on_the_first_call_naming_the_problem():
    tp = tiny.build("sd", cfg=False)
    plan = "FFGF"
    untouched = tp(len(plan))
    entered = []
    handle = tp.pipe.unet.conv_in.register_forward_pre_hook(lambda m, a: entered.append(1))
    zeustune.enable(tp.pipe, schedule_for(tp, plan, probe="modulated"))  # enabling is fine: blocks are found on a call
    try:
        with pytest.raises(ProbeUnsupportedError,
                           match=r"^probe: UNet2DConditionModel has 0 transformer blocks.*transformer denoiser"):
            tp(len(plan))
        assert entered == []  # refused before the denoiser ran
        with pytest.raises(ProbeUnsupportedError):  # and again on the next call, not a half-working run
            tp(len(plan))
    finally:
        zeustune.disable(tp.pipe)
        handle.remove()
    assert torch.equal(tp(len(plan)), untouched)


# -- the file format -----------------------------------------------------------------------------


def g_schedule(plan: str = PLAN, **predictor) -> Schedule:
    return Schedule(tag="probe", model=Model("flux"), sampler=Sampler("FlowMatchEulerDiscreteScheduler", len(plan)),
                    plan=Plan(plan), predictor=Predictor(**predictor))


def test_a_g_schedule_round_trips_as_version_5(tmp_path):
    s = g_schedule(probe="modulated", probe_thresholds=(0.05, 0.2, 0.0), probe_output="tail", gates="ER", max_run=2)
    d = s.to_dict()
    assert d["zeustune_schedule"] == 5
    assert d["predictor"]["probe_thresholds"] == [0.05, 0.2, 0.0]
    assert {d["predictor"][k] for k in ("probe", "probe_output")} == {"modulated", "tail"}
    text = yaml.safe_dump(d)
    assert "!!python" not in text
    assert Schedule.from_dict(yaml.safe_load(text)) == s
    path = s.save(tmp_path / "probe.yaml")
    assert "zeustune_schedule: 5" in path.read_text()
    loaded = Schedule.load(path)
    assert loaded == s and loaded.predictor.probe_thresholds == (0.05, 0.2, 0.0)


def test_the_version_is_5_exactly_when_probes_are_used():
    assert g_schedule().schema_version == 5  # the letter G
    plain = g_schedule("FFEFRFFF")
    assert plain.schema_version < 5 and "probe" not in plain.to_dict()["predictor"]
    assert g_schedule("FFEFRFFF", probe_thresholds=(0.2,)).schema_version == 5
    assert g_schedule("FFEFRFFF", probe_output="tail").schema_version == 5
    with_branch = Schedule(tag="b", model=Model("flux"), sampler=Sampler("FlowMatchEulerDiscreteScheduler", N),
                           plan=Plan("F" * N), branch_plans={"uncond": Plan(PLAN)})
    assert with_branch.schema_version == 5  # a G in a branch plan counts too


@pytest.mark.parametrize("key, value", [("probe", "modulated"), ("probe_thresholds", [0.1]),
                                        ("probe_output", "tail")])
def test_a_version_4_file_with_a_probe_field_is_refused_naming_it(key, value):
    d = g_schedule("FFEFRFFF").to_dict()
    d["zeustune_schedule"] = 4
    d["predictor"][key] = value
    with pytest.raises(ScheduleError, match=rf"^old\.yaml: predictor\.{key}: got .*, expected zeustune_schedule: 5 "
                                            "or later for this field$"):
        Schedule.from_dict(d, source="old.yaml")


def test_a_version_4_file_with_the_letter_g_is_refused():
    d = g_schedule().to_dict()
    d["zeustune_schedule"] = 4
    for key in ("probe", "probe_thresholds", "probe_output"):
        del d["predictor"][key]
    with pytest.raises(ScheduleError, match=rf"^old\.yaml: plan: got '{PLAN}', expected zeustune_schedule: 5 or "
                                            "later for the letter G$"):
        Schedule.from_dict(d, source="old.yaml")
    d["zeustune_schedule"] = 5
    assert Schedule.from_dict(d).plan == Plan(PLAN)


@pytest.mark.parametrize("value", [[], [-0.1], [float("nan")], [float("inf")], [0.1] * (MAX_PROBE_SEGMENTS + 1),
                                   0.1, "0.1", ["0.1"], [True], [None], {"a": 0.1}])
def test_probe_thresholds_must_be_1_to_max_segments_finite_numbers(value):
    d = g_schedule().to_dict()
    d["predictor"]["probe_thresholds"] = value
    with pytest.raises(ScheduleError, match=rf"^s\.yaml: predictor\.probe_thresholds: got .*, expected a list of 1 to "
                                            rf"{MAX_PROBE_SEGMENTS} finite numbers >= 0"):
        Schedule.from_dict(d, source="s.yaml")


def test_probe_thresholds_accept_up_to_max_segments_and_integers():
    d = g_schedule().to_dict()
    d["predictor"]["probe_thresholds"] = [0, 1] + [0.5] * (MAX_PROBE_SEGMENTS - 2)
    th = Schedule.from_dict(d).predictor.probe_thresholds
    assert th == (0.0, 1.0) + (0.5,) * (MAX_PROBE_SEGMENTS - 2) and all(type(v) is float for v in th)
    del d["predictor"]["probe_thresholds"]
    assert Schedule.from_dict(d).predictor.probe_thresholds == Predictor().probe_thresholds


@pytest.mark.parametrize("gates", ["ES", "RC", "S", "ERS"])
def test_tail_output_takes_only_e_and_r_gates(gates):
    d = g_schedule(probe_output="tail").to_dict()
    d["predictor"]["gates"] = gates
    with pytest.raises(ScheduleError, match=rf"^s\.yaml: predictor\.gates: got '{gates}', expected letters of E and R "
                                            "with probe_output: tail"):
        Schedule.from_dict(d, source="s.yaml")
    d["predictor"]["probe_output"] = "gate"  # a gate's psi may come from any predictor
    assert Schedule.from_dict(d).predictor.gates == gates


@pytest.mark.parametrize("key, value, expected", [("probe", "first", "one of residual, modulated"),
                                                  ("probe_output", "head", "one of gate, tail")])
def test_probe_and_probe_output_take_their_choices(key, value, expected):
    d = g_schedule().to_dict()
    d["predictor"][key] = value
    with pytest.raises(ScheduleError, match=rf"predictor\.{key}: got '{value}', expected {expected}$"):
        Schedule.from_dict(d)


# -- hooks on and off ----------------------------------------------------------------------------


def test_the_probe_hooks_come_with_the_schedule_and_go_with_it(flux):
    tp, untouched = flux
    model = tp.pipe.transformer
    never = dict(probe_thresholds=(0.0,))
    zeustune.enable(tp.pipe, schedule_for(tp, PLAN, probe="modulated", **never))
    try:
        assert probe_hooks(model) == []  # put on at the first call
        assert torch.equal(tp(N), untouched)
        assert probe_hooks(model) == sorted([*FLUX_HOOKS, ("transformer_blocks.0.norm1", NORM_HOOK)])
        zeustune.enable(tp.pipe, schedule_for(tp, PLAN, probe="residual", **never))  # another schedule replaces it
        assert probe_hooks(model) == []  # the old probe's hooks went with the old schedule
        assert torch.equal(tp(N), untouched)
        assert probe_hooks(model) == FLUX_HOOKS
        zeustune.enable(tp.pipe, schedule_for(tp, "F" * N))  # a plan without G: no probe at all
        assert torch.equal(tp(N), untouched)
        assert probe_hooks(model) == []
        zeustune.enable(tp.pipe, schedule_for(tp, PLAN, probe_thresholds=(HUGE,), max_run=2, gates="R"))
        skipping = tp(N)
        assert zeustune.summary(tp.pipe).probe_skips == 4 and probe_hooks(model) == FLUX_HOOKS
    finally:
        assert zeustune.disable(tp.pipe)
    assert probe_hooks(model) == []
    assert torch.equal(tp(N), untouched)  # nothing left behind
    again, _, _ = run(tp, schedule_for(tp, PLAN, probe_thresholds=(HUGE,), max_run=2, gates="R"))
    assert torch.equal(again, skipping)  # and a new schedule starts clean


# -- CFG branches --------------------------------------------------------------------------------


@pytest.fixture
def probe_states(monkeypatch):
    """The ProbeState of each branch, in the order the run made them (cond first on FLUX)."""
    made = []

    class Recorded(G.ProbeState):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(G, "ProbeState", Recorded)
    return made


def test_each_cfg_branch_compares_with_its_own_last_full_call(flux_cfg, probe_states):
    tp = flux_cfg
    head = tp.pipe.transformer.transformer_blocks[0]
    signals = []  # the head's residual at every call: cond, uncond, cond, ...
    handle = head.register_forward_hook(lambda m, args, kwargs, out: signals.append(out[1] - kwargs["hidden_states"]),
                                        with_kwargs=True)
    try:
        _, _, summ = run(tp, schedule_for(tp, PLAN, probe_thresholds=(0.0,)))  # never skips: every step is full
    finally:
        handle.remove()
    assert summ.branches == {"cond": Counter(F=N), "uncond": Counter(F=N)}
    assert len(signals) == 2 * N and len(probe_states) == 2
    for b, state in enumerate(probe_states):
        own, other = signals[b::2], signals[1 - b::2]
        steps = [k for k, c in enumerate(PLAN) if c == "G"]
        assert [k for k, _ in state.changes] == steps
        assert [c for _, c in state.changes] == pytest.approx([relative_change(own[k], own[k - 1]) for k in steps],
                                                              rel=1e-6)
        crossed = [relative_change(own[k], other[k - 1]) for k in steps]  # what a shared reference would give
        assert all(abs(c - x) > 1e-3 for (_, c), x in zip(state.changes, crossed))


def test_each_cfg_branch_decides_and_is_counted_on_its_own(flux_cfg, probe_states):
    tp = flux_cfg
    _, _, always = run(tp, schedule_for(tp, PLAN, probe_thresholds=(HUGE,), max_run=2, gates="R"))
    static = static_of(PLAN, 2, "R")
    both = {"cond": Counter(F=static.count("F"), G=N - static.count("F"))}
    assert always.branches == {**both, "uncond": both["cond"]}
    assert always.probe_skips == 2 * (N - static.count("F")) and always.denoiser_calls == 2 * static.count("F")

    probe_states.clear()
    threshold = 0.28
    _, _, summ = run(tp, schedule_for(tp, PLAN, probe_thresholds=(threshold,), max_run=2, gates="R"))
    assert len(probe_states) == 2
    for name, state in zip(("cond", "uncond"), probe_states):
        skipped = sum(c <= threshold for _, c in state.changes)  # in gate mode a passing probe is a skip
        assert summ.branches[name] == Counter(F=N - skipped, G=skipped)
    assert summ.branches["cond"] != summ.branches["uncond"]  # the branches decided differently
