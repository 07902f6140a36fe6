"""Packs: a model's schedules for several settings and speeds, one folder; the runtime chooses the
entry for each call's steps, size, guidance and LoRAs at the speed asked (docs/packs.md).

The pipelines are tiny random ones (zeustune/models/tiny.py), and tiny-flux for a model folder that
carries its pack. Outputs are compared bit for bit: a pack's call must be exactly its entry's run."""

from __future__ import annotations

import re
import shutil
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml

import zeustune
from zeustune.models import tiny
from zeustune.runtime import PackFallbackWarning
from zeustune.schedule.format import Guidance, LoraRef, Model, Sampler, Schedule, ScheduleError
from zeustune.schedule.pack import Pack, PackError, Setting, parse_speed
from zeustune.schedule.plans import Plan

ROOT = Path(__file__).resolve().parents[1]
SIZE = tiny.IMAGE_SIZE


def plan_for(steps: int, period: int) -> str:
    """Two warm-up steps, a fresh step every ``period`` with E between, a fresh last step."""
    return "FF" + "".join("F" if i % period == 0 else "E" for i in range(steps - 3)) + "F"


def schedule(steps: int, speed: int, size: int = SIZE, family: str = "flux", id: str = "tiny-random-flux", **sampler) -> Schedule:
    scheduler = sampler.pop("scheduler", "FlowMatchEulerDiscreteScheduler")
    guidance = sampler.pop("guidance", Guidance("distilled", 3.5))
    return Schedule(f"s{steps}-{size}-{speed}x", Model(family, id, "FluxPipeline"),
                    Sampler(scheduler, steps, size, size, guidance=guidance, **sampler), Plan(plan_for(steps, speed)))


