#!/usr/bin/env python3
"""Regenerates the measured calls table of docs/packs.md (about 2 minutes on 2 cores).

A tiny-flux pack in use: calls at each setting it holds and at one it lacks; the entry each used,
its loss against the same-seed full-step image, its time against full steps, and whether its
outputs equal the single-schedule path's.

    python experiments/pack_calls.py PACK   # a pack written by zeustune search --steps 20,28,50
"""
import json
import sys
import time
import warnings

import torch
torch.set_num_threads(2)
import zeustune
from zeustune.models import load
from zeustune.models.prompts import load_prompts
from zeustune.quality import metrics as M

pack_dir = sys.argv[1]
pipe, spec = load("tiny-flux", progress=False)
pipe.set_progress_bar_config(disable=True)
prompts = load_prompts(spec, "heldout")[:8]
kw = dict(height=64, width=64, true_cfg_scale=4.0, negative_prompt="", max_sequence_length=32, guidance_scale=1.0,
          output_type="pt")

def render(steps, prompt, seed):
    return pipe(prompt, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed), **kw).images

rows = []
for steps in (20, 28, 50, 36):
    for speed in ("2x", "3x", "4x"):
        zeustune.disable(pipe)
        t_full, refs = 0.0, []
        for i, p in enumerate(prompts):
            t0 = time.perf_counter(); refs.append(render(steps, p, 10000 + i)); t_full += time.perf_counter() - t0
        zeustune.enable(pipe, pack_dir, speed=speed)
        t_pack, outs, warned = 0.0, [], []
        for i, p in enumerate(prompts):
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                t0 = time.perf_counter(); outs.append(render(steps, p, 10000 + i)); t_pack += time.perf_counter() - t0
            warned += [str(x.message) for x in w if "Pack" in type(x.message).__name__]
        summ = zeustune.summary(pipe)
        loss = M.score("st-lpips", torch.cat(outs), torch.cat(refs)).mean().item()
        same = None
        if not warned:  # the single-schedule path: the chosen entry's file enabled by itself
            entry = next((e for e in (summ.chosen or "").split() if e.endswith(".yaml")), None)
            zeustune.disable(pipe)
            zeustune.enable(pipe, f"{pack_dir}/{entry}")
            single = [render(steps, p, 10000 + i) for i, p in enumerate(prompts)]
            same = all(torch.equal(a, b) for a, b in zip(outs, single))
        rows.append(dict(steps=steps, speed=speed, chosen=summ.chosen, calls=summ.denoiser_calls / max(len(summ.branches), 1),
                         loss=round(loss, 5), speedup=round(t_full / t_pack, 2), same_as_single=same,
                         warning=warned[0] if warned else ""))
        print(json.dumps(rows[-1]), flush=True)
zeustune.disable(pipe)
