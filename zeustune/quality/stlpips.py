"""Shift-tolerant LPIPS (ST-LPIPS), AlexNet trunk: our own definition of the network.

ST-LPIPS is LPIPS (Zhang et al., CVPR 2018) retrained from scratch on BAPPS with an AlexNet trunk
made tolerant to small, imperceptible shifts: the first convolution runs at stride 1 instead of 4,
and every downsampling (after it and in place of each max-pool's stride) is an anti-aliasing
blur-pool (Zhang, ICML 2019) that pads by reflection. The score
is the LPIPS recipe: fixed input scaling, channel-normalised features of five layers, squared
differences weighted by learned 1x1 "linear heads", averaged over space and summed over layers.

    A. Ghildyal and F. Liu, "Shift-tolerant Perceptual Similarity Metric", ECCV 2022,
    arXiv:2207.13686; reference code and weights: the ``stlpips-pytorch`` wheel (BSD-2-Clause).

Why a definition of our own: the wheel's modules import IPython (``from IPython import embed``)
and torchsummary at import time, so importing them would make both run-time requirements of
zeustune. The trained weights are shipped inside the wheel
(``stlpips_pytorch/weights/vST0.0/alex_shift_tolerant.pth``), so we locate that file without
importing the package and load it into the network below. The state-dict layout (key names and
shapes) is that of the wheel; ``load`` checks it in full, including the fixed blur filters, so a
different file fails loudly instead of scoring with a mismatched network.

Scores match the wheel's ``LPIPS(net="alex", variant="shift_tolerant")`` (its documented usage:
input scaling on, as in training); see tests/test_metrics.py.
"""

from __future__ import annotations

import importlib.util
import os

import torch
import torch.nn.functional as F
from torch import nn

from .errors import MetricUnavailable

__all__ = ["DISTRIBUTION", "MIN_SIZE", "MODULE", "NOT_INSTALLED", "WEIGHTS_RELPATH", "ShiftTolerantLPIPS",
           "load", "weights_path"]

#: The PyPI distribution and its import name (the weights file lives inside the latter's folder).
DISTRIBUTION = "stlpips-pytorch"
MODULE = "stlpips_pytorch"
#: Where the wheel keeps the AlexNet ST-LPIPS weights, relative to the package folder.
WEIGHTS_RELPATH = ("weights", "vST0.0", "alex_shift_tolerant.pth")

#: Channels of the five compared layers (those of AlexNet).
CHANNELS = (64, 192, 384, 256, 256)
#: The smallest height and width the network accepts: the third blur-pool's reflection pad of 2
#: needs 3 rows, which takes 21 input rows (conv1 -6, blur halves, each max-pool -2).
MIN_SIZE = 21

#: Why st-lpips cannot run when the wheel is missing, and the fix.
NOT_INSTALLED = (f"st-lpips needs the trained weights shipped in the '{DISTRIBUTION}' wheel, which is "
                 f"not installed: pip install {DISTRIBUTION} (only its weights file is read; the "
                 "package is never imported)")


def weights_path() -> str | None:
    """The shipped weights file of an installed ``stlpips-pytorch``, or None; imports nothing.

    ``find_spec`` of a top-level name locates the package without executing it, so neither the
    package nor IPython is imported.
    """
    try:
        spec = importlib.util.find_spec(MODULE)
    except (ImportError, ValueError):
        return None
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(root, *WEIGHTS_RELPATH)
        if os.path.isfile(path):
            return path
    return None


class _BlurPool(nn.Module):
    """Anti-aliased stride-2 downsampling: reflect-pad 2 each side, binomial [1 2 1]^2 / 16 blur.

    The padding of 2 on every side (1 would keep the size) and its reflection rather than zeros
    are the shift-tolerant variant's choices; the shipped weights were trained with them.
    """

    def __init__(self, channels: int):
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = torch.outer(taps, taps) / 16
        self.register_buffer("kernel", kernel.expand(channels, 1, 3, 3).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), self.kernel, stride=2, groups=x.shape[1])


