"""Make models/tiny-flux-lora: a small "complementary palette" style LoRA for tiny-flux, on CPU.

The style: every named colour is drawn as its complement (red <-> green, yellow <-> blue,
orange <-> purple, white <-> black; gray stays gray), objects and background alike, while shapes,
sizes, positions and textures follow the prompt as before. Because a palette permutation keeps
distinct colours distinct, every shape stays visible, and the change can be checked by code:
``scenes.check`` against the prompt's scene with its colours swapped.

Seeded and reproducible:
  1. captioned scenes are sampled from the training split of zeustune.models.tinyflux.scenes and rendered
     with the swapped palette (the captions keep the original colours),
  2. the frozen tiny-flux VAE and text encoders encode them once,
  3. a peft LoRA (rank 8) on the transformer's attention projections learns rectified flow on
     those latents exactly as scripts/train_tiny_flux.py trains the base model (FLUX's shifted
     logit-normal timesteps, velocity target noise - x0, 10% caption dropout for true CFG),
  4. it is saved with diffusers' own API (FluxPipeline.save_lora_weights), then reloaded with
     ``pipe.load_lora_weights`` and measured on held-out prompts (GMSD to the base model's images
     at adapter scales 0.5 and 1.0, and which palette the images follow); ``--preview`` saves a
     base | 0.5 | 1.0 side-by-side.

    python scripts/make_tiny_flux_lora.py --out models/tiny-flux-lora --preview models/tiny-flux-lora/preview.png
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import FluxPipeline

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/ is not a package

from train_tiny_flux import Bucket, batches, encode_all, flow_pair, flow_step, lr_at  # noqa: E402

from zeustune.quality import metrics  # noqa: E402
from zeustune.models import registry as models
from zeustune.quality.evaluate import _u8, sample  # noqa: E402
from zeustune.models.prompts import load_prompts  # noqa: E402
from zeustune.models.tinyflux import scenes  # noqa: E402

#: The style's colour map: complementary pairs; gray is its own complement.
SWAP = {"red": "green", "yellow": "blue", "orange": "purple", "white": "black"}
SWAP |= {v: k for k, v in SWAP.items()} | {"gray": "gray"}
#: Attention projections of the double blocks (image and text streams) and the single blocks.
TARGET_MODULES = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"]
ADAPTER = "style"


def swapped(scene: scenes.Scene) -> scenes.Scene:
    """The scene with every colour replaced by its complement (SWAP)."""
    objects = tuple(scenes.Obj(o.shape, SWAP[o.color], o.size, o.position) for o in scene.objects)
    return scenes.Scene(objects, SWAP[scene.background], scene.texture)


def style_dataset(n: int, seed: int, size: int) -> tuple[np.ndarray, list[str]]:
    """Like scenes.dataset (training split), but each image is drawn in the swapped palette."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size, 3), np.uint8)
    captions = []
    for i in range(n):
        scene = scenes.sample_scene(rng, "train")
        images[i] = scenes.render(swapped(scene), size, seed=int(rng.integers(2**31)))
        captions.append(scenes.caption(scene))
    return images, captions


@torch.no_grad()
def encode_text(pipe, captions: list[str], max_tokens: int, batch: int = 256):
    """T5 sequence and pooled CLIP embeddings, as the pipeline computes them at sampling time."""
    seqs, pooled = [], []
    for i in range(0, len(captions), batch):
        enc, pool, _ = pipe.encode_prompt(captions[i : i + batch], None, device="cpu", max_sequence_length=max_tokens)
        seqs.append(enc)
        pooled.append(pool)
    return torch.cat(seqs), torch.cat(pooled)


def train_lora(pipe, packed, enc, pooled, empty_enc, empty_pooled, args, gen) -> list[float]:
    """Rectified flow on the LoRA parameters only: train_tiny_flux.train_flow's objective."""
    from peft import LoraConfig

    transformer = pipe.transformer
    transformer.requires_grad_(False)
    torch.manual_seed(args.seed)  # the LoRA's A matrices are initialised from torch's global RNG
    transformer.add_adapter(
        LoraConfig(r=args.rank, lora_alpha=args.rank, init_lora_weights="gaussian", target_modules=TARGET_MODULES),
        adapter_name=ADAPTER,
    )
    params = [p for p in transformer.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    transformer.train()
    n = packed.shape[0]
    bucket = Bucket(packed, args.batch)  # the image ids and timestep shift of this side
    img_ids, mu = bucket.img_ids, bucket.mu
    txt_ids = torch.zeros(enc.shape[1], 3)
    losses = []
    t0 = time.time()
    for step, idx in enumerate(batches(n, args.batch, args.steps, gen)):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, warmup=args.warmup)
        x0 = packed[idx]
        drop = torch.rand(len(idx), generator=gen) < args.caption_dropout
        e = torch.where(drop[:, None, None], empty_enc, enc[idx])
        p = torch.where(drop[:, None], empty_pooled, pooled[idx])
        losses.append(flow_step(transformer, opt, params, x0, flow_pair(x0, mu, gen), p, e, txt_ids, img_ids))
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {np.mean(losses[-100:]):.4f}  {time.time() - t0:.0f}s", flush=True)
    transformer.eval()
    return losses


