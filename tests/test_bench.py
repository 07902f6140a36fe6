"""The peer benchmark's verdicts: a method's front, its loss at a given speed, and what the
tuned rows are said to beat."""

from __future__ import annotations

import pytest

from zeustune.bench.methods import Method
from zeustune.bench.report import front, loss_at, verdicts
from zeustune.bench.run import main


def test_front_keeps_points_no_faster_point_beats():
    pts = [(1.5, 0.02), (2.0, 0.01), (3.0, 0.05), (2.5, 0.06), (1.0, 0.0)]
    assert front(pts) == [(3.0, 0.05), (2.0, 0.01), (1.0, 0.0)]  # (2.5, 0.06) loses to 3.0; (1.5, .02) to 2.0


def test_loss_at_is_the_best_row_reaching_the_speed_and_refuses_beyond_the_fastest():
    pts = [(2.0, 0.01), (3.0, 0.05), (2.6, 0.07)]
    assert loss_at(pts, 2.5) == 0.05  # no interpolation: the rows at 2.6x and 3.0x reach 2.5x, 3.0x is better
    assert loss_at(pts, 3.0) == 0.05 and loss_at(pts, 1.5) == 0.01  # slower than every point: its best faster one
    assert loss_at(pts, 3.01) is None


def rows(tuned_loss):
    return [Method("full steps", "full steps", speedup=1.0, loss=0.0),
            Method("tuned-3x", "zeustune tuned", speedup=3.0, loss=tuned_loss),
            Method("8 steps", "fewer steps", speedup=2.8, loss=0.04), Method("6 steps", "fewer steps", speedup=3.6, loss=0.08),
            Method("fbcache 0.2", "diffusers fbcache", speedup=1.6, loss=0.03)]


def test_verdicts_say_beyond_or_behind_against_the_best_row_at_least_as_fast():
    v = "\n".join(verdicts(rows(0.03), "speedup"))
    # fewer steps at 3.0x: only its 6-step row (3.6x, 0.08) is that fast; the 8-step row (2.8x) is not
    assert "fewer steps: front loss at 3.00x is 0.0800: beyond its front (0.38x its loss)" in v
    assert "diffusers fbcache: no row reaches 3.00x (its fastest is 1.60x): faster than any of its rows" in v
    assert "BEHIND its front" in "\n".join(verdicts(rows(0.09), "speedup"))


def test_bad_budgets_are_refused_naming_the_field(capsys):
    with pytest.raises(SystemExit):
        main(["--model", "tiny-flux", "--budgets", "2,fast"])
    assert "--budgets: got '2,fast'" in capsys.readouterr().err


def test_gpu_latency_code_runs_on_a_scaled_down_architecture(monkeypatch):
    """The full-size GPU path, on a small FLUX-shaped model on CPU: the cost model is fitted and a
    schedule's speedup is measured below its call-count bound. Each run is timed by the fake
    stopwatch (tests/fake_clock.py), so no figure depends on how busy the machine is."""
    import fake_clock
    import torch

    from zeustune.schedule import plans as P
    from zeustune.bench import gpu
    from zeustune.bench.gpu import SMALL, base_schedule, markdown, measure

    run = gpu._run
    monkeypatch.setattr(gpu, "_run", lambda pipe, *a: fake_clock.timed(pipe, lambda: run(pipe, *a)))

    sched = base_schedule(8, SMALL["size"]).with_plan(P.Plan("FFRFEFRF"), tag="half")
    result = measure({"half": sched}, steps_list=(8,), runs=3, size="small", device="cpu", dtype=torch.float32)
    cost, [row] = result[8]["cost"], result[8]["rows"]
    assert cost["call"] > 0 and cost["steps"] == 8
    assert row["nfe"] == 5 and row["bound"] == 8 / 5
    assert 1.0 < row["speedup"] <= row["bound"] * 1.1
    assert "| half | 5/8 | 1.60x |" in markdown(result, "cpu")


def test_without_cuda_the_gpu_part_says_so_and_writes_nothing(tmp_path, monkeypatch):
    import torch

    from zeustune.bench.gpu import run_if_gpu

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    msg = run_if_gpu({}, tmp_path)
    assert "no CUDA device" in msg and "skipped" in msg and not list(tmp_path.iterdir())


