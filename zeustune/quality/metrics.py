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
``st-lpips`` shift-tolerant LPIPS, AlexNet trunk (Ghildyal & Liu, ECCV 2022): LPIPS retrained
           with anti-aliased (blur-pool) downsampling, so moving an image by a pixel, which a
           viewer hardly notices, costs far less than slight noise, while noise and blur still
           count. Distance, lower is better, 0 for identical images; needs H, W >= 21. Its
           weights ship inside the ``stlpips-pytorch`` wheel (a dependency), so it runs without
           network access; the network is defined in ``zeustune.stlpips`` (the wheel's own
           modules import IPython), and ``MetricUnavailable`` is raised when the wheel is not
           installed. On CUDA its convolutions follow torch's cuDNN TF32 setting (on by default).
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

``st-lpips-video`` for clips (N, F, 3, H, W): st-lpips averaged over the frames plus
           :func:`temporal_error`, the mean absolute error of the frame-to-frame differences
           against the reference clip (flicker and wrong motion, which per-frame scores miss: a
           clip off by the same amount in every frame scores 0 there). Both parts are distances
           in about the same range for the small deviations of an accelerated sampler, so they
           are added with weight 1. The other metrics take clips too: their per-frame values are
           averaged per clip (``score``, ``score_all``).

``resolve("auto")`` picks ``lpips`` when its weights load, else ``st-lpips`` when its weights load,
else ``gmsd``; a fall-back is announced once per process (MetricFallbackWarning, naming the metric
picked and why); ``resolve("auto", video=True)`` picks ``st-lpips-video`` when st-lpips
loads, else ``gmsd`` per frame. Record the name ``resolve`` returns next to every number: the metrics are not
comparable. ``rank_agreement`` compares how metrics order the same images (Spearman's rho).
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import stlpips as st
from .errors import MetricUnavailable
from .stlpips import MIN_SIZE

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
    "rank_agreement",
    "require",
    "resolve",
    "score",
    "score_all",
    "ssim",
    "st_lpips",
    "st_lpips_video",
    "temporal_error",
]

#: The file torchvision's AlexNet_Weights.IMAGENET1K_V1 is cached as (basename of its URL).
ALEXNET_WEIGHTS_FILE = "alexnet-owt-7be5be79.pth"
#: The metric ``auto`` falls back to when neither LPIPS nor ST-LPIPS can be loaded.
WEIGHT_FREE = "gmsd"


class MetricFallbackWarning(UserWarning):
    """``resolve("auto")`` fell back from LPIPS to ST-LPIPS or to the weight-free metric."""


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
                f"TORCH_HOME at a hub cache holding it), or use --metric auto, --metric st-lpips "
                f"(weights shipped in its wheel) or the weight-free --metric {WEIGHT_FREE}.")
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


# --------------------------------------------------------------------------- st-lpips

_STLPIPS_LOCK = threading.Lock()
_STLPIPS_MODELS: dict[tuple[str, str], torch.nn.Module] = {}


def _stlpips_model(device: torch.device) -> torch.nn.Module:
    """ST-LPIPS on ``device``: loaded lazily, once per weights file and device."""
    path = st.weights_path()
    if path is None:
        raise MetricUnavailable(st.NOT_INSTALLED)
    key = (path, str(device))
    with _STLPIPS_LOCK:
        if key not in _STLPIPS_MODELS:
            cpu_key = (path, "cpu")
            if cpu_key not in _STLPIPS_MODELS:
                _STLPIPS_MODELS[cpu_key] = st.load(path)
            if key != cpu_key:
                import copy

                _STLPIPS_MODELS[key] = copy.deepcopy(_STLPIPS_MODELS[cpu_key]).to(device)
        return _STLPIPS_MODELS[key]


def st_lpips(images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Per-image shift-tolerant LPIPS (AlexNet); needs H, W >= 21; raises MetricUnavailable
    without the ``stlpips-pytorch`` wheel (which ships the weights)."""
    return st_lpips_kept(images, references)[0]


def st_lpips_kept(images: torch.Tensor, references: torch.Tensor, kept: list | None = None) -> tuple[torch.Tensor, list]:
    """:func:`st_lpips` and the references' features; given ``kept`` (the features this returned
    for exactly these references), they are not computed again: the values are identical, and a
    search scoring many candidates against fixed references does half the network's work."""
    x, y = _prepare(images, references)
    if min(x.shape[-2:]) < MIN_SIZE:
        raise ValueError(f"st-lpips needs images of at least {MIN_SIZE}x{MIN_SIZE} px, got {tuple(x.shape[-2:])}")
    model = _stlpips_model(x.device)
    with torch.no_grad():
        fy = kept if kept is not None else model.features(y.float() * 2 - 1)
        return model.distance(model.features(x.float() * 2 - 1), fy).to(x.dtype), fy


