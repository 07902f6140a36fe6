"""The embedded video model tiny-wan, without trained weights: its synthetic clips, captions and
detector, its Wan-architecture pipeline, and its training script."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from zeustune.models.tinywan import scenes
from zeustune.schedule import ScheduleError
from zeustune.models.tinywan.model import MAX_TOKENS, build_pipeline, build_tokenizer, call_kwargs
from zeustune.models.tinywan.scenes import COLORS, HELDOUT, MOTIONS, SHAPES, TRIPLES, Clip, caption, check, dataset, is_heldout, parse_caption, render, sample_clip

ROOT = Path(__file__).resolve().parent.parent


def sampled(n: int, split: str = "train", seed: int = 0) -> list[Clip]:
    rng = np.random.default_rng(seed)
    return [sample_clip(rng, split) for _ in range(n)]


# --- clips -----------------------------------------------------------------------------------


def test_same_seed_same_clips_and_different_seeds_differ():
    videos, captions = dataset(8, seed=3)
    again, captions_again = dataset(8, seed=3)
    assert np.array_equal(videos, again) and captions == captions_again
    other, other_captions = dataset(8, seed=4)
    assert not np.array_equal(videos, other) and captions != other_captions
    assert videos.shape == (8, 17, 32, 32, 3) and videos.dtype == np.uint8


def test_the_seed_draws_the_path_not_the_content():
    clip = Clip("square", "red", "right", "blue")
    a, b = render(clip, seed=0), render(clip, seed=1)
    assert np.array_equal(a, render(clip, seed=0)) and not np.array_equal(a, b)
    assert check(a, clip)["motion_ok"] and check(b, clip)["motion_ok"]


def test_the_held_out_set_is_fixed_and_sampling_respects_it():
    assert len(TRIPLES) == 270 and len(HELDOUT) == 38
    for motion in MOTIONS:
        assert sum(t[2] == motion for t in HELDOUT) == (3 if motion == "spinning" else 5)
    assert not any(is_heldout(c) for c in sampled(2000))
    assert all(is_heldout(c) for c in sampled(500, "heldout"))
    with pytest.raises(ValueError, match="split"):
        sample_clip(np.random.default_rng(0), "test")


def test_sampling_covers_the_grammar_and_keeps_its_rules():
    clips = sampled(3000)
    assert {c.color for c in clips} == {c.background for c in clips} == set(COLORS)
    assert {c.shape for c in clips} == set(SHAPES) and {c.motion for c in clips} == set(MOTIONS)
    for c in clips:
        assert c.background not in (c.color, c.to_color)
        assert (c.motion == "turning") == (c.to_color is not None)
        assert c.motion != "spinning" or c.shape in ("square", "triangle")


@pytest.mark.parametrize("bad", [
    dict(shape="circle", color="red", motion="spinning", background="blue"),  # looks still
    dict(shape="circle", color="red", motion="left", background="red"),
    dict(shape="circle", color="red", motion="turning", background="blue"),  # no end colour
    dict(shape="circle", color="red", motion="turning", background="blue", to_color="blue"),
    dict(shape="hexagon", color="red", motion="left", background="blue"),
])
def test_invalid_clips_are_refused(bad):
    with pytest.raises(ValueError):
        Clip(**bad)


def test_shapes_stay_inside_the_frame():
    for i, clip in enumerate(sampled(300, seed=2)):
        video = render(clip, seed=i)
        border = np.concatenate([video[:, 0], video[:, -1], video[:, :, 0], video[:, :, -1]], axis=1)
        assert np.abs(border.astype(int) - COLORS[clip.background]).max() <= 12, caption(clip)


# --- captions --------------------------------------------------------------------------------


def test_caption_wording():
    assert caption(Clip("circle", "red", "left", "blue")) == "a red circle moving left on a blue background"
    assert caption(Clip("triangle", "orange", "growing", "gray")) == "an orange triangle growing on a gray background"
    assert caption(Clip("square", "green", "spinning", "white")) == "a green square spinning on a white background"
    assert caption(Clip("ring", "black", "turning", "orange", "white")) == "a black ring turning white on an orange background"


def test_parse_caption_inverts_caption():
    for clip in sampled(2000) + sampled(300, "heldout"):
        assert parse_caption(caption(clip)) == clip


@pytest.mark.parametrize("text", [
    "a red circle moving left",  # no background
    "a red circle moving sideways on a blue background",
    "an red circle moving left on a blue background",  # not caption()'s article
    "a red circle spinning on a blue background",  # a circle cannot be seen to spin
    "a red circle turning red on a blue background",
    "",
])
def test_parse_caption_names_the_text_it_cannot_read(text):
    with pytest.raises(ValueError, match="not a tiny-wan caption"):
        parse_caption(text)


def test_every_caption_word_is_one_token_and_captions_fit():
    tokenizer = build_tokenizer()
    captions = [caption(c) for c in sampled(1000) + sampled(200, "heldout")]
    ids = tokenizer(captions).input_ids
    assert all(len(i) == len(c.split()) + 1 for i, c in zip(ids, captions))  # + EOS
    assert max(map(len, ids)) <= MAX_TOKENS and tokenizer.unk_token_id not in sum(ids, [])


# --- the detector ----------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_the_detector_reads_rendered_clips(split):
    # measured on 400 clips: colour, motion and background 1.0, shape 0.9975 (a circle read as a square)
    results = [check(render(c, seed=i), c) for i, c in enumerate(sampled(100, split, seed=5))]
    for key in ("color_ok", "motion_ok", "background_ok"):
        assert all(r[key] for r in results), key
    assert np.mean([r["shape_ok"] for r in results]) >= 0.97


def test_the_detector_tolerates_blur_and_noise():
    # a trained model's clips are softer than renders; measured on 500 clips with a 3x3x3 box blur
    # (space and time) and noise sigma 10: colour 0.98, shape 0.94 (squares read as circles), motion 1.0
    rng = np.random.default_rng(8)
    found = {"color_ok": [], "shape_ok": [], "motion_ok": []}
    for i, clip in enumerate(sampled(100, seed=8)):
        video = render(clip, seed=i).astype(np.float32)
        p = np.pad(video, ((1, 1), (1, 1), (1, 1), (0, 0)), mode="edge")
        blurred = sum(p[t : t + 17, a : a + 32, b : b + 32] for t in range(3) for a in range(3) for b in range(3)) / 27
        noisy = np.clip(blurred + rng.normal(0, 10, video.shape), 0, 255).astype(np.uint8)
        report = check(noisy, clip)
        for key in found:
            found[key].append(report[key])
    assert np.mean(found["color_ok"]) >= 0.93 and np.mean(found["shape_ok"]) >= 0.8 and np.mean(found["motion_ok"]) >= 0.97


def test_the_detector_fails_clips_of_other_captions():
    # measured: 1 of 1000 random (clip, other caption) pairs passes colour, motion and background
    rng = np.random.default_rng(7)
    passed = 0
    for i in range(200):
        drawn, claimed = sample_clip(rng), sample_clip(rng)
        report = check(render(drawn, seed=i), claimed)
        passed += report["color_ok"] and report["motion_ok"] and report["background_ok"]
    assert passed <= 2


def test_the_detector_reports_the_track_and_a_missing_or_still_shape():
    clip = Clip("circle", "white", "down", "black")
    report = check(render(clip, seed=3), clip)
    assert len(report["y"]) == 17 and report["y"][-1] - report["y"][0] >= 0.25
    assert report["x"][-1] == pytest.approx(report["x"][0], abs=0.02)
    empty = np.broadcast_to(np.array(COLORS["black"], np.uint8), (17, 32, 32, 3))
    assert check(empty, clip)["motion"] == "none"
    still = np.repeat(render(clip, seed=3)[:1], 17, axis=0)
    assert check(still, clip)["motion"] == "still"


# --- the pipeline ----------------------------------------------------------------------------


def test_pipeline_round_trips_and_samples_with_two_call_cfg(tmp_path):
    from diffusers import WanPipeline

    pipe = build_pipeline(build_tokenizer(), seed=0)
    pipe.save_pretrained(tmp_path)
    loaded = WanPipeline.from_pretrained(tmp_path, local_files_only=True)
    assert type(loaded.scheduler).__name__ == "UniPCMultistepScheduler"
    assert loaded.scheduler.config.use_flow_sigmas and loaded.scheduler.config.flow_shift == 3.0
    assert (loaded.vae_scale_factor_temporal, loaded.vae_scale_factor_spatial) == (4, 4)
    # a few MB: the VAE at base width 16 is 7.5 MB of float32 weights, the rest under 3 MB
    assert sum(f.stat().st_size for f in tmp_path.rglob("*") if f.is_file()) < 12 * 2**20
    calls = []
    loaded.transformer.register_forward_pre_hook(lambda m, a: calls.append(1))
    outs = []
    for p in (pipe, loaded):
        p.set_progress_bar_config(disable=True)
        kwargs = {**call_kwargs(), "num_inference_steps": 2}
        outs.append(p("a red circle moving left on a blue background", generator=torch.Generator().manual_seed(0),
                      output_type="np", **kwargs).frames)
    assert outs[0].shape == (1, 17, 32, 32, 3)
    assert np.allclose(outs[0], outs[1], atol=1e-4)
    assert len(calls) == 4  # 2 steps x (prompt, negative prompt)


# --- the training script and the prompt files ------------------------------------------------


def test_training_script_smoke_is_seeded_and_loadable(tmp_path):
    from diffusers import WanPipeline
    from safetensors.torch import load_file

    spec = importlib.util.spec_from_file_location("train_tiny_wan", ROOT / "scripts" / "train_tiny_wan.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    for run in ("a", "b"):
        assert train.main(["--smoke", "--out", str(tmp_path / run)]) == 0
    for weights in sorted((tmp_path / "a").rglob("*.safetensors")):
        a, b = load_file(weights), load_file(tmp_path / "b" / weights.relative_to(tmp_path / "a"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), weights
    pipe = WanPipeline.from_pretrained(tmp_path / "a", local_files_only=True)
    assert len(pipe.vae.config.latents_std) == 16 and min(pipe.vae.config.latents_std) > 0
    assert (tmp_path / "a" / "training.json").exists()


@pytest.mark.parametrize("name", ["calib.txt", "heldout.txt"])
def test_prompt_files_are_what_the_generator_writes(name):
    text = (scenes.PROMPT_DIR / name).read_text()
    assert text == scenes.prompt_file_text(name)
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert len(lines) == len(set(lines)) == 64
    split = "heldout" if name == "heldout.txt" else "train"
    assert all(is_heldout(parse_caption(p)) == (split == "heldout") for p in lines)


def test_clips_flow_whole_through_references_and_scores(tmp_path):
    """A video model's references and samples are whole clips (N, F, 3, H, W), scored per clip by
    st-lpips-video under --metric auto: 0 for full steps, above 0 for a plan that skips."""
    import dataclasses

    from zeustune.models import MODELS
    from zeustune.quality import metrics
    from zeustune.quality.evaluate import evaluate_schedule, references
    from zeustune.quality.references import ReferenceCache
    from zeustune.schedule import load

    pipe = build_pipeline(build_tokenizer(), seed=0)
    pipe.set_progress_bar_config(disable=True)
    spec = dataclasses.replace(MODELS["tiny-wan"], source=str(tmp_path), steps=8)
    prompts = ["a red circle moving left on a blue background", "a green square growing on a gray background"]
    refs = references(pipe, spec, prompts, 0, ReferenceCache(tmp_path / "cache"), progress=False)
    assert refs.images.shape == (2, 17, 3, 32, 32) and refs.computed == 2
    assert metrics.resolve("auto", video=True) == "st-lpips-video"
    preset = load("zeus-wan2-demo")
    full = dataclasses.replace(preset, plan=type(preset.plan)("F" * 50))
    rows = [evaluate_schedule(pipe, spec, s, prompts, 0, refs.images, ["auto"], resample=True, progress=False)
            for s in (full, preset)]
    assert [tuple(r.values) for r in rows] == [("st-lpips-video",)] * 2
    assert rows[0].values["st-lpips-video"].tolist() == [0.0, 0.0]
    assert (rows[1].values["st-lpips-video"] > 0).all() and rows[1].nfe < 8


def _search(tmp_path, *extra):
    import os
    import subprocess
    import sys

    env = {**os.environ, "ZEUSTUNE_CACHE": str(tmp_path / "cache"), "ZEUSTUNE_HOME": str(tmp_path / "home")}
    return subprocess.run([sys.executable, "-m", "zeustune.cli", "search", "--model", "tiny-wan", "--calib", "2", "--heldout", "2",
                           "--trials", "8", "--refine", "2", "--timing-runs", "1", "--no-progress",
                           "--storage", f"sqlite:///{tmp_path / 's.db'}", "--out", str(tmp_path / "out"), *extra],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)


def test_tiny_wan_searches_budget_on_wan_14b_by_default_and_fit_times_this_cpu(tmp_path):
    """tiny-wan's VAE decode is ~23% of a CPU run (Wan2.1-14B's 0.17%): its space ships the
    Wan2.1-14B cost model, which a search uses unless told `--cost-model fit`."""
    from zeustune.search.cost import read
    from zeustune.schedule.format import Schedule
    from zeustune.search.driver import default_cost_model

    shipped = default_cost_model("tiny-wan", 50)
    assert shipped is not None and "Wan2.1-14B" in read(shipped, 50).device
    assert "Wan2.1-14B" in read(default_cost_model("tiny-wan", 40), 40).device  # Wan's other published count
    assert default_cost_model("tiny-wan", 30) is None and default_cost_model("tiny-flux", 28) is None
    r = _search(tmp_path, "--budget", "3x")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "budget priced by tiny-wan-cost-50.json" in r.stderr
    exported = Schedule.load(next((tmp_path / "home" / "schedules" / "tiny-wan").glob("tuned-3x.yaml")))
    cost = read(shipped, 50)
    # held to the projected line: at most the fresh steps 3x allows on Wan2.1-14B (16 of 50)
    assert exported.nfe <= cost.max_fresh(3.0) == 16
    # the CPU's own cost model cannot reach 40x (its fixed share alone is over 10%); the projection could
    r = _search(tmp_path, "--budget", "40x", "--cost-model", "fit")
    assert r.returncode == 2 and "caps the speedup at" in r.stderr, r.stderr[-2000:]
    assert cost.max_fresh(40.0) >= 1


def test_a_bare_preset_name_both_embedded_models_ship_resolves_to_the_pipelines_family():
    import zeustune

    pipe = build_pipeline(build_tokenizer(), seed=0)
    with pytest.raises(ScheduleError, match="qualify it with its family"):
        zeustune.load("tuned-2x")  # tiny-flux and tiny-wan both ship one
    hook = zeustune.enable(pipe, "tuned-2x")
    assert hook.schedule.model.family == "wan" and hook.schedule.tag == "tuned-2x"
