"""tiny-flux's architecture: FLUX.1's components at toy size, and tokenizers built from captions.

Every component is the class FLUX.1-dev uses (CLIP and T5 text encoders with their tokenizers,
FluxTransformer2DModel, AutoencoderKL, FlowMatchEulerDiscreteScheduler with FLUX's shift
settings), so the saved folder loads with ``FluxPipeline.from_pretrained`` and takes plain text
prompts exactly like the real model. scripts/train_tiny_flux.py trains it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5TokenizerFast

IMAGE_SIZE = 64  # pixels; the VAE downsamples 4x, FLUX packs 2x2 latent patches: 8x8 = 64 tokens
MAX_TOKENS = 32  # text tokens for both encoders (FluxPipeline: max_sequence_length=32)
TEXT_DIM = 64

#: FLUX.1-dev's scheduler settings (dynamic shifting by image sequence length).
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    shift=3.0,
    use_dynamic_shifting=True,
    base_shift=0.5,
    max_shift=1.15,
    base_image_seq_len=256,
    max_image_seq_len=4096,
)

_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"


def _words(captions: Iterable[str]) -> list[str]:
    return [c.lower() for c in captions]


def build_tokenizers(captions: Iterable[str]) -> tuple[CLIPTokenizer, T5TokenizerFast]:
    """A CLIP-style byte-level BPE and a T5-style unigram tokenizer whose vocabularies hold every
    caption word whole; other text still tokenizes (bytes / characters, or <unk> for T5)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    corpus = _words(captions)
    alphabet = list(bytes_to_unicode().values())
    merges = _learn_bpe(Counter(w for text in corpus for w in _split(text)))
    vocab = {c: i for i, c in enumerate(alphabet)}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    for c in alphabet:  # a word may end in any byte
        vocab.setdefault(c + "</w>", len(vocab))
    for special in (_BOS, _EOS):
        vocab.setdefault(special, len(vocab))
    clip = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_TOKENS)
    return clip, build_t5_tokenizer(corpus, MAX_TOKENS)


def build_t5_tokenizer(captions: Iterable[str], max_tokens: int) -> T5TokenizerFast:
    """A T5-style unigram tokenizer (pad 0, EOS 1, as T5 and UMT5 expect) whose vocabulary holds
    every caption word whole; other text is spelled out in characters, or <unk>."""
    words = sorted({w for text in _words(captions) for w in _split(text)})
    chars = sorted({ch for w in words for ch in w} | set("abcdefghijklmnopqrstuvwxyz0123456789"))
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -6.0)]
    pieces += [("\u2581" + w, -1.0) for w in words]  # whole words win over spelled-out ones
    pieces += [(ch, -8.0) for ch in chars]
    return T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=max_tokens)


def _split(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+|[^\sa-z0-9]", text)


def _learn_bpe(word_counts: Counter) -> list[tuple[str, str]]:
    """Byte-pair merges (CLIP style, ``</w>`` ending a word) until every word is one token.

    Written out rather than taken from the tokenizers trainer because that one breaks ties
    between equally frequent pairs differently from run to run; here the most frequent pair wins
    and ties go to the lexicographically smallest, so the vocabulary is reproducible.
    """
    words = {tuple(w[:-1]) + (w[-1] + "</w>",): n for w, n in word_counts.items()}
    merges = []
    while True:
        pairs = Counter()
        for symbols, n in words.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += n
        if not pairs:
            return merges
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        words = {_merge(symbols, best): n for symbols, n in words.items()}


def _merge(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


def build_pipeline(clip_tokenizer: CLIPTokenizer, t5_tokenizer: T5TokenizerFast, seed: int = 0) -> FluxPipeline:
    """Untrained tiny-flux components (seeded), assembled into a FluxPipeline."""
    torch.manual_seed(seed)
    eos = clip_tokenizer.convert_tokens_to_ids(_EOS)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(clip_tokenizer), hidden_size=TEXT_DIM, intermediate_size=2 * TEXT_DIM,
            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=MAX_TOKENS,
            bos_token_id=clip_tokenizer.convert_tokens_to_ids(_BOS), eos_token_id=eos, pad_token_id=eos,
        )
    )
    text_encoder_2 = T5EncoderModel(
        T5Config(
            vocab_size=len(t5_tokenizer), d_model=TEXT_DIM, d_kv=16, d_ff=2 * TEXT_DIM, num_layers=2,
            num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=MAX_TOKENS,
            dropout_rate=0.0, feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1,
            is_encoder_decoder=False, use_cache=False,
        )
    )
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=32,
        num_attention_heads=3, joint_attention_dim=TEXT_DIM, pooled_projection_dim=TEXT_DIM,
        guidance_embeds=False, axes_dims_rope=(8, 12, 12),
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 16, 32), layers_per_block=1,
        latent_channels=4, norm_num_groups=8, sample_size=IMAGE_SIZE, use_quant_conv=False,
        use_post_quant_conv=False, scaling_factor=1.0, shift_factor=0.0,
    )
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG),
        vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer,
        text_encoder_2=text_encoder_2, tokenizer_2=t5_tokenizer, transformer=transformer,
    )