# --------------------------------------------------------------------------- video


def _frames(videos: torch.Tensor, references: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips (N, F, 3, H, W) as their frames (N * F, 3, H, W), both checked."""
    for name, t in (("videos", videos), ("references", references)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 5 or t.shape[2] != 3 or t.shape[0] == 0 or t.shape[1] < 2:
            raise ValueError(f"{name}: expected clips of shape (N, F, 3, H, W) with N >= 1 and F >= 2, got {tuple(t.shape)}")
    if videos.shape != references.shape:
        raise ValueError(f"shape mismatch: videos {tuple(videos.shape)} vs references {tuple(references.shape)}")
    return videos.flatten(0, 1), references.flatten(0, 1)


def temporal_error(videos: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Per clip: the mean absolute error of frame-to-frame differences against the reference
    clip's, in [0, 2]; 0 for a clip whose error is the same in every frame."""
    x, y = _prepare(*_frames(videos, references))
    x, y = x.view(videos.shape), y.view(references.shape)
    return (x.diff(dim=1) - y.diff(dim=1)).abs().mean(dim=(1, 2, 3, 4))


def st_lpips_video(videos: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Per clip: st-lpips averaged over the frames plus :func:`temporal_error`."""
    n, f = videos.shape[:2] if videos.ndim == 5 else (0, 0)
    frames = st_lpips(*_frames(videos, references))
    return frames.view(n, f).mean(dim=1) + temporal_error(videos, references).to(frames.dtype)


def _per_clip(name: str, images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """An image metric's values per clip (the mean over frames) when given clips."""
    metric = METRICS[name]
    if images.ndim != 5 or metric.video:
        return metric.fn(images, references)
    values = metric.fn(*_frames(images, references)).view(images.shape[:2])
    return values.mean(dim=1)  # PSNR: inf for an exact frame, as for an exact image


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
    #: Takes clips (N, F, 3, H, W) only.
    video: bool = False


METRICS: dict[str, Metric] = {
    "lpips": Metric("lpips", lpips, False, "", 0.0,
                    "LPIPS v0.1, AlexNet trunk (needs torchvision's AlexNet weights)", needs_weights=True),
    "psnr": Metric("psnr", psnr, True, "dB", float("inf"), "PSNR, data range 1.0"),
    "ssim": Metric("ssim", ssim, True, "", 1.0, "SSIM, Gaussian window 11, sigma 1.5"),
    "gmsd": Metric("gmsd", gmsd, False, "", 0.0,
                   "Gradient Magnitude Similarity Deviation (weight-free perceptual loss)"),
    # Last, so the listing of the older names keeps its order.
    "st-lpips": Metric("st-lpips", st_lpips, False, "", 0.0,
                       "shift-tolerant LPIPS, AlexNet trunk (weights in the stlpips-pytorch wheel)",
                       needs_weights=True),
    "st-lpips-video": Metric("st-lpips-video", st_lpips_video, False, "", 0.0,
                             "st-lpips averaged over frames plus the error of frame-to-frame differences",
                             needs_weights=True, video=True),
}

_FALLBACK_WARNED = False


def resolve(metric: str, video: bool = False) -> str:
    """The metric name to use and record: ``auto`` -> ``lpips`` if its weights load, else
    ``st-lpips`` if its weights load, else ``gmsd``; for a video model (``video``) ``auto`` ->
    ``st-lpips-video`` if st-lpips loads, else ``gmsd`` (per frame).

    A fall-back is announced with one MetricFallbackWarning per process. Any other name must be
    a key of METRICS (it is not checked that a weighted metric can run: ``score`` raises then).
    """
    global _FALLBACK_WARNED
    if metric == "auto" and video:
        try:
            _stlpips_model(torch.device("cpu"))
            return "st-lpips-video"
        except MetricUnavailable as e:
            if not _FALLBACK_WARNED:
                _FALLBACK_WARNED = True
                warnings.warn(f"--metric auto: using the weight-free '{WEIGHT_FREE}' per frame instead of "
                              f"'st-lpips-video', because {e}", MetricFallbackWarning, stacklevel=2)
            return WEIGHT_FREE
    if metric == "auto":
        try:
            _lpips_model(torch.device("cpu"))
            return "lpips"
        except MetricUnavailable as e:
            no_lpips = e
        try:
            _stlpips_model(torch.device("cpu"))
            picked, why = "st-lpips", f"'lpips' is unavailable: {no_lpips}"
        except MetricUnavailable as e:
            picked, why = WEIGHT_FREE, f"'lpips' is unavailable: {no_lpips}; 'st-lpips' is unavailable: {e}"
        if not _FALLBACK_WARNED:
            _FALLBACK_WARNED = True
            kind = "the weight-free " if picked == WEIGHT_FREE else ""
            warnings.warn(f"--metric auto: using {kind}'{picked}' instead of 'lpips', because {why}",
                          MetricFallbackWarning, stacklevel=2)
        return picked
    if not isinstance(metric, str) or metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of: auto, {', '.join(METRICS)}")
    return metric


def require(metric: str, video: bool = False) -> str:
    """:func:`resolve`, and for a weighted metric named explicitly, a ValueError naming ``--metric``
    when its weights cannot load: commands check it at their start, not at the first score after
    the model loaded and the references rendered."""
    if not isinstance(metric, str) or (metric != "auto" and metric not in METRICS):
        raise ValueError(f"--metric: got {metric!r}, expected one of auto, {', '.join(METRICS)}")
    name = resolve(metric, video)
    if METRICS[name].video and not video:
        raise ValueError(f"--metric: got {metric!r}, expected a metric for images ({name} scores video clips)")
    loaders = {"lpips": _lpips_model, "st-lpips": _stlpips_model, "st-lpips-video": _stlpips_model}
    if name in loaders:
        try:
            loaders[name](torch.device("cpu"))
        except MetricUnavailable as e:
            first = str(e).split(". ")[0].rstrip(".")  # what is missing; the rest is advice given here
            first = first.rsplit(" (", 1)[0] if first.endswith(")") else first
            raise ValueError(f"--metric: got {metric!r}, expected a metric that can run here ({first}); "
                             f"use --metric auto or the weight-free --metric {WEIGHT_FREE}") from None
    return name


def score(metric: str, images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Per-image values (tensor of N, on the inputs' device) of ``metric`` (a name or ``auto``);
    given clips (N, F, 3, H, W), per-clip values (an image metric's mean over the frames)."""
    return _per_clip(resolve(metric, video=images.ndim == 5), images, references)


def score_all(images: torch.Tensor, references: torch.Tensor,
              metrics: Iterable[str] = ("auto", "psnr", "ssim", WEIGHT_FREE)) -> dict[str, torch.Tensor]:
    """Per-image values of several metrics, keyed by resolved name (duplicates computed once)."""
    names = list(dict.fromkeys(resolve(m, video=images.ndim == 5) for m in metrics))
    return {name: _per_clip(name, images, references) for name in names}


# --------------------------------------------------------------------------- agreement


def _average_ranks(a: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (as scipy.stats.rankdata)."""
    order = np.argsort(a, kind="stable")
    ordered = a[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(a)]  # exclusive
    group = np.repeat(np.arange(len(starts)), ends - starts)
    ranks = np.empty(len(a))
    ranks[order] = ((starts + 1 + ends) / 2)[group]  # mean of ranks starts+1 .. ends
    return ranks


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    try:
        from scipy.stats import spearmanr
    except ImportError:
        ra, rb = _average_ranks(a) - (len(a) + 1) / 2, _average_ranks(b) - (len(b) + 1) / 2
        denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
        return float((ra * rb).sum() / denom) if denom > 0 else float("nan")
    if (a == a[0]).all() or (b == b[0]).all():  # undefined; scipy would warn and give nan
        return float("nan")
    return float(spearmanr(a, b).statistic)


def rank_agreement(values: dict[str, list[float]], against: str) -> dict[str, float]:
    """Spearman's rank correlation of metric ``against`` with each other metric, over rows.

    ``values`` maps METRICS names to one value per row (image, trial, ...), all of one length.
    Higher-is-better metrics (psnr, ssim) are negated first, so every column is a loss and
    agreement is positive. Ties share their average rank; ``inf`` (psnr of an exact match) ranks
    as the largest value. A constant column gives ``nan``. Uses scipy when it is importable.
    """
    if against not in values:
        raise ValueError(f"against={against!r} is not a key of values ({', '.join(values)})")
    columns = {}
    for name, column in values.items():
        if name not in METRICS:
            raise ValueError(f"unknown metric {name!r} (its orientation is unknown); "
                             f"choose from: {', '.join(METRICS)}")
        column = np.asarray(column, dtype=float)
        if column.ndim != 1 or np.isnan(column).any():
            raise ValueError(f"{name}: expected a flat list of numbers without NaN")
        columns[name] = -column if METRICS[name].higher_is_better else column
    lengths = {len(c) for c in columns.values()}
    if len(lengths) != 1 or lengths.pop() < 2:
        raise ValueError(f"every metric needs the same number (>= 2) of rows, got "
                         f"{ {n: len(c) for n, c in columns.items()} }")
    return {name: _spearman(columns[against], column) for name, column in columns.items() if name != against}