def test_agreement_ranks_the_bench_metric_against_the_others_over_method_rows():
    from zeustune.bench.report import agreement

    rows = [Method("full", "full steps", scores={"st-lpips": 0, "gmsd": 0, "psnr": float("inf"), "ssim": 1})]
    for i, (st, gm, ps) in enumerate([(0.1, 0.01, 30.0), (0.2, 0.03, 25.0), (0.3, 0.02, 20.0), (0.4, 0.04, 18.0)]):
        rows.append(Method(f"m{i}", "peer", scores={"st-lpips": st, "gmsd": gm, "psnr": ps, "ssim": 1 - st}))
    text = "\n".join(agreement(rows, "st-lpips"))
    header, _, values = text.splitlines()[2:5]
    assert header == "| metric | gmsd | psnr | ssim |"
    gmsd, psnr, ssim = (float(v) for v in values.strip("| ").split(" | ")[1:])
    assert psnr == ssim == 1.0  # the same order once PSNR/SSIM are turned into losses
    assert gmsd == 0.8  # one swapped pair among 4: 1 - 6 * 2 / (4 * 15)
    assert "| full |" not in text  # full steps score perfectly by construction: not ranked


def test_at_another_step_count_peers_are_matched_to_the_budgets_not_to_other_settings_tuned_plans(monkeypatch):
    from dataclasses import replace

    from zeustune.models import registry as models
    from zeustune.bench import methods as MT
    from zeustune.bench import run as R

    monkeypatch.setattr(MT, "easycache", lambda *a, **k: [])  # knob sweeps: not what this test is about
    monkeypatch.setattr(MT, "diffusers_caches", lambda *a, **k: [])
    pipe, spec = models.load("tiny-flux", progress=False)
    tuned = R._tuned("tiny-flux", [2.0, 4.0])
    assert tuned and all(s.steps == 28 for s in tuned.values())  # the shipped presets
    rows = R.build_rows(pipe, replace(spec, steps=50), [2.0, 4.0], tuned, [], "a", 0, None, progress=False)
    assert not [m for m in rows if m.family == "zeustune tuned"]  # a 28-step plan cannot run at 50 steps
    fewer = sorted(int(m.name.split()[0]) for m in rows if m.family == "fewer steps")
    assert fewer == list(range(round(50 / 4) - 1, 50 // 2 + 2))
    spectrum = {m.name: m.schedule.nfe for m in rows if m.family == "Spectrum"}
    assert spectrum["spectrum a=0.75 w=0.5"] == 14 and spectrum["spectrum a=3 w=1"] == 10  # Spectrum's published counts
    assert {m.budget for m in rows if m.family == "Spectrum" and m.budget} == {2.0, 4.0}
    lemica = {m.name: m.schedule.nfe for m in rows if m.family == "LeMiCa"}
    assert lemica == {f"lemica {k}/50": k for k in (26, 20, 15, 10)}  # native lists at 50 steps
    at28 = R.build_rows(pipe, spec, [2.0, 4.0], tuned, [], "a", 0, None, progress=False)
    assert {m.name for m in at28 if m.family == "zeustune tuned"} == {s.tag for s in tuned.values()}
    assert all(m.steps == 28 or m.family == "fewer steps" for m in at28)


def test_rows_that_decide_at_run_time_are_rendered_one_prompt_per_call():
    from zeustune.bench.methods import schedule_row
    from zeustune.schedule import plans as P
    from zeustune.schedule.format import Model, Predictor, Sampler, Schedule

    def row(plan):
        sched = Schedule(tag="t", model=Model("flux"), sampler=Sampler("FlowMatchEulerDiscreteScheduler", len(plan)),
                         plan=P.Plan(plan), predictor=Predictor())
        return schedule_row(None, sched, "zeustune tuned")

    assert not row("FFRRFRRF").per_prompt  # a static plan's calls do not depend on the batch
    assert row("FFAAFAAF").per_prompt and row("FFGGGGGF").per_prompt
    assert Method("fbcache 0.25", "diffusers fbcache", work="fbcache").per_prompt
    assert not Method("8 steps", "fewer steps").per_prompt


@pytest.mark.parametrize("model, timed", [("tiny-flux", True), ("tiny-wan", False)])
def test_the_gpu_part_times_flux_architecture_plans_only_for_flux_benches(monkeypatch, tmp_path, capsys, model, timed):
    from zeustune.bench import gpu, run as bench_run

    calls = []
    info = {"model": model, "steps": 28, "held-out prompts": 1, "target": "t", "metric": "m"}
    monkeypatch.setattr(bench_run, "run", lambda *a, **k: ([], info))
    monkeypatch.setattr(bench_run, "markdown", lambda *a, **k: "")
    monkeypatch.setattr(bench_run, "plot", lambda *a, **k: None)
    monkeypatch.setattr(gpu, "run_if_gpu", lambda schedules, out, runs: calls.append(sorted(schedules)) or "")
    assert bench_run.main(["--model", model, "--out", str(tmp_path)]) == 0
    assert bool(calls) == timed
    if not timed:
        assert f"skipped for {model} (family wan)" in capsys.readouterr().err
