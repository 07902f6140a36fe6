"""Scoring schedules on a model: cached full-step references, accelerated images, quality, timing.

Common random numbers: prompt i is sampled with seed ``seed + i`` for the reference and for every
schedule, so the only difference between an image and its reference is the schedule.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from . import metrics as M
from .. import runtime
from ..models.calling import pipeline_kwargs
from ..models.spec import ModelSpec
from .references import ReferenceCache, config_dict, model_fingerprint, reference_key
from .repeats import collapse_repeats
from ..schedule.format import Schedule


def sample(pipe, spec: ModelSpec, prompt: str, seed: int, **overrides) -> torch.Tensor:
    """One image as a float tensor (3, H, W) in [0, 1]; for a video model the clip (F, 3, H, W)."""
    kwargs = pipeline_kwargs(spec, prompt, seed=seed, output_type="pt", **overrides)
    out = pipe(**kwargs)
    images = out.frames if hasattr(out, "frames") else out.images
    return images[0]


def sample_batch(pipe, spec: ModelSpec, prompts: list[str], seeds: list[int], **overrides) -> torch.Tensor:
    """Images (B, 3, H, W) (clips: (B, F, 3, H, W)) for several prompts in one pipeline call, image i drawn from its own
    generator seeded ``seeds[i]``, so it starts from the same noise as ``sample(.., seeds[i])``.
    Batched matmuls round differently: pixels differ from the one-at-a-time images by ~1e-5."""
    kwargs = pipeline_kwargs(spec, list(prompts), seed=0, output_type="pt", **overrides)
    kwargs["generator"] = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    for key in ("negative_prompt", "negative_prompt_2"):
        if isinstance(kwargs.get(key), str):
            kwargs[key] = [kwargs[key]] * len(prompts)
    out = pipe(**kwargs)
    return out.frames if hasattr(out, "frames") else out.images


@dataclass
class References:
    images: torch.Tensor  # (N, 3, H, W); clips (N, F, 3, H, W) for a video model
    hits: int
    computed: int
    seconds: float
    keys: tuple[str, ...] = ()  # each image's cache key: what a score of these references is keyed by


def references(pipe, spec: ModelSpec, prompts: list[str], seed: int, cache: ReferenceCache, progress=True,
               batch: int = 1, render=None) -> References:
    """Full-step images for every prompt, from the cache where present (keyed by everything that
    determines them), computed and stored otherwise, ``batch`` prompts per pipeline call. The
    pipeline must have no schedule enabled. ``render(prompts, seeds) -> images`` computes the
    missing ones elsewhere instead (a cluster's workers, each a share); ``pipe`` still keys them."""
    runtime.disable(pipe)
    fingerprint = model_fingerprint(pipe)
    scheduler = config_dict(pipe.scheduler)
    t0 = time.perf_counter()
    keys = [
        reference_key(model=fingerprint, scheduler=scheduler, steps=spec.steps, height=spec.height, width=spec.width,
                      frames=spec.frames, guidance=spec.guidance, call_kwargs=spec.call_kwargs, prompt=p, seed=seed + i,
                      # a video's whole clip: earlier versions kept its first frame under the same parts
                      **({"clip": True} if spec.frames is not None else {}))
        for i, p in enumerate(prompts)
    ]
    images: list[torch.Tensor | None] = []
    for key in keys:
        entry = cache.get(key)
        images.append(None if entry is None else entry["image"])
    missing = [i for i, im in enumerate(images) if im is None]
    n_missing = len(missing)
    if render is not None and missing:
        out = render([prompts[i] for i in missing], [seed + i for i in missing])
        for i, im in zip(missing, out):
            cache.put(keys[i], {"image": im.contiguous()}, meta={"model": spec.name, "prompt": prompts[i], "seed": seed + i})
            images[i] = im
        missing = []
    bar = tqdm(total=len(missing), desc="references", disable=not progress or not missing, leave=False)
    with collapse_repeats("references"):  # a warning per call (a truncated prompt) is shown once
        for start in range(0, len(missing), batch):
            idx = missing[start:start + batch]
            if batch == 1:
                out = sample(pipe, spec, prompts[idx[0]], seed + idx[0]).cpu()[None]
            else:
                out = sample_batch(pipe, spec, [prompts[i] for i in idx], [seed + i for i in idx]).cpu()
            for i, im in zip(idx, out):
                cache.put(keys[i], {"image": im.contiguous()}, meta={"model": spec.name, "prompt": prompts[i], "seed": seed + i})
                images[i] = im
            bar.update(len(idx))
    bar.close()
    return References(torch.stack(images), len(prompts) - n_missing, n_missing, time.perf_counter() - t0, tuple(keys))


def synchronize(target) -> None:
    """Wait for a pipeline's device (or a torch.device): CUDA calls return before the GPU is done.
    Timers pass the device, looked up once outside the timing: ``pipe.device`` walks every
    component (0.5 ms on tiny-flux, a tenth of its step)."""
    device = target if isinstance(target, torch.device) or target is None else getattr(target, "device", None)
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(pipe, fn) -> float:
    """Seconds ``fn()`` keeps the pipeline's device busy (synchronised on CUDA)."""
    device = getattr(pipe, "device", None)
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def timed_steps(pipe, fn) -> tuple[float, list[float]]:
    """Seconds ``fn()`` keeps the device busy, and the seconds of each of its sampling steps.

    A step begins at its first denoiser call (a step's CFG branches share its timestep) and ends
    where the next begins; the last one after its last call plus the median time the others spent
    after theirs (the scheduler's update). The rest of the total is the run's fixed part (text
    encoding, set-up, decoding), measured rather than fitted. The device is synchronised at every
    call: on CUDA a stamp would otherwise be a launch."""
    from ..runtime.families import detect

    denoiser = getattr(pipe, detect(pipe).denoiser)
    device = getattr(pipe, "device", None)
    starts, ends, seen = [], [], []

    def pre(module, args, kwargs):
        t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        key = float(t.flatten()[0]) if torch.is_tensor(t) else t
        synchronize(device)
        now = time.perf_counter()
        if not seen or key != seen[-1]:
            seen.append(key)
            starts.append(now)
            ends.append(now)

    def post(module, args, kwargs, out):
        synchronize(device)
        ends[-1] = time.perf_counter()

    hooks = [denoiser.register_forward_pre_hook(pre, with_kwargs=True),
             denoiser.register_forward_hook(post, with_kwargs=True)]
    try:
        total = timed(pipe, fn)
    finally:
        for h in hooks:
            h.remove()
    steps = [b - a for a, b in zip(starts, starts[1:])]
    after = [b - e for b, e in zip(starts[1:], ends)]
    if starts:
        steps.append(ends[-1] - starts[-1] + (statistics.median(after) if after else 0.0))
    return total, steps


def time_interleaved(pipe, spec: ModelSpec, schedule: Schedule, prompt: str | list[str], seed: int | list[int], runs: int,
                     resample=False):
    """Median latency of the full-step and the scheduled run, measured in alternation so that
    drift on a shared machine hits both alike. Returns (full_s, scheduled_s). With lists of
    prompts and seeds, run i uses prompt i mod their number (plans whose cost varies per prompt)."""
    prompts, seeds = ([prompt], [seed]) if isinstance(prompt, str) else (list(prompt), list(seed))
    full, fast = [], []
    for i in range(runs):
        p, s = prompts[i % len(prompts)], seeds[i % len(prompts)]
        for bucket, enabled in ((full, False), (fast, True)):
            if enabled:
                runtime.enable(pipe, schedule, resample=resample)
            else:
                runtime.disable(pipe)
            bucket.append(timed(pipe, lambda: sample(pipe, spec, p, s)))
    runtime.disable(pipe)
    return statistics.median(full), statistics.median(fast)


@dataclass
class Row:
    schedule: Schedule
    nfe: float
    steps: int
    values: dict[str, torch.Tensor]  # metric name -> per-image values
    speedup: float | None = None
    latency_full: float | None = None
    latency: float | None = None
    images: torch.Tensor | None = field(default=None, repr=False)
    calls: list[float] | None = None  # per prompt: denoiser calls per CFG branch

    def stat(self, name: str) -> tuple[float, float]:
        """(mean, worst) of a metric over the prompts."""
        v = self.values[name].float()
        worst = v.min() if M.METRICS[name].higher_is_better else v.max()
        return v.mean().item(), worst.item()


def evaluate_schedule(pipe, spec, schedule, prompts, seed, refs: torch.Tensor, metric_names, resample=False, progress=True) -> Row:
    """One prompt per call; ``Row.nfe`` is the mean of the counted denoiser calls per CFG branch
    (plans with adaptive steps call a different number per prompt: ``Row.calls`` has each)."""
    runtime.enable(pipe, schedule, resample=resample)
    images, calls = [], []
    try:
        with collapse_repeats(f"eval {schedule.tag}"):
            for i, p in enumerate(tqdm(prompts, desc=schedule.tag, disable=not progress, leave=False)):
                images.append(sample(pipe, spec, p, seed + i).cpu())
                summ = runtime.summary(pipe)
                calls.append(summ.denoiser_calls / max(len(summ.branches), 1))
    finally:
        runtime.disable(pipe)
    images = torch.stack(images)
    if not torch.isfinite(images).all():
        raise FloatingPointError(f"schedule {schedule.tag}: non-finite output")
    values = M.score_all(images, refs, metric_names)
    return Row(schedule, sum(calls) / len(calls), summ.steps, values, images=images, calls=calls)


def table(rows: list[Row], metric_names: list[str]) -> str:
    """A markdown table: NFE, measured speedup, each metric's mean and worst."""
    head = ["schedule", "NFE", "N/NFE", "speedup"]
    for name in metric_names:
        unit = f" ({M.METRICS[name].unit})" if M.METRICS[name].unit else ""
        head += [f"{name}{unit} mean", f"{name} worst"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.schedule.tag, f"{r.nfe:g}/{r.steps}", f"{r.steps / r.nfe:.2f}x",
                 f"{r.speedup:.2f}x" if r.speedup is not None else "-"]
        for name in metric_names:
            mean, worst = r.stat(name)
            cells += [f"{mean:.4f}" if name != "psnr" else f"{mean:.2f}", f"{worst:.4f}" if name != "psnr" else f"{worst:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def slug(text: str, n: int = 48) -> str:
    """A file-name-safe short form of a prompt."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower())[:n].strip("-") or "prompt"


def save_side_by_side(out: Path, row: Row, refs: torch.Tensor, prompts: list[str]) -> Path:
    """Per prompt: reference | scheduled | |difference| x4; and grid.png with the first eight."""
    from PIL import Image

    folder = out / row.schedule.tag
    folder.mkdir(parents=True, exist_ok=True)
    strips = []
    for i, (ref, img) in enumerate(zip(refs, row.images)):
        clip = ref.dim() == 4  # a clip's frames make a row; reference, scheduled and difference stack
        ref, img = frame_strip(ref), frame_strip(img)
        diff = ((img - ref).abs() * 4).clamp(0, 1)
        strip = torch.cat([ref, img, diff], dim=1 if clip else 2)
        Image.fromarray(_u8(strip)).save(folder / f"{i:03d}-{slug(prompts[i])}.png")
        if i < 8:
            strips.append(strip)
    grid = torch.cat(strips, dim=1)
    Image.fromarray(_u8(grid)).save(folder / "grid.png")
    return folder


def frame_strip(t: torch.Tensor) -> torch.Tensor:
    """An image (3, H, W) as it is; a clip (F, 3, H, W) as its frames side by side (3, H, F * W)."""
    return torch.cat(list(t), dim=2) if t.dim() == 4 else t


def _u8(t: torch.Tensor):
    return (frame_strip(t).clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def write_report(out: Path, rows: list[Row], metric_names: list[str], info: dict) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    data = {
        **info,
        "metrics": metric_names,
        "rows": [
            {"schedule": r.schedule.tag, "nfe": r.nfe, "steps": r.steps, "speedup": r.speedup,
             "latency_full_s": r.latency_full, "latency_s": r.latency,
             **{name: {"mean": r.stat(name)[0], "worst": r.stat(name)[1],
                       "values": [float(v) for v in r.values[name]]} for name in metric_names}}
            for r in rows
        ],
    }
    (out / "report.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / "report.md").write_text(table(rows, metric_names) + "\n")
    return out