def write_pack(folder: Path, schedules: dict[str, tuple[Schedule, str]], **index) -> Path:
    """A pack folder: each schedule saved under its file name, and pack.yaml listing file and speed."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, (s, _) in schedules.items():
        s.save(folder / name)
    data = {"zeustune_pack": 1, **index, "schedules": [{"file": n, "speed": sp} for n, (_, sp) in schedules.items()]}
    (folder / "pack.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return folder


@pytest.fixture
def pack(tmp_path) -> Path:
    return write_pack(tmp_path / "zeustune", {f"{n}-{sp}x.yaml": (schedule(n, sp), f"{sp}x") for n in (10, 20) for sp in (2, 3)},
                      default_speed="2x")


@pytest.fixture(scope="module")
def flux():
    return tiny.build("flux")


def run(tp, steps: int, **kw) -> torch.Tensor:
    return tp(steps=steps, **kw)


def alone(tp, sched: Schedule, steps: int, resample: bool = False, **kw) -> torch.Tensor:
    """The output of the schedule enabled by itself (what a pack's entry must reproduce)."""
    zeustune.enable(tp.pipe, sched, resample=resample)
    try:
        return run(tp, steps, **kw)
    finally:
        zeustune.disable(tp.pipe)


# -- the folder ----------------------------------------------------------------------------------


def test_a_pack_loads_from_its_folder_or_the_model_folder(pack):
    for where in (pack, pack.parent):
        p = Pack.load(where)
        assert p.speeds == [2.0, 3.0] and p.default_speed == 2.0 and p.model.family == "flux"
        assert sorted(e.file for e in p.entries) == ["10-2x.yaml", "10-3x.yaml", "20-2x.yaml", "20-3x.yaml"]


def test_schedules_of_two_models_are_refused_naming_the_file_and_the_field(tmp_path):
    folder = write_pack(tmp_path / "p", {"a.yaml": (schedule(10, 2), "2x"), "b.yaml": (schedule(20, 2, id="other-flux"), "2x")})
    with pytest.raises(PackError, match=r"b\.yaml: model\.id: got 'other-flux', expected 'tiny-random-flux' as in a\.yaml "
                                        r"\(a pack holds the schedules of one model\)"):
        Pack.load(folder)


@pytest.mark.parametrize("index, field, expected", [
    ({"zeustune_pack": 2}, "zeustune_pack", r"1 \(the pack versions"),
    ({"schedules": []}, "schedules", "a non-empty list"),
    ({"schedules": [{"file": "../a.yaml", "speed": "2x"}]}, r"schedules\[0\]\.file", "no folders"),
    ({"schedules": [{"file": "a.yaml", "speed": "fast"}]}, r"schedules\[0\]\.speed", "a speedup such as 3x"),
    ({"schedules": [{"file": "a.yaml", "speed": "2x", "tag": "x"}]}, r"schedules\[0\]", "exactly the keys file and speed"),
    ({"default_speed": "5x"}, "default_speed", "one of 2x"),
    ({"speeds": [2]}, "speeds", "one of the keys"),
])
def test_a_bad_index_is_refused_naming_the_field(tmp_path, index, field, expected):
    folder = write_pack(tmp_path / "p", {"a.yaml": (schedule(10, 2), "2x")})
    data = {**yaml.safe_load((folder / "pack.yaml").read_text()), **index}
    (folder / "pack.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(PackError, match=rf"{re.escape(str(folder))}: {field}: got .*expected .*{expected}"):
        Pack.load(folder)


def test_a_bad_schedule_in_a_pack_is_reported_by_its_file_and_field(tmp_path):
    folder = write_pack(tmp_path / "p", {"a.yaml": (schedule(10, 2), "2x")})
    (folder / "a.yaml").write_text((folder / "a.yaml").read_text().replace("steps: 10", "steps: 12"))
    with pytest.raises(ScheduleError, match=rf"{re.escape(str(folder / 'a.yaml'))}: plan: .*12 letters"):
        Pack.load(folder)


def test_two_entries_the_runtime_cannot_tell_apart_are_refused(tmp_path):
    true_cfg = [schedule(10, 2, guidance=Guidance("true_cfg", scale)) for scale in (3.0, 4.0)]  # scale: invisible on FLUX
    folder = write_pack(tmp_path / "p", {"a.yaml": (true_cfg[0], "2x"), "b.yaml": (true_cfg[1], "2x")})
    with pytest.raises(PackError, match=r"b\.yaml: sampler: .*a\.yaml has it too"):
        Pack.load(folder)
    write_pack(folder, {"a.yaml": (true_cfg[0], "2x"), "b.yaml": (true_cfg[1], "3x")})  # at two speeds: fine
    assert Pack.load(folder).speeds == [2.0, 3.0]


def test_speeds_parse_and_a_missing_one_is_refused_naming_those_held(pack):
    assert [parse_speed(v) for v in ("3x", "3", 3, 2.5, "2.5X")] == [3.0, 3.0, 3.0, 2.5, 2.5]
    for bad in ("0.5x", "fast", True, None, "-2x"):
        with pytest.raises(PackError, match="a speedup such as 3x"):
            parse_speed(bad)
    with pytest.raises(PackError, match=r"speed: got '5x', expected one of 2x, 3x \(the speeds this pack holds\)"):
        Pack.load(pack).speed("5x")


def test_a_setting_lists_each_difference_and_unrecorded_fields_match_anything():
    tuned = Setting("FlowMatchEulerDiscreteScheduler", 28, 64, 64, None, 3.5, ("style-0123abcd",))
    call = Setting("FlowMatchEulerDiscreteScheduler", 20, 64, 96, 5, 5.0, ())
    assert tuned.differences(call) == ["20 steps (tuned: 28)", "width 96 (tuned: 64)", "guidance 5 (tuned: 3.5)",
                                       "LoRAs [none] (tuned: [style-0123abcd])"]
    unrecorded = Setting("FlowMatchEulerDiscreteScheduler", 20)
    assert unrecorded.differences(call) == [] and str(tuned) == "28 steps, 64x64, guidance 3.5, LoRAs style-0123abcd"
    lora = LoraRef("style", "0123abcd" + "0" * 56, 0.8)
    assert Setting.of(schedule(10, 2)).guidance == 3.5 and Setting.of(schedule(10, 2, guidance=Guidance("true_cfg", 4.0))).guidance is None
    s = schedule(10, 2)
    s = Schedule(s.tag, Model("flux", s.model.id, s.model.pipeline, (lora,)), s.sampler, s.plan)
    assert Setting.of(s).loras == ("style-0123abcd",)


# -- at run time -----------------------------------------------------------------------------------


def test_each_call_runs_the_entry_tuned_for_its_steps_at_the_speed_asked(flux, pack):
    p = Pack.load(pack)
    entry = {(e.schedule.steps, e.speed): e for e in p.entries}
    expected = {key: alone(flux, e.schedule, key[0]) for key, e in entry.items()}
    zeustune.enable(flux.pipe, pack)
    try:
        for steps, speed in [(20, 2.0), (10, 2.0), (20, 2.0)]:  # the default speed, switching steps per call
            assert torch.equal(run(flux, steps), expected[steps, speed])
            used = zeustune.summary(flux.pipe)
            assert used.tag == entry[steps, speed].schedule.tag
            assert f"{steps}-2x.yaml (2x, tuned for this call: {steps} steps, {SIZE}x{SIZE}, guidance 3.5)" in used.chosen
        with zeustune.speed(flux.pipe, "3x"):
            assert torch.equal(run(flux, 10), expected[10, 3.0])
            with zeustune.speed(flux.pipe, 2):  # the innermost block wins
                assert torch.equal(run(flux, 10), expected[10, 2.0])
            assert torch.equal(run(flux, 20), expected[20, 3.0])
        assert torch.equal(run(flux, 20), expected[20, 2.0])  # back to the default
        with pytest.raises(PackError, match=r"speed: got '4x', expected one of 2x, 3x"):
            with zeustune.speed(flux.pipe, "4x"):
                pass
    finally:
        zeustune.disable(flux.pipe)


def test_enable_checks_the_speed_and_the_family_and_speed_needs_a_pack(flux, pack, tmp_path):
    with pytest.raises(PackError, match=r"speed: got '7x', expected one of 2x, 3x"):
        zeustune.enable(flux.pipe, pack, speed="7x")
    bare = write_pack(tmp_path / "bare", {"a.yaml": (schedule(10, 2), "2x"), "b.yaml": (schedule(10, 3), "3x")})
    with pytest.raises(PackError, match=r"speed: got None, expected one of 2x, 3x \(the pack has no default_speed\)"):
        zeustune.enable(flux.pipe, bare)
    sd = write_pack(tmp_path / "sd", {"a.yaml": (schedule(10, 2, family="sd", scheduler="EulerDiscreteScheduler",
                                                          guidance=Guidance("cfg", 7.5)), "2x")})
    with pytest.raises(zeustune.ScheduleMismatchError, match=r"model\.family: got 'sd', expected flux"):
        zeustune.enable(flux.pipe, sd)
    zeustune.enable(flux.pipe, "zeus-flux-demo")
    try:
        with pytest.raises(ScheduleError, match="a pipeline with a pack enabled .*single schedule"):
            with zeustune.speed(flux.pipe, "2x"):
                pass
    finally:
        zeustune.disable(flux.pipe)


def test_a_call_no_entry_fits_runs_the_nearest_resampled_with_a_warning_or_full_steps(flux, pack):
    p = Pack.load(pack)
    twenty = next(e for e in p.entries if e.file == "20-2x.yaml").schedule
    resampled = alone(flux, twenty, 15, resample=True)
    untouched = run(flux, 20, guidance_scale=5.0)
    zeustune.enable(flux.pipe, pack)
    try:
        with pytest.warns(PackFallbackWarning, match=r"20-2x\.yaml \(2x, the nearest entry, resampled: 15 steps \(tuned: 20\)\)"):
            assert torch.equal(run(flux, 15), resampled)
        assert zeustune.summary(flux.pipe).steps == 15
        with pytest.warns(PackFallbackWarning, match=r"height 48 \(tuned: 32\); width 48 \(tuned: 32\)"):
            run(flux, 20, height=48, width=48)
        zeustune.enable(flux.pipe, pack, fallback="full")
        with pytest.warns(PackFallbackWarning, match=r"full steps \(no 2x entry for this call: guidance 5 \(tuned: 3\.5\)\)"):
            assert torch.equal(run(flux, 20, guidance_scale=5.0), untouched)
        assert zeustune.summary(flux.pipe).denoiser_calls == 40  # 20 steps x 2 CFG branches
        with pytest.raises(ScheduleError, match="fallback: got 'guess', expected one of resample, full"):
            zeustune.enable(flux.pipe, pack, fallback="guess")
    finally:
        zeustune.disable(flux.pipe)


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_the_call_setting_is_read_for_every_family(family, tmp_path):
    """An entry at the tiny pipeline's own size matches; one at another size does not."""
    tp = tiny.build(family)
    sched = type(tp.pipe.scheduler).__name__
    size = tiny.WAN_SIZE if family == "wan" else SIZE
    frames = tiny.WAN_FRAMES if family == "wan" else None
    mode = {"flux": "distilled", "wan": "true_cfg"}.get(family, "cfg")
    tp(steps=2)  # the pipeline records the call's guidance scale
    scale = tp.pipe._guidance_scale

    def entry(side):
        return Schedule("e", Model(family), Sampler(sched, 6, side, side, frames, Guidance(mode, scale)), Plan("FFEFEF"))

    folder = write_pack(tmp_path / "p", {"fits.yaml": (entry(size), "2x"), "other.yaml": (entry(2 * size), "3x")})
    zeustune.enable(tp.pipe, folder, speed="2x")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PackFallbackWarning)
            tp(steps=6)
        assert "fits.yaml (2x, tuned for this call" in zeustune.summary(tp.pipe).chosen
        with zeustune.speed(tp.pipe, "3x"), pytest.warns(PackFallbackWarning, match=f"height {size} \\(tuned: {2 * size}\\)"):
            tp(steps=6)
    finally:
        zeustune.disable(tp.pipe)


def test_a_call_after_one_that_failed_at_its_first_step_chooses_afresh(flux, pack):
    """The run starts at a new scheduler grid, not only at a lower step index (a failed call at step
    0 left the index at 0, and the next call would have kept its entry)."""
    expected = alone(flux, Pack.load(pack).entries[0].schedule, 10)  # 10-2x

    def fail(*_):
        raise RuntimeError("client went away")

    zeustune.enable(flux.pipe, pack)
    try:
        with pytest.raises(RuntimeError, match="client went away"):
            run(flux, 20, callback_on_step_end=fail)
        assert torch.equal(run(flux, 10), expected)
        assert zeustune.summary(flux.pipe).tag == "s10-32-2x"
    finally:
        zeustune.disable(flux.pipe)


def serve_from_docs():
    """The server example in docs/packs.md, as the docs show it."""
    block = re.search(r"```python\n(import threading\n.+?)\n```", (ROOT / "docs" / "packs.md").read_text(), re.S).group(1)
    namespace: dict = {}
    exec(compile(block, "docs/packs.md", "exec"), namespace)  # noqa: S102 - the project's own docs
    return namespace["serve"]


def test_the_docs_server_serves_threads_at_their_own_speeds(flux, pack):
    serve = serve_from_docs()
    p = Pack.load(pack)
    expected = {(e.schedule.steps, f"{e.speed:g}x"): (alone(flux, e.schedule, e.schedule.steps), e.schedule.tag) for e in p.entries}
    requests = [(steps, speed) for _ in range(3) for steps in (10, 20) for speed in ("2x", "3x")]
    zeustune.enable(flux.pipe, pack)
    barrier = threading.Barrier(4)

    def one(i):
        steps, speed = req = requests[i]
        if i < 4:  # the first four start together
            barrier.wait(timeout=60)
        call = {**flux.call_kwargs, "num_inference_steps": steps, "return_dict": False,
                "generator": torch.Generator().manual_seed(0)}
        (out, *_), used = serve(flux.pipe, {"speed": speed, **call})
        return req, out, used.tag

    try:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(one, range(len(requests))))
    finally:
        zeustune.disable(flux.pipe)
    for req, out, tag in results:
        assert tag == expected[req][1] and torch.equal(out, expected[req][0]), req


