"""FLUX's packed latents: 2x2 latent patches as tokens on a grid, and back.

A FLUX denoiser call takes ``hidden_states`` (B, h*w, 4C), the latent (B, C, 2h, 2w) cut into 2x2
patches, and ``img_ids`` (h*w, 3): per token (0, row, column), which RoPE reads. Changing the
resolution means a new grid and new ids; the model itself takes any grid.
"""

from __future__ import annotations

import torch


def grid_of(ids: torch.Tensor) -> tuple[int, int]:
    """Rows and columns of the token grid ``img_ids`` lays out."""
    ids = ids[0] if ids.ndim == 3 else ids
    return int(ids[:, 1].max()) + 1, int(ids[:, 2].max()) + 1


def unpack(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, h*w, 4C) tokens -> (B, C, 2h, 2w) latent."""
    b, n, d = tokens.shape
    if n != h * w or d % 4:
        raise ValueError(f"tokens: got shape {tuple(tokens.shape)}, expected (B, {h}*{w}, 4*C) for a {h}x{w} grid")
    c = d // 4
    return tokens.reshape(b, h, w, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, 2 * h, 2 * w)


def pack(latent: torch.Tensor) -> torch.Tensor:
    """(B, C, 2h, 2w) latent -> (B, h*w, 4C) tokens (the inverse of :func:`unpack`)."""
    b, c, hh, ww = latent.shape
    if hh % 2 or ww % 2:
        raise ValueError(f"latent: got sides {hh}x{ww}, expected even sides (2x2 patches)")
    h, w = hh // 2, ww // 2
    return latent.reshape(b, c, h, 2, w, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, h * w, 4 * c)


def ids(h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """``img_ids`` of an h x w grid, shaped, typed and placed like ``like`` ((h*w, 3) or (B, h*w, 3))."""
    out = torch.zeros(h, w, 3, dtype=like.dtype, device=like.device)
    out[..., 1] = torch.arange(h, dtype=like.dtype, device=like.device)[:, None]
    out[..., 2] = torch.arange(w, dtype=like.dtype, device=like.device)[None, :]
    out = out.reshape(h * w, 3)
    return out.expand(like.shape[0], -1, -1) if like.ndim == 3 else out
