"""Quality loss of accelerated images against the same-seed full-step reference images.

Inputs are float tensors of shape (N, 3, H, W) with values in [0, 1] (what diffusers returns with
``output_type="pt"``), on any device; both batches must have the same shape and device. Every metric
is computed on that device and returns one value per image: a tensor of N (float32, or float64 for
float64 inputs). Half-precision inputs are computed in float32.

Metrics (``METRICS``):

``lpips``  LPIPS v0.1 with the AlexNet trunk (the ``lpips`` package, inputs scaled to [-1, 1]);
           distance, lower is better, 0 for identical images. It needs torchvision's ImageNet
           AlexNet weights (``alexnet-owt-7be5be79.pth`` in ``torch.hub.get_dir()/checkpoints``),
           which torchvision downloads at first use. Without network access that download fails,
           so the file is looked for first and, when absent, ``MetricUnavailable`` is raised and
           no download is attempted. The lpips package ships only its small linear heads.
``psnr``   peak signal-to-noise ratio in dB, data range 1.0; higher is better; ``inf`` for
           identical images (no cap: a cap would hide a real, exact match).
``ssim``   SSIM (Gaussian window 11, sigma 1.5, as torchmetrics); higher is better, 1 for identical.
``gmsd``   the weight-free perceptual loss: Gradient Magnitude Similarity Deviation (Xue, Zhang,
           Mou, Bovik, IEEE TIP 2014). Lower is better, 0 for identical images; range [0, 1] in
           theory (the standard deviation of a similarity map in (0, 1]), about 0.05-0.35 for
           visible distortions. Chosen because it is a published full-reference IQA metric with
           no learned weights that ranks well against human scores (LIVE, CSIQ, TID2013), uses
           only 2x2 averaging and 3x3 Prewitt filters so it works on 32-64 px test images, and
           measures structure (edges), where step-skipping artifacts show. The obvious
           alternative, 1 - MS-SSIM, needs images over 160 px for its standard 5 scales and an
           11 px window; at 64 px it would need a non-standard scale set. GMSD's caveats: it sees
           luminance only (colour shifts count little), and as a *deviation* it can rate an
           image that is uniformly destroyed better than a partly damaged one; it is meant for
           the small-to-moderate deviations of an accelerated sampler from its reference.

``resolve("auto")`` picks ``lpips`` when its weights load and ``gmsd`` otherwise (warning once per
process). Record the name ``resolve`` returns next to every number: the metrics are not comparable.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "ALEXNET_WEIGHTS_FILE",
    "METRICS",
    "WEIGHT_FREE",
    "Metric",
    "MetricFallbackWarning",
    "MetricUnavailable",
    "alexnet_weights_path",
    "gmsd",
    "lpips",
    "psnr",
    "resolve",
    "score",
    "score_all",
    "ssim",
]

#: The file torchvision's AlexNet_Weights.IMAGENET1K_V1 is cached as (basename of its URL).
ALEXNET_WEIGHTS_FILE = "alexnet-owt-7be5be79.pth"
#: The metric ``auto`` falls back to when LPIPS cannot be loaded.
WEIGHT_FREE = "gmsd"


class MetricUnavailable(RuntimeError):
    """A metric that cannot run in this environment (missing package or weights)."""


class MetricFallbackWarning(UserWarning):
    """``resolve("auto")`` fell back from LPIPS to the weight-free metric."""


# --------------------------------------------------------------------------- input checks


def _prepare(images: torch.Tensor, references: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    for name, t in (("images", images), ("references", references)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 4 or t.shape[1] != 3 or t.shape[0] == 0:
            raise ValueError(f"{name}: expected shape (N, 3, H, W) with N >= 1, got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{name}: expected floats in [0, 1], got {t.dtype} (uint8: use x / 255)")
    if images.shape != references.shape:
        raise ValueError(f"shape mismatch: images {tuple(images.shape)} vs references {tuple(references.shape)}")
    if images.device != references.device:
        raise ValueError(f"device mismatch: images on {images.device}, references on {references.device}")
    dtype = torch.float64 if torch.float64 in (images.dtype, references.dtype) else torch.float32
    images, references = images.detach().to(dtype), references.detach().to(dtype)
    for name, t in (("images", images), ("references", references)):
        lo, hi = torch.aminmax(t)
        if not (lo >= 0 and hi <= 1):  # also false for NaN
            raise ValueError(f"{name}: values must lie in [0, 1], got [{lo.item():.4g}, {hi.item():.4g}]"
                             " (images in [-1, 1]: use (x + 1) / 2)")
    return images, references


# --------------------------------------------------------------------------- psnr, ssim


def psnr(images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB (data range 1.0); ``inf`` where an image equals its reference."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    x, y = _prepare(images, references)
    return peak_signal_noise_ratio(x, y, data_range=1.0, reduction="none", dim=(1, 2, 3))


def ssim(images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (torchmetrics defaults: Gaussian 11x11 window, sigma 1.5); needs H, W >= 11.

    Computed in float64 and returned in the inputs' precision.
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    x, y = _prepare(images, references)
    # float64: torchmetrics clamps the variances at 0 but not the covariance, so float32
    # cancellation in flat regions put identical images at ~0.99996 instead of 1.
    value = structural_similarity_index_measure(x.double(), y.double(), data_range=1.0, reduction="none")
    return value.to(x.dtype)


# --------------------------------------------------------------------------- gmsd

#: RGB -> luma weights of MATLAB's rgb2gray, as in the GMSD reference code.
_LUMA = (0.2989, 0.5870, 0.1140)
#: The GMSD stability constant T = 170 for 8-bit images, rescaled to the [0, 1] range.
_GMSD_T = 170.0 / 255.0**2


def gmsd(images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Per-image Gradient Magnitude Similarity Deviation; 0 for identical images, lower is better.

    Follows the authors' MATLAB code: luma, 2x2 average and downsample by 2 (zero padding at odd
    edges), 3x3 Prewitt gradients with zero padding ('same'), similarity map
    ``(2 m1 m2 + T) / (m1^2 + m2^2 + T)``, and its sample standard deviation (MATLAB std2).
    Needs H, W >= 2.
    """
    x, y = _prepare(images, references)
    luma = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    both = torch.cat([x, y]).mul(luma).sum(1, keepdim=True)
    both = F.avg_pool2d(F.pad(both, (0, both.shape[-1] % 2, 0, both.shape[-2] % 2)), 2)
    prewitt = torch.tensor([[1.0, 0.0, -1.0]] * 3, dtype=x.dtype, device=x.device) / 3
    kernels = torch.stack([prewitt, prewitt.T]).unsqueeze(1)  # (2, 1, 3, 3): d/dx, d/dy
    grad = F.conv2d(both, kernels, padding=1)
    magnitude = grad.pow(2).sum(1).sqrt()
    m1, m2 = magnitude.chunk(2)
    similarity = (2 * m1 * m2 + _GMSD_T) / (m1 * m1 + m2 * m2 + _GMSD_T)
    return similarity.flatten(1).std(dim=1, unbiased=True)


