"""Writes docs/benchmarks/wan-projection.json (quoted in wan-projection.md). 19 s on the project's
2-core machine (one thread, busy), most of it building the VAE and two small decodes on real
tensors; the full-size counts run on the meta device (shapes only, no arithmetic).

What the bench's Wan2.1-14B projection adds to the transformer calls: the work outside them in a
50-step, two-call-CFG text-to-video run at 480p (81 frames of 832x480), as FLOPs.

- The VAE decode: Wan 2.1's VAE (``diffusers.AutoencoderKLWan()``: its defaults are Wan 2.1's;
  random weights, FLOPs do not depend on them), counted with ``torch.utils.flop_counter``. It
  decodes one latent frame at a time (the first gives 1 frame, each next 4), so its FLOPs are affine
  in the latent frames; its convolutions scale with the pixels of a frame, its middle block's
  attention (per frame over the (H/8) x (W/8) tokens) with their square. Two small decodes
  (16 x 2 x 8 x 8 and 16 x 3 x 8 x 8 latents, real tensors) fit that form; it is extrapolated to
  16 x 21 x 60 x 104 and checked against a count at that size on the meta device.
- The text encoder: UMT5-XXL's encoder (google/umt5-xxl's configuration, counted on the meta
  device) on two prompts (the prompt and the negative prompt) of 512 tokens each.

Then ``fixed_share_50 = F / (F + 100 * call)``, ``call`` one transformer call
(``zeustune.bench.compute.wan_flops``). Attention runs on PyTorch's math backend here: the fused
CPU kernel is one op the FLOP counter does not know.

    python experiments/wan_fixed_share.py [--json docs/benchmarks/wan-projection.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from zeustune.bench.compute import BENCHMARKS, WAN_14B, wan_flops

STEPS, BRANCHES, PROMPTS = 50, 2, 2
FRAMES, HEIGHT, WIDTH = 81, 480, 832
#: google/umt5-xxl, the encoder Wan2.1 uses (its text_encoder folder's config.json)
UMT5_XXL = dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
                is_encoder_decoder=False, use_cache=False)


def counted(fn) -> tuple[int, int]:
    """(FLOPs outside attention: the VAE's convolutions, the encoder's projections; FLOPs of attention's
    batched products) of ``fn()``."""
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        fn()
    ops = {str(op): n for op, n in fc.get_flop_counts()["Global"].items()}
    attention = ops.pop("aten.bmm", 0)
    return sum(ops.values()), attention


def vae_decode(vae, latent: tuple[int, ...], device: str) -> dict:
    z = torch.randn(1, *latent, device=device) if device != "meta" else torch.empty(1, *latent, device="meta")
    box = {}
    convolutions, attention = counted(lambda: box.update(out=vae.decode(z).sample))
    return {"latent": list(latent), "output": list(box["out"].shape[1:]), "convolutions": convolutions, "attention": attention}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, default=BENCHMARKS / "wan-projection.json")
    args = ap.parse_args(argv)
    import diffusers
    import transformers
    from diffusers import AutoencoderKLWan
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    c, f, h, w = WAN_14B.latent
    vae = AutoencoderKLWan().eval()
    small = [vae_decode(vae, (c, t, 8, 8), "cpu") for t in (2, 3)]
    for s, t in zip(small, (2, 3)):
        assert s["output"] == [3, 1 + 4 * (t - 1), 64, 64], s["output"]
    # affine in latent frames; convolutions x pixels, attention x pixels^2 (per frame, h x w tokens)
    pixels = (h * w) / (8 * 8)
    per_frame = {k: small[1][k] - small[0][k] for k in ("convolutions", "attention")}
    extrapolated = {k: (small[0][k] + (f - 2) * per_frame[k]) * (pixels if k == "convolutions" else pixels ** 2)
                    for k in per_frame}
    with torch.device("meta"):
        meta_vae = AutoencoderKLWan()
    full = vae_decode(meta_vae, (c, f, h, w), "meta")
    assert full["output"] == [3, FRAMES, HEIGHT, WIDTH], full["output"]
    for k in extrapolated:
        assert abs(extrapolated[k] - full[k]) <= 1e-9 * full[k], (k, extrapolated[k], full[k])
    naive = (small[1]["convolutions"] + small[1]["attention"]) * FRAMES * HEIGHT * WIDTH / (9 * 64 * 64)

    with torch.device("meta"):
        encoder = UMT5EncoderModel(UMT5Config(**UMT5_XXL))
    params = sum(p.numel() for p in encoder.parameters())
    text = sum(counted(lambda: encoder(input_ids=torch.zeros(1, WAN_14B.text_tokens, dtype=torch.long, device="meta"))))

    vae_flops = full["convolutions"] + full["attention"]
    fixed = vae_flops + PROMPTS * text
    call = wan_flops()["total"]
    calls = STEPS * BRANCHES
    share = fixed / (fixed + calls * call)
    out = {
        "setting": f"Wan2.1-T2V-14B, {FRAMES} frames of {WIDTH}x{HEIGHT}, {STEPS} steps, two-call CFG ({calls} transformer calls)",
        "versions": f"torch {torch.__version__}, diffusers {diffusers.__version__}, transformers {transformers.__version__}",
        "vae_decode": {"flops": vae_flops, "attention_flops": full["attention"], "latent": full["latent"],
                       "output": full["output"], "small_decodes": small, "extrapolated": extrapolated,
                       "by_output_volume": naive},
        "text_encoder": {"parameters": params, "flops_per_prompt": text, "prompts": PROMPTS, "tokens": WAN_14B.text_tokens},
        "fixed_flops": fixed,
        "call_flops": call,
        "calls": calls,
        "fixed_share_50": share,
    }
    print(f"VAE decode, 16x{f}x{h}x{w} latent -> {FRAMES}x{HEIGHT}x{WIDTH}: {vae_flops:.4e} FLOPs "
          f"(middle-block attention {full['attention']:.3e}, {100 * full['attention'] / vae_flops:.2f}%)")
    print(f"  from the small decodes, affine in frames: {sum(extrapolated.values()):.4e}; "
          f"scaled by output volume from the 3-frame one: {naive:.4e} ({100 * (naive / vae_flops - 1):+.1f}%)")
    print(f"UMT5-XXL encoder: {params / 1e9:.2f}e9 parameters, {text:.4e} FLOPs per {WAN_14B.text_tokens}-token prompt, "
          f"x{PROMPTS}")
    print(f"fixed work F = {fixed:.4e} FLOPs; one transformer call {call:.4e}, x{calls} = {calls * call:.4e}")
    print(f"fixed share at {STEPS} steps: {share:.6f} ({100 * share:.3f}%)")
    args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
