"""Tiny, randomly initialised diffusers pipelines for tests.

A denoiser hook has to be tested on several pipeline families (FLUX, SD3,
SDXL, SD, Wan), each with its own way of calling the denoiser: true CFG as two
calls per step, batched CFG as one call, UNet vs. transformer, images vs.
video.  Real checkpoints are gigabytes and need the model hub, so this module
builds each pipeline offline from small configs of the real diffusers classes,
with seeded random weights.  Text encoders and tokenizers are left out
(``None``); random prompt embeddings of the right shapes are passed instead.
Everything runs in float32 on the CPU and samples ten steps in a fraction of a
second.

    tiny = build("flux")
    latents = tiny(steps=10, seed=0)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLWan,
    DDIMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
    UniPCMultistepScheduler,
    WanPipeline,
    WanTransformer3DModel,
)

from .tinyflux.model import SCHEDULER_CONFIG as FLUX_SCHEDULER_CONFIG  # FLUX.1-dev's

FAMILIES: tuple[str, ...] = ("flux", "sd3", "sdxl", "sd", "wan")

# Scheduler names accepted per family; the first one is the default.
SCHEDULERS: dict[str, tuple[str, ...]] = {
    "flux": ("flow-euler",),
    "sd3": ("flow-euler",),
    "sdxl": ("euler", "dpm++", "ddim"),
    "sd": ("euler", "dpm++", "ddim"),
    "wan": ("unipc",),
}
PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "v_prediction", "sample")

TEXT_LEN = 8  # tokens in the random prompt embeddings
IMAGE_SIZE = 32  # pixels; the 2-level tiny VAE makes this a 16x16 latent
WAN_SIZE, WAN_FRAMES = 64, 5  # Wan's VAE is 8x spatial, 4x temporal: 2x8x8 latent


@dataclass
class TinyPipeline:
    family: str
    pipe: DiffusionPipeline = field(repr=False)
    # Everything pipe(...) needs besides num_inference_steps and generator.
    call_kwargs: dict = field(repr=False)
    # Denoiser calls per sampling step with call_kwargs (2 for two-call CFG).
    calls_per_step: int

    def __call__(self, steps: int, seed: int = 0, **overrides) -> torch.Tensor:
        """Sample `steps` steps and return the output latents."""
        kwargs = {**self.call_kwargs, **overrides}
        generator = torch.Generator("cpu").manual_seed(seed)
        out = self.pipe(num_inference_steps=steps, generator=generator, return_dict=False, **kwargs)
        return out[0]  # .images / .frames, which are the latents for output_type="latent"


def build(
    family: str,
    *,
    scheduler: str | None = None,
    prediction_type: str | None = None,
    cfg: bool = True,
    seed: int = 0,
) -> TinyPipeline:
    """Build a tiny pipeline of `family`; same arguments give identical weights and outputs."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    allowed = SCHEDULERS[family]
    scheduler = scheduler or allowed[0]
    if scheduler not in allowed:
        raise ValueError(f"unknown scheduler {scheduler!r} for family {family!r}; expected one of {allowed}")
    if prediction_type is not None:
        if family not in ("sdxl", "sd"):
            raise ValueError(f"prediction_type applies to the UNet families (sdxl, sd), not {family!r}")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unknown prediction_type {prediction_type!r}; expected one of {PREDICTION_TYPES}")

    # Seed locally so that building does not disturb the caller's global RNG.
    with torch.random.fork_rng(devices=[]):
        if family == "flux":
            tiny = _flux(cfg, seed)
        elif family == "sd3":
            tiny = _sd3(cfg, seed)
        elif family == "wan":
            tiny = _wan(cfg, seed)
        else:
            tiny = _unet_family(family, scheduler, prediction_type, cfg, seed)
    tiny.pipe.set_progress_bar_config(disable=True)
    return tiny


def _seeded(seed: int, cls, **config):
    """Construct one module right after torch.manual_seed(seed), in eval mode (float32 by default)."""
    torch.manual_seed(seed)
    return cls(**config).eval()