@pytest.mark.skipif(not (zeustune.models.TINY_FLUX_DIR / "model_index.json").is_file(), reason="tiny-flux weights not built")
def test_enable_without_a_schedule_uses_the_pack_of_the_models_folder(tmp_path):
    from diffusers import FluxPipeline

    from zeustune.models.registry import TINY_FLUX_CALL_KWARGS, TINY_FLUX_DIR

    model = tmp_path / "tiny-flux"
    model.mkdir()
    for part in TINY_FLUX_DIR.iterdir():  # the weights by link; the pack is this folder's own
        (model / part.name).symlink_to(part)
    presets = {f"28-64x64-{b}x.yaml": (Schedule.from_preset(f"tiny-flux/tuned-{b}x"), f"{b}x") for b in (2, 3, 4)}
    write_pack(model / "zeustune", presets, default_speed="3x")
    pipe = FluxPipeline.from_pretrained(model, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    zeustune.enable(pipe)
    call = {**TINY_FLUX_CALL_KWARGS, "height": 64, "width": 64, "output_type": "latent"}
    pipe("a red circle", num_inference_steps=28, **call)
    used = zeustune.summary(pipe)
    assert used.tag == "tuned-3x" and "28-64x64-3x.yaml (3x, tuned for this call: 28 steps, 64x64" in used.chosen
    with zeustune.speed(pipe, "4x"):
        pipe("a red circle", num_inference_steps=28, **call)
    assert zeustune.summary(pipe).tag == "tuned-4x"
    shutil.rmtree(model / "zeustune")
    with pytest.raises(ScheduleError, match=r"schedule: got None, expected a schedule or a pack; the pipeline's folder"):
        zeustune.enable(pipe)