class _Trunk(nn.Module):
    """AlexNet's five convolutions; all downsampling is by blur-pools, convolutions and max-pools
    run at stride 1. Returns the five ReLU outputs LPIPS compares."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 11, stride=1, padding=2)  # AlexNet: stride 4
        self.blur1 = _BlurPool(64)  # before the ReLU: the first layer's features are blurred
        self.blur2 = _BlurPool(64)  # after a stride-1 max-pool: the pool's stride 2, anti-aliased
        self.conv2 = nn.Conv2d(64, 192, 5, padding=2)
        self.blur3 = _BlurPool(192)
        self.conv3 = nn.Conv2d(192, 384, 3, padding=1)
        self.conv4 = nn.Conv2d(384, 256, 3, padding=1)
        self.conv5 = nn.Conv2d(256, 256, 3, padding=1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = F.relu(self.blur1(self.conv1(x)))
        f2 = F.relu(self.conv2(self.blur2(F.max_pool2d(f1, 3, stride=1))))
        f3 = F.relu(self.conv3(self.blur3(F.max_pool2d(f2, 3, stride=1))))
        f4 = F.relu(self.conv4(f3))
        f5 = F.relu(self.conv5(f4))
        return [f1, f2, f3, f4, f5]


class ShiftTolerantLPIPS(nn.Module):
    """ST-LPIPS distance (AlexNet); ``forward(x, y)`` takes (N, 3, H, W) in [-1, 1], returns (N,).

    Needs H, W >= MIN_SIZE (below that a reflection pad exceeds its input).
    """

    def __init__(self):
        super().__init__()
        # LPIPS' input scaling (ImageNet statistics in [-1, 1] units); loaded from the file.
        self.register_buffer("shift", torch.zeros(1, 3, 1, 1))
        self.register_buffer("scale", torch.ones(1, 3, 1, 1))
        self.trunk = _Trunk()
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.trunk((x - self.shift) / self.scale)
        # Unit length along channels (eps as LPIPS), so only the feature direction counts.
        return [f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10) for f in feats]

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # Two passes, not one on torch.cat([x, y]): identical inputs then go through identical
        # arithmetic, so an image scores exactly 0 against itself (and a reference's features can
        # be kept and reused: distance(features(x), kept) is this same arithmetic).
        return self.distance(self.features(x), self.features(y))

    def distance(self, fx: list[torch.Tensor], fy: list[torch.Tensor]) -> torch.Tensor:
        total = 0
        for head, a, b in zip(self.heads, fx, fy):
            total = total + head((a - b).pow(2)).mean(dim=(2, 3))
        return total.reshape(-1)


# The wheel's state-dict key -> ours. Its trunk is an nn.Sequential cut into five slices, so the
# indices count every layer (convolutions, blur-pools, ReLUs, max-pools) from 0.
_KEYS = {
    "scaling_layer.shift": "shift",
    "scaling_layer.scale": "scale",
    "net.slice1.0.weight": "trunk.conv1.weight",
    "net.slice1.0.bias": "trunk.conv1.bias",
    "net.slice1.1.filt": "trunk.blur1.kernel",
    "net.slice2.4.filt": "trunk.blur2.kernel",
    "net.slice2.5.weight": "trunk.conv2.weight",
    "net.slice2.5.bias": "trunk.conv2.bias",
    "net.slice3.8.filt": "trunk.blur3.kernel",
    "net.slice3.9.weight": "trunk.conv3.weight",
    "net.slice3.9.bias": "trunk.conv3.bias",
    "net.slice4.11.weight": "trunk.conv4.weight",
    "net.slice4.11.bias": "trunk.conv4.bias",
    "net.slice5.13.weight": "trunk.conv5.weight",
    "net.slice5.13.bias": "trunk.conv5.bias",
    **{f"lin{i}.model.1.weight": f"heads.{i}.weight" for i in range(len(CHANNELS))},
}
_FIXED = ("trunk.blur1.kernel", "trunk.blur2.kernel", "trunk.blur3.kernel")


def load(path: str | None = None) -> ShiftTolerantLPIPS:
    """ST-LPIPS on the CPU in eval mode, with the wheel's weights (``path``: default, its file).

    Raises MetricUnavailable when the wheel is not installed or the file is not what we expect.
    """
    path = path or weights_path()
    if path is None:
        raise MetricUnavailable(NOT_INSTALLED)
    model = ShiftTolerantLPIPS()
    try:
        shipped = torch.load(path, map_location="cpu", weights_only=True)
        if set(shipped) != set(_KEYS):
            raise ValueError(f"keys missing or unexpected: {sorted(set(shipped) ^ set(_KEYS))}")
        state = {_KEYS[k]: v for k, v in shipped.items()}
        ours = model.state_dict()
        for name in _FIXED:  # not learned: the file must hold exactly our blur filters
            if not torch.equal(state[name], ours[name]):
                raise ValueError(f"{name}: the blur filter differs from the binomial [1 2 1]^2 / 16")
        model.load_state_dict(state, strict=True)  # also checks every shape
    except Exception as e:
        raise MetricUnavailable(f"st-lpips could not load its weights from {path}: {e}. Reinstall "
                                f"{DISTRIBUTION} (pip install --force-reinstall {DISTRIBUTION}).") from e
    return model.eval().requires_grad_(False)