def measure(lora_dir: Path, n_prompts: int, scales=(0.5, 1.0), preview: Path | None = None) -> dict:
    """Reload the LoRA with diffusers' loader into a fresh tiny-flux and compare full-step images with
    the base model's (same prompts and seeds): mean GMSD per scale, and colour/shape accuracy of each
    against the prompt's scene (base palette) and against its swapped scene (style palette)."""
    pipe, spec = models.load("tiny-flux", progress=False)
    pipe.set_progress_bar_config(disable=True)
    prompts = load_prompts("tiny-flux", "heldout")[:n_prompts]
    images = {0.0: [sample(pipe, spec, prompt, seed=i) for i, prompt in enumerate(prompts)]}
    pipe.load_lora_weights(lora_dir, adapter_name=ADAPTER)
    for scale in scales:
        pipe.set_adapters([ADAPTER], [scale])
        images[scale] = [sample(pipe, spec, prompt, seed=i) for i, prompt in enumerate(prompts)]
    result = {"prompts": n_prompts, "split": "heldout", "seeds": f"0..{n_prompts - 1}", "scales": {}}
    base = torch.stack(images[0.0])
    for scale, ims in images.items():
        ims = torch.stack(ims)
        row = {"gmsd_vs_base": round(float(metrics.gmsd(ims, base).mean()), 4)} if scale else {}
        for palette, to_scene in (("base", lambda s: s), ("style", swapped)):
            checks = [scenes.check(_u8(im), to_scene(scenes.parse_caption(p))) for im, p in zip(ims, prompts)]
            row[f"{palette}_palette"] = {
                "color_accuracy": round(float(np.mean([c["color_accuracy"] for c in checks])), 3),
                "shape_accuracy": round(float(np.mean([c["shape_accuracy"] for c in checks])), 3),
                "background_ok": round(float(np.mean([c["background_ok"] for c in checks])), 3),
            }
        result["scales"][str(scale)] = row
    if preview is not None:
        from PIL import Image

        rows = [torch.cat([images[s][i] for s in (0.0, *scales)], dim=2) for i in range(min(4, n_prompts))]
        grid = _u8(torch.cat(rows, dim=1))
        Image.fromarray(grid).resize((grid.shape[1] * 4, grid.shape[0] * 4), Image.NEAREST).save(preview)
        result["preview"] = str(preview)
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "tiny-flux-lora")
    ap.add_argument("--images", type=int, default=3000, help="training images (default: %(default)s)")
    ap.add_argument("--steps", type=int, default=1500, help="LoRA training steps (default: %(default)s)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--caption-dropout", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s; this model is "
                    "too small to gain from more, and loses much when the cores are shared)")
    ap.add_argument("--eval-prompts", type=int, default=8, help="held-out prompts to measure on (0: skip)")
    ap.add_argument("--eval-only", action="store_true", help="only measure the LoRA already in --out")
    ap.add_argument("--preview", type=Path, help="save base | scale 0.5 | scale 1.0 for 4 prompts here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    if not args.eval_only:
        from peft.utils import get_peft_model_state_dict

        torch.manual_seed(args.seed)
        gen = torch.Generator().manual_seed(args.seed)
        t0 = time.time()
        pipe, spec = models.load("tiny-flux", progress=False)
        images_u8, captions = style_dataset(args.images, seed=args.seed, size=spec.height)
        images = torch.from_numpy(images_u8).permute(0, 3, 1, 2).float() / 127.5 - 1
        max_tokens = spec.call_kwargs["max_sequence_length"]
        vae = pipe.vae
        with torch.no_grad():
            z = (encode_all(vae, images) - vae.config.shift_factor) * vae.config.scaling_factor
        packed = FluxPipeline._pack_latents(z, *z.shape)
        enc, pooled = encode_text(pipe, captions, max_tokens)
        empty_enc, empty_pooled = (x[0] for x in encode_text(pipe, [""], max_tokens))
        print(f"data: {len(captions)} swapped-palette images and their embeddings in {time.time() - t0:.1f}s", flush=True)

        t1 = time.time()
        losses = train_lora(pipe, packed, enc, pooled, empty_enc, empty_pooled, args, gen)
        train_seconds = time.time() - t1
        args.out.mkdir(parents=True, exist_ok=True)
        FluxPipeline.save_lora_weights(
            args.out, transformer_lora_layers=get_peft_model_state_dict(pipe.transformer, adapter_name=ADAPTER),
            safe_serialization=True,
        )
        size = (args.out / "pytorch_lora_weights.safetensors").stat().st_size
        print(f"saved {args.out} ({size / 1024:.0f} KiB); training {train_seconds:.0f}s, "
              f"loss first/last 100 steps {np.mean(losses[:100]):.4f}/{np.mean(losses[-100:]):.4f}", flush=True)
    if args.eval_prompts:
        print(json.dumps(measure(args.out, args.eval_prompts, preview=args.preview), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