# --------------------------------------------------------------------------- lpips

_LPIPS_LOCK = threading.Lock()
_LPIPS_MODELS: dict[tuple[str, str], torch.nn.Module] = {}


def alexnet_weights_path() -> str:
    """Where torchvision looks for (and would download) the AlexNet weights LPIPS needs."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", ALEXNET_WEIGHTS_FILE)


def _lpips_model(device: torch.device) -> torch.nn.Module:
    """The LPIPS(net='alex') module on ``device``: built lazily, once per weights file and device."""
    path = alexnet_weights_path()
    key = (path, str(device))
    with _LPIPS_LOCK:
        if key in _LPIPS_MODELS:
            return _LPIPS_MODELS[key]
        try:
            import lpips as lpips_package
        except ImportError as e:
            raise MetricUnavailable("LPIPS needs the 'lpips' package (pip install lpips); "
                                    f"use --metric auto or --metric {WEIGHT_FREE}") from e
        # torchvision downloads missing weights from download.pytorch.org; without network that
        # fails or hangs, so never let it try.
        if not os.path.isfile(path):
            raise MetricUnavailable(
                "LPIPS (net='alex') needs torchvision's ImageNet AlexNet weights, which are not in "
                f"the torch hub cache: expected {path} (torch.hub.get_dir()/checkpoints/"
                f"{ALEXNET_WEIGHTS_FILE}). torchvision downloads them from download.pytorch.org at "
                "first use, which is not possible here (no network). Place that file there (or point "
                f"TORCH_HOME at a hub cache holding it), or use --metric auto or the weight-free "
                f"--metric {WEIGHT_FREE}.")
        cpu_key = (path, "cpu")
        try:
            if cpu_key in _LPIPS_MODELS:
                model = _LPIPS_MODELS[cpu_key]
            else:
                with warnings.catch_warnings():  # lpips passes torchvision's deprecated pretrained=
                    warnings.simplefilter("ignore", UserWarning)
                    model = lpips_package.LPIPS(pretrained=True, net="alex", verbose=False).eval()
                _LPIPS_MODELS[cpu_key] = model
            if key != cpu_key:
                import copy

                model = copy.deepcopy(model).to(device)
                _LPIPS_MODELS[key] = model
        except MetricUnavailable:
            raise
        except Exception as e:  # a corrupt or foreign file in the hub cache
            raise MetricUnavailable(
                f"LPIPS could not load torchvision's AlexNet weights from {path}: {e}. The file may "
                f"be corrupt or incomplete: replace it, or use --metric auto or --metric {WEIGHT_FREE}."
            ) from e
        return model


def lpips(images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Per-image LPIPS (v0.1, AlexNet trunk); raises MetricUnavailable without the AlexNet weights."""
    x, y = _prepare(images, references)
    model = _lpips_model(x.device)
    with torch.no_grad():
        return model(x.float() * 2 - 1, y.float() * 2 - 1).reshape(-1).to(x.dtype)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    higher_is_better: bool
    #: "dB" for PSNR; "" for the dimensionless ones.
    unit: str
    #: The value for an image identical to its reference.
    perfect: float
    description: str
    needs_weights: bool = False