def _embeds(seed: int, *shapes: tuple[int, ...]) -> list[torch.Tensor]:
    """Random prompt embeddings, drawn in order from one seeded generator."""
    gen = torch.Generator("cpu").manual_seed(seed)
    return [torch.randn(shape, generator=gen) for shape in shapes]


def _vae(seed: int, **extra) -> AutoencoderKL:
    # Two levels: 2x spatial downsampling, 4 latent channels. Never run (latent output).
    return _seeded(
        seed,
        AutoencoderKL,
        block_out_channels=(8, 8),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=IMAGE_SIZE,
        **extra,
    )


def _flux(cfg: bool, seed: int) -> TinyPipeline:
    transformer = _seeded(
        seed,
        FluxTransformer2DModel,
        in_channels=16,  # 4 latent channels packed 2x2
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=True,  # FLUX.1-dev style distilled guidance
        axes_dims_rope=(4, 6, 6),  # must sum to attention_head_dim
    )
    vae = _vae(seed, use_quant_conv=False, use_post_quant_conv=False, scaling_factor=0.3611, shift_factor=0.1159)
    sched = FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER_CONFIG)
    pipe = FluxPipeline(
        scheduler=sched,
        vae=vae,
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        transformer=transformer,
    )
    # T5 sequence embeds (B, L, joint_attention_dim), CLIP pooled (B, pooled_projection_dim).
    pe, pooled, neg, neg_pooled = _embeds(seed, (1, TEXT_LEN, 32), (1, 32), (1, TEXT_LEN, 32), (1, 32))
    kwargs = dict(
        prompt_embeds=pe,
        pooled_prompt_embeds=pooled,
        height=IMAGE_SIZE,
        width=IMAGE_SIZE,
        guidance_scale=3.5,
        output_type="latent",
    )
    if cfg:
        # True CFG: a second transformer call per step under cache_context("uncond").
        kwargs.update(true_cfg_scale=4.0, negative_prompt_embeds=neg, negative_pooled_prompt_embeds=neg_pooled)
    return TinyPipeline("flux", pipe, kwargs, 2 if cfg else 1)


def _sd3(cfg: bool, seed: int) -> TinyPipeline:
    transformer = _seeded(
        seed,
        SD3Transformer2DModel,
        sample_size=IMAGE_SIZE // 2,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=32,
        caption_projection_dim=32,  # must equal heads * head_dim
        pooled_projection_dim=64,
        pos_embed_max_size=16,
    )
    vae = _vae(seed, use_quant_conv=False, use_post_quant_conv=False, scaling_factor=1.5305, shift_factor=0.0609)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),  # SD3-medium's config
        vae=vae,
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        text_encoder_3=None,
        tokenizer_3=None,
    )
    # (CLIP-L|CLIP-G padded) ++ T5 along the sequence: (B, L, joint_attention_dim);
    # pooled CLIP-L ++ CLIP-G: (B, pooled_projection_dim).
    pe, pooled, neg, neg_pooled = _embeds(seed, (1, TEXT_LEN, 32), (1, 64), (1, TEXT_LEN, 32), (1, 64))
    kwargs = dict(
        prompt_embeds=pe,
        pooled_prompt_embeds=pooled,
        height=IMAGE_SIZE,
        width=IMAGE_SIZE,
        guidance_scale=5.0 if cfg else 1.0,  # CFG is batched: still one call per step
        output_type="latent",
    )
    if cfg:
        kwargs.update(negative_prompt_embeds=neg, negative_pooled_prompt_embeds=neg_pooled)
    return TinyPipeline("sd3", pipe, kwargs, 1)


def _unet_scheduler(name: str, prediction_type: str):
    # SD/SDXL betas; "leading" spacing with steps_offset=1 as in their configs.
    common = dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
        prediction_type=prediction_type,
    )
    if name == "euler":
        return EulerDiscreteScheduler(**common)
    if name == "dpm++":
        return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2)
    return DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=False)


