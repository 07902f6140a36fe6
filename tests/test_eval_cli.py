"""`zeustune generate` and `zeustune eval` on the embedded model."""

from __future__ import annotations

import json
import re

import pytest

from zeustune import cli
from zeustune.models import registry as models

pytestmark = pytest.mark.skipif(not models.TINY_FLUX_DIR.is_dir(), reason="models/tiny-flux not trained")


def test_generate_saves_pngs_named_by_schedule_and_prints_the_summary(tmp_path, capsys):
    from PIL import Image

    argv = ["generate", "--model", "tiny-flux", "--prompt", "a small red ring at the top, on a blue plain background",
            "--seed", "3", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    assert cli.main([*argv, "--schedule", "tiny-flux/zeus-28"]) == 0
    out = capsys.readouterr().out
    names = sorted(p.name for p in tmp_path.glob("*.png"))
    assert names == ["a-small-red-ring-at-the-top-on-a-blue-plain-back-seed3-full.png",
                     "a-small-red-ring-at-the-top-on-a-blue-plain-back-seed3-zeus-28.png"]
    assert Image.open(tmp_path / names[0]).size == (64, 64)
    assert "denoiser calls: 26" in out  # 13 fresh steps x 2 CFG branches


def test_eval_prints_a_table_and_a_second_run_samples_no_reference(tmp_path, capsys):
    argv = ["eval", "tiny-flux/uniform-2", "tiny-flux/uniform-3", "--model", "tiny-flux", "--limit", "3",
            "--timing-runs", "1", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "report")]
    assert cli.main(argv) == 0
    first = capsys.readouterr().out
    assert "3 prompts, 0 from the cache, 3 computed" in first
    assert re.search(r"\| uniform-2 \| 14/28 \| 2\.00x \| \d+\.\d\dx \|", first)
    assert re.search(r"\| uniform-3 \| 10/28 \| 2\.80x \|", first)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["metric"] in ("lpips", "st-lpips", "gmsd") and report["metrics"][0] == report["metric"]
    rows = report["rows"]
    metric = report["metric"]
    for row in rows:
        assert len(row["psnr"]["values"]) == 3
        assert row["psnr"]["worst"] == min(row["psnr"]["values"])  # PSNR: higher is better
        assert row[metric]["worst"] == max(row[metric]["values"])  # the perceptual loss: lower is better
    # every other step fresh vs every third: the perceptual metric and PSNR agree which is closer
    by_psnr = sorted(rows, key=lambda r: -r["psnr"]["mean"])
    assert by_psnr == sorted(rows, key=lambda r: r[metric]["mean"])
    assert (tmp_path / "report" / "uniform-2" / "grid.png").is_file()

    assert cli.main([*argv, "--timing-runs", "0"]) == 0
    second = capsys.readouterr().out
    assert "3 prompts, 3 from the cache, 0 computed" in second