METRICS: dict[str, Metric] = {
    "lpips": Metric("lpips", lpips, False, "", 0.0,
                    "LPIPS v0.1, AlexNet trunk (needs torchvision's AlexNet weights)", needs_weights=True),
    "psnr": Metric("psnr", psnr, True, "dB", float("inf"), "PSNR, data range 1.0"),
    "ssim": Metric("ssim", ssim, True, "", 1.0, "SSIM, Gaussian window 11, sigma 1.5"),
    "gmsd": Metric("gmsd", gmsd, False, "", 0.0,
                   "Gradient Magnitude Similarity Deviation (weight-free perceptual loss)"),
}

_FALLBACK_WARNED = False


def resolve(metric: str) -> str:
    """The metric name to use and record: ``auto`` -> ``lpips`` if its weights load, else ``gmsd``.

    The fall-back is announced with one MetricFallbackWarning per process. Any other name must be
    a key of METRICS (it is not checked that LPIPS can run: ``score`` raises then).
    """
    global _FALLBACK_WARNED
    if metric == "auto":
        try:
            _lpips_model(torch.device("cpu"))
            return "lpips"
        except MetricUnavailable as e:
            if not _FALLBACK_WARNED:
                _FALLBACK_WARNED = True
                warnings.warn(f"--metric auto: using the weight-free '{WEIGHT_FREE}' instead of "
                              f"'lpips', which is unavailable: {e}", MetricFallbackWarning, stacklevel=2)
            return WEIGHT_FREE
    if not isinstance(metric, str) or metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of: auto, {', '.join(METRICS)}")
    return metric


def score(metric: str, images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Per-image values (tensor of N, on the inputs' device) of ``metric`` (a name or ``auto``)."""
    return METRICS[resolve(metric)].fn(images, references)


def score_all(images: torch.Tensor, references: torch.Tensor,
              metrics: Iterable[str] = ("auto", "psnr", "ssim", WEIGHT_FREE)) -> dict[str, torch.Tensor]:
    """Per-image values of several metrics, keyed by resolved name (duplicates computed once)."""
    names = list(dict.fromkeys(resolve(m) for m in metrics))
    return {name: METRICS[name].fn(images, references) for name in names}
