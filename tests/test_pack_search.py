"""`zeustune search --steps A,B --size HxW --pack DIR`: a study per setting, every budget's schedule of
each written into one pack, resumable; `zeustune show DIR` lists it; the runtime then uses it.

Small settings on tiny-flux (12 and 16 steps at 32x32, a few trials), timed by the fake stopwatch
(tests/fake_clock.py) so the budgets are met the same way on any machine."""

from __future__ import annotations

import os
import subprocess
import sys

import fake_clock
import optuna
import pytest

import zeustune
from zeustune import cli
from zeustune.models.registry import TINY_FLUX_CALL_KWARGS, TINY_FLUX_DIR
from zeustune.schedule.pack import Pack

pytestmark = pytest.mark.skipif(not (TINY_FLUX_DIR / "model_index.json").is_file(), reason="tiny-flux weights not built")

SMALL = ["--model", "tiny-flux", "--size", "32x32", "--budget", "1.2x,1.5x", "--trials", "4", "--refine", "1", "--calib", "2",
         "--heldout", "2", "--batch", "2", "--timing-runs", "1", "--metric", "gmsd", "--no-progress"]


def search(tmp_path, *extra) -> subprocess.CompletedProcess:
    env = fake_clock.env({**os.environ, "ZEUSTUNE_CACHE": str(tmp_path / "cache"), "ZEUSTUNE_HOME": str(tmp_path / "home")})
    command = [sys.executable, "-m", "zeustune.cli", "search", *SMALL, "--storage", f"sqlite:///{tmp_path / 'studies.db'}",
               "--out", str(tmp_path / "report"), *extra]
    r = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_a_study_per_setting_written_as_a_pack_resumed_shown_and_used(tmp_path, capsys):
    folder = tmp_path / "model" / "zeustune"
    first = search(tmp_path, "--steps", "12,16", "--pack", str(folder))
    pack = Pack.load(folder)
    assert pack.speeds == [1.2, 1.5] and pack.default_speed == 1.2
    assert sorted((e.schedule.steps, e.schedule.sampler.height, e.speed) for e in pack.entries) == [
        (12, 32, 1.2), (12, 32, 1.5), (16, 32, 1.2), (16, 32, 1.5)]
    for e in pack.entries:
        assert e.schedule.tag == e.file.removesuffix(".yaml")  # the entry's name in run summaries
        assert f"{e.schedule.steps}steps-32x32" in e.schedule.provenance["study"]
        assert e.schedule.metrics["speedup"]["measured"] >= e.speed
    studies = optuna.get_all_study_names(f"sqlite:///{tmp_path / 'studies.db'}")
    assert len(studies) == 2  # one per setting, each a ladder of the two budgets
    assert "| 12 steps, 32x32 | " in first.stdout and "| 16 steps, 32x32 | " in first.stdout

    assert cli.main(["show", str(folder.parent)]) == 0  # the model folder, or the pack folder
    shown = capsys.readouterr().out
    assert "speeds 1.2x, 1.5x, default 1.2x" in shown and "measured speedup, held-out loss (gmsd on 2 prompts)" in shown
    assert "| setting | 1.2x | 1.5x |" in shown and "(16-32x32-1.5x.yaml) |" in shown

    # An interrupted search: one setting's file is gone. The same command skips the other setting
    # and resumes this setting's study from the storage.
    (folder / "16-32x32-1.5x.yaml").unlink()
    again = search(tmp_path, "--steps", "12,16", "--pack", str(folder))
    assert "12-32x32: in the pack already" in again.stdout
    assert "16-32x32: study " in again.stdout and "(resumed)" in again.stdout and "finished trials kept" in again.stderr
    assert (folder / "16-32x32-1.5x.yaml").is_file() and len(Pack.load(folder).entries) == 4

    # the pack at work: a 16-step call runs its 16-step entry
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(TINY_FLUX_DIR, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    zeustune.enable(pipe, folder.parent, speed="1.5x")
    pipe("a red circle", num_inference_steps=16, height=32, width=32, output_type="latent", **TINY_FLUX_CALL_KWARGS)
    assert "16-32x32-1.5x.yaml (1.5x, tuned for this call: 16 steps, 32x32" in zeustune.summary(pipe).chosen


@pytest.mark.parametrize("args, message", [
    (["--steps", "20,20"], "--steps: got '20,20', expected step counts separated by commas, each once"),
    (["--size", "64"], "--size: got '64', expected HEIGHTxWIDTH sizes"),
])
def test_bad_setting_lists_are_refused_naming_the_flag(args, message, capsys):
    with pytest.raises(SystemExit):
        cli.main(["search", "--model", "tiny-flux", *args])
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--size", "32x32", "--height", "64"], "--size: got 32x32, expected no --height or --width with it"),
    (["--steps", "12,16", "--study-name", "mine"], "--study-name: got 'mine', expected none with several settings"),
    (["--steps", "12,0"], "--steps: got 0, expected a positive integer"),
])
def test_conflicting_flags_are_refused_before_the_model_loads(args, message, capsys, tmp_path):
    code = None
    try:
        code = cli.main(["search", "--model", "tiny-flux", *args, "--storage", f"sqlite:///{tmp_path / 's.db'}"])
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    assert code == 2 and message in capsys.readouterr().err