def _unet_family(family: str, scheduler: str, prediction_type: str | None, cfg: bool, seed: int) -> TinyPipeline:
    sched = _unet_scheduler(scheduler, prediction_type or ("epsilon" if family == "sdxl" else "v_prediction"))
    common = dict(
        sample_size=IMAGE_SIZE // 2,
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=(2, 4),  # number of heads per level (diffusers' legacy naming)
        use_linear_projection=True,
    )
    if family == "sdxl":
        text_dim, pooled_dim, time_dim = 64, 32, 8
        unet = _seeded(
            seed,
            UNet2DConditionModel,
            **common,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2),
            cross_attention_dim=text_dim,
            addition_embed_type="text_time",
            addition_time_embed_dim=time_dim,
            # 6 size/crop ids, each embedded to time_dim, plus the pooled text embedding.
            projection_class_embeddings_input_dim=6 * time_dim + pooled_dim,
        )
        pipe = StableDiffusionXLPipeline(
            vae=_vae(seed, scaling_factor=0.13025),
            text_encoder=None,
            text_encoder_2=None,
            tokenizer=None,
            tokenizer_2=None,
            unet=unet,
            scheduler=sched,
            add_watermarker=False,
        )
        # CLIP-L ++ CLIP-G hidden states along features: (B, L, cross_attention_dim); pooled CLIP-G: (B, pooled_dim).
        pe, pooled, neg, neg_pooled = _embeds(
            seed, (1, TEXT_LEN, text_dim), (1, pooled_dim), (1, TEXT_LEN, text_dim), (1, pooled_dim)
        )
        kwargs = dict(prompt_embeds=pe, pooled_prompt_embeds=pooled)
        if cfg:
            kwargs.update(negative_prompt_embeds=neg, negative_pooled_prompt_embeds=neg_pooled)
    else:
        text_dim = 32
        unet = _seeded(
            seed,
            UNet2DConditionModel,
            **common,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=text_dim,
        )
        pipe = StableDiffusionPipeline(
            vae=_vae(seed),
            text_encoder=None,
            tokenizer=None,
            unet=unet,
            scheduler=sched,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pe, neg = _embeds(seed, (1, TEXT_LEN, text_dim), (1, TEXT_LEN, text_dim))
        kwargs = dict(prompt_embeds=pe)
        if cfg:
            kwargs.update(negative_prompt_embeds=neg)
    kwargs.update(
        height=IMAGE_SIZE,
        width=IMAGE_SIZE,
        guidance_scale=5.0 if cfg else 1.0,  # CFG is batched: one UNet call per step
        output_type="latent",
    )
    return TinyPipeline(family, pipe, kwargs, 1)


def _wan(cfg: bool, seed: int) -> TinyPipeline:
    text_dim = 32
    transformer = _seeded(
        seed,
        WanTransformer3DModel,
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,  # split 4/4/4 over the t/h/w rotary axes
        in_channels=16,
        out_channels=16,
        text_dim=text_dim,
        freq_dim=32,
        ffn_dim=32,
        num_layers=2,
        rope_max_seq_len=32,
    )
    # 4 levels (8x spatial, 4x temporal as in the config's scale factors), 3 base channels.
    vae = _seeded(
        seed,
        AutoencoderKLWan,
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )
    # Wan2.1's scheduler: UniPC on flow-matching sigmas (flow_shift 3.0 for 480p).
    sched = UniPCMultistepScheduler(
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=3.0,
        num_train_timesteps=1000,
        solver_order=2,
    )
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=vae, scheduler=sched, transformer=transformer)
    # UMT5 hidden states: (B, L, text_dim).
    pe, neg = _embeds(seed, (1, TEXT_LEN, text_dim), (1, TEXT_LEN, text_dim))
    kwargs = dict(
        prompt_embeds=pe,
        height=WAN_SIZE,
        width=WAN_SIZE,
        num_frames=WAN_FRAMES,
        guidance_scale=5.0 if cfg else 1.0,
        output_type="latent",
    )
    if cfg:
        # Two transformer calls per step, under cache_context("cond") / ("uncond").
        kwargs.update(negative_prompt_embeds=neg)
    return TinyPipeline("wan", pipe, kwargs, 2 if cfg else 1)
