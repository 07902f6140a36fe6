"""tiny-wan's architecture: Wan 2.1 text-to-video's components at toy size.

Every component is the class Wan2.1-T2V-1.3B-Diffusers uses (a UMT5 text encoder with a T5-style
tokenizer, WanTransformer3DModel, the causal video VAE AutoencoderKLWan, UniPCMultistepScheduler
on flow-matching sigmas with Wan's shift), so the saved folder loads with
``WanPipeline.from_pretrained`` and takes plain text prompts like the real model: frames must be
4k + 1 (the VAE packs 4 frames after the first into a latent frame), sides multiples of 16
(WanPipeline's rule; the VAE downsamples 4x and the transformer patches 2x2), and
``guidance_scale > 1`` runs classifier-free guidance as a second transformer call per step.
scripts/train_tiny_wan.py trains it.

At the default 17 frames of 32x32 the transformer sees 5 latent frames of 4x4 patches (80 video
tokens) and 16 text tokens; a 50-step sample with CFG is 100 transformer calls and one decode.
Wan 2.1's VAE downsamples 8x; at 32 px that would leave 2x2 tokens per frame, and a 64 px clip
costs the VAE 4x more to train and decode, so tiny-wan's VAE stops at 4x (one level fewer).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from transformers import T5TokenizerFast, UMT5Config, UMT5EncoderModel

from ..tinyflux.model import build_t5_tokenizer
from .scenes import FRAMES, SIZE, WORDS

#: Text tokens; captions take at most 10. Sample with max_sequence_length=MAX_TOKENS: the transformer
#: attends to every padded position too, and WanPipeline's default 512 shows it 496 more than training did.
MAX_TOKENS = 16
TEXT_DIM = 64
LATENT_CHANNELS = 16  # Wan 2.1's z_dim
FLOW_SHIFT = 3.0  # Wan 2.1's shift at 480p, the diffusers default for Wan

#: Wan 2.1's sampler: UniPC (order 2, bh2, x0-predicting) on flow-matching sigmas shifted by
#: FLOW_SHIFT; sigma = timestep / 1000 is what the transformer is given.
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    prediction_type="flow_prediction",
    use_flow_sigmas=True,
    flow_shift=FLOW_SHIFT,
    solver_order=2,
    solver_type="bh2",
    final_sigmas_type="zero",
)


def build_tokenizer(captions: Iterable[str] = WORDS) -> T5TokenizerFast:
    """tiny-flux's T5-style tokenizer builder: every word of the caption grammar is one token
    (built from the grammar's words, not from sampled captions, so it never depends on the data)."""
    return build_t5_tokenizer(captions, MAX_TOKENS)


def build_pipeline(tokenizer: T5TokenizerFast, seed: int = 0, vae_base: int = 16) -> WanPipeline:
    """Untrained tiny-wan components (seeded), assembled into a WanPipeline."""
    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tokenizer), d_model=TEXT_DIM, d_kv=16, d_ff=2 * TEXT_DIM, num_layers=2, num_heads=4,
            relative_attention_num_buckets=8, relative_attention_max_distance=MAX_TOKENS, dropout_rate=0.0,
            feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, is_encoder_decoder=False, use_cache=False,
        )
    )
    # Wan 2.1-1.3B is 30 blocks of 12 heads x 128; here 4 blocks of 4 heads x 24 (rotary split
    # 8/8/8 over frame, row, column), qk RMS norm and cross-attention norm as there.
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=24, in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS, text_dim=TEXT_DIM, freq_dim=64, ffn_dim=256, num_layers=4,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=256,
    )
    # Wan 2.1's causal VAE (z_dim 16, 4x temporal) with two downsamplings, both also temporal:
    # 4x spatial instead of 8x, at base width 16 instead of 96 (8 reconstructed the shapes as
    # blurs: 18.6 dB). The latent statistics are set by training (latents_mean / latents_std).
    vae = AutoencoderKLWan(
        base_dim=vae_base, z_dim=LATENT_CHANNELS, dim_mult=[1, 2, 4], num_res_blocks=1, attn_scales=[],
        temperal_downsample=[True, True], scale_factor_spatial=4, scale_factor_temporal=4,
        latents_mean=[0.0] * LATENT_CHANNELS, latents_std=[1.0] * LATENT_CHANNELS,
    )
    return WanPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
        scheduler=UniPCMultistepScheduler(**SCHEDULER_CONFIG),
    )


def call_kwargs(steps: int = 50, guidance_scale: float = 5.0) -> dict:
    """The pipe(...) arguments tiny-wan is sampled with by default (WanPipeline's 50 steps and CFG
    5.0; an empty negative prompt, which is what caption dropout trained as the unconditional)."""
    return dict(height=SIZE, width=SIZE, num_frames=FRAMES, num_inference_steps=steps, guidance_scale=guidance_scale,
                negative_prompt="", max_sequence_length=MAX_TOKENS)
