"""Specification of zeustune.metrics: quality loss against same-seed full-step references.

LPIPS's AlexNet backbone weights cannot be downloaded here or in CI (FACTS.md §5), so every test
points torch hub at a temporary directory: an empty one to see the clear failure and the
weight-free fall-back, one holding a stand-in weights file (random AlexNet) to run the real LPIPS
code path. No test touches the network.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch

from zeustune import metrics
from zeustune.metrics import METRICS, MetricFallbackWarning, MetricUnavailable, resolve, score, score_all

SIZE = 64  # the tiny test pipelines render 32-64 px


def scene(n: int = 1, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    """Images with smooth shading, edges and texture, values inside [0.1, 0.9] (noise rarely clips)."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    out = []
    for _ in range(n):
        f, cx, cy = (torch.rand(3, generator=gen) * torch.tensor([6.0, 0.4, 0.4]) + torch.tensor([3.0, 0.3, 0.3]))
        disc = (((xx - cx) ** 2 + (yy - cy) ** 2) < 0.05).float()
        out.append(torch.stack([0.5 + 0.3 * torch.sin(f * xx) * torch.cos(4 * yy),
                                0.2 + 0.5 * xx * yy + 0.1 * disc,
                                0.4 + 0.3 * disc + 0.1 * torch.sin(3 * f * yy)]))
    return torch.stack(out).clamp(0.1, 0.9)


def noisy(x: torch.Tensor, sigma: float, seed: int = 1) -> torch.Tensor:
    """x plus sigma times one fixed Gaussian noise field, clipped to [0, 1]."""
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    return (x + sigma * noise.to(x.device, x.dtype)).clamp(0, 1)


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """torch hub pointed at an empty directory; fresh LPIPS model cache and warn-once flag."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.setattr(metrics, "_LPIPS_MODELS", {})
    monkeypatch.setattr(metrics, "_FALLBACK_WARNED", False)
    return tmp_path / "hub"


@pytest.fixture(scope="module")
def fake_alexnet(tmp_path_factory):
    """A hub directory holding a stand-in AlexNet weights file (random weights, the real layout)."""
    import torchvision

    hub = tmp_path_factory.mktemp("fakehub")
    (hub / "checkpoints").mkdir()
    torch.manual_seed(0)
    state = torchvision.models.alexnet(weights=None).state_dict()
    torch.save(state, hub / "checkpoints" / metrics.ALEXNET_WEIGHTS_FILE)
    return hub


@pytest.fixture
def fake_hub(fake_alexnet, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(fake_alexnet))
    monkeypatch.setattr(metrics, "_LPIPS_MODELS", {})
    monkeypatch.setattr(metrics, "_FALLBACK_WARNED", False)
    return fake_alexnet


WEIGHT_FREE = ("psnr", "ssim", "gmsd")


# --------------------------------------------------------------------------- the registry


def test_registry_describes_each_metric():
    assert set(METRICS) == {"lpips", "psnr", "ssim", "gmsd"}
    assert metrics.WEIGHT_FREE == "gmsd" and not METRICS["gmsd"].needs_weights
    assert METRICS["lpips"].needs_weights
    assert {n: m.higher_is_better for n, m in METRICS.items()} == \
        {"lpips": False, "psnr": True, "ssim": True, "gmsd": False}
    assert METRICS["psnr"].unit == "dB"
    assert all(m.name == n and callable(m.fn) for n, m in METRICS.items())


def test_resolve_validates_names():
    for name in METRICS:
        assert resolve(name) == name
    with pytest.raises(ValueError, match=r"'LPIPS'.*auto, lpips, psnr, ssim, gmsd"):
        resolve("LPIPS")
    with pytest.raises(ValueError, match="unknown metric"):
        score("fid", scene(), scene())


def test_weights_file_name_is_torchvisions():
    import torchvision

    url = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.url
    assert os.path.basename(url) == metrics.ALEXNET_WEIGHTS_FILE


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("name", WEIGHT_FREE)
def test_identical_images_score_perfect(name):
    x = scene(3)
    values = score(name, x, x.clone())
    assert values.shape == (3,)
    if name == "psnr":
        assert torch.isinf(values).all() and (values > 0).all()  # documented: inf, no cap
    else:
        # ssim: computed in float64, so 1 to ~1e-12 before rounding to float32: exact.
        # gmsd: the similarity map is (2mm + T) / (mm + mm + T), exactly 1 in floating point.
        assert values.tolist() == [METRICS[name].perfect] * 3


@pytest.mark.parametrize("name", WEIGHT_FREE)
def test_monotone_in_noise(name):
    x = scene(2)
    sigmas = [0.005, 0.02, 0.05, 0.1, 0.2]
    values = torch.stack([score(name, noisy(x, s), x) for s in sigmas])  # (levels, images)
    worse = values.diff(dim=0)
    if METRICS[name].higher_is_better:
        worse = -worse
    assert (worse > 0).all(), f"{name} not monotone in noise: {values.T.tolist()}"


def test_psnr_matches_its_definition():
    x = scene(2)
    y = noisy(x, 0.05)
    mse = ((y - x) ** 2).flatten(1).mean(1)
    torch.testing.assert_close(score("psnr", y, x), 10 * torch.log10(1 / mse), rtol=1e-5, atol=1e-4)


def _gmsd_reference(x: np.ndarray, y: np.ndarray) -> float:
    """The authors' MATLAB GMSD, transcribed with scipy (images HxWx3 in [0, 1])."""
    from scipy.signal import convolve2d

    def gray(im):
        return 255 * (0.2989 * im[..., 0] + 0.5870 * im[..., 1] + 0.1140 * im[..., 2])

    dx = np.array([[1, 0, -1]] * 3) / 3
    avg = np.ones((2, 2)) / 4
    maps = []
    for im in (x, y):
        # MATLAB conv2(Y, ones(2)/4, 'same') keeps rows 2..n+1 of the full convolution, i.e.
        # (Y(i) + Y(i+1)) / 2 per axis; then Y(1:2:end, 1:2:end).
        full = convolve2d(gray(im), avg, mode="full")[1:, 1:]
        g = full[::2, ::2]
        gx, gy = convolve2d(g, dx, mode="same"), convolve2d(g, dx.T, mode="same")
        maps.append(np.sqrt(gx**2 + gy**2))
    m1, m2 = maps
    q = (2 * m1 * m2 + 170) / (m1**2 + m2**2 + 170)
    return float(np.std(q, ddof=1))


@pytest.mark.parametrize("size", [64, 33])
def test_gmsd_matches_reference_implementation(size):
    x = scene(1, size=size).double()
    for sigma in (0.02, 0.1):
        y = noisy(x, sigma)
        ours = score("gmsd", y, x).item()
        ref = _gmsd_reference(y[0].permute(1, 2, 0).numpy(), x[0].permute(1, 2, 0).numpy())
        assert ours == pytest.approx(ref, rel=1e-9), (size, sigma)  # float64 both: rounding only


def test_gmsd_grows_with_blur():
    x = scene(2)
    values = [score("gmsd", torch.nn.functional.avg_pool2d(x, k, 1, k // 2, count_include_pad=False), x)
              for k in (3, 5, 7)]  # box blurs of growing width
    assert (values[0] > 1e-3).all() and (values[1] > values[0]).all() and (values[2] > values[1]).all()


# --------------------------------------------------------------------------- batching, devices


@pytest.mark.parametrize("name", WEIGHT_FREE)
def test_batch_equals_one_by_one(name):
    x = scene(4, seed=3)
    y = torch.stack([noisy(x[i : i + 1], s, seed=i)[0] for i, s in enumerate([0.01, 0.03, 0.06, 0.1])])
    batched = score(name, y, x)
    single = torch.cat([score(name, y[i : i + 1], x[i : i + 1]) for i in range(4)])
    # Same arithmetic per image; convolutions may sum in another order for another batch size.
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-6)
    assert len(set(batched.tolist())) == 4  # four different images, four different values


def _devices():
    yield "cpu"
    if torch.cuda.is_available():
        yield "cuda"


@pytest.mark.parametrize("device", list(_devices()))
@pytest.mark.parametrize("name", WEIGHT_FREE)
def test_computed_on_the_inputs_device(name, device):
    x = scene(2).to(device)
    y = noisy(x, 0.05)
    values = score(name, y, x)
    assert values.device.type == device and values.dtype == torch.float32 and values.shape == (2,)
    torch.testing.assert_close(values.cpu(), score(name, y.cpu(), x.cpu()), rtol=1e-4, atol=1e-5)


def test_half_and_double_inputs():
    x = scene(2)
    y = noisy(x, 0.05)
    assert score("gmsd", y.double(), x.double()).dtype == torch.float64
    # float16 rounding of the pixels (~5e-4) moves GMSD by far less than 5 %.
    torch.testing.assert_close(score("gmsd", y.half(), x.half()), score("gmsd", y, x), rtol=0.05, atol=0)


@pytest.mark.parametrize("bad, match", [
    (lambda x: x * 2 - 1, r"\[0, 1\].*\(x \+ 1\) / 2"),
    (lambda x: (x * 255).to(torch.uint8), "uint8"),
    (lambda x: x[:, :1], r"\(N, 3, H, W\)"),
    (lambda x: x[0], r"\(N, 3, H, W\)"),
    (lambda x: x[:1], "shape mismatch"),
    (lambda x: torch.full_like(x, float("nan")), r"\[0, 1\]"),
])
def test_bad_inputs_are_rejected(bad, match):
    x = scene(2)
    with pytest.raises((ValueError, TypeError), match=match):
        score("gmsd", bad(x), x)


def test_score_all_keys_are_resolved_names(empty_hub):
    x = scene(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricFallbackWarning)
        table = score_all(noisy(x, 0.05), x)
    assert list(table) == ["gmsd", "psnr", "ssim"]  # auto -> gmsd, listed once
    for name, values in table.items():
        torch.testing.assert_close(values, score(name, noisy(x, 0.05), x), rtol=0, atol=0)
    assert list(score_all(x, x, metrics=("ssim",))) == ["ssim"]


# --------------------------------------------------------------------------- lpips without weights


def test_auto_falls_back_to_the_weight_free_metric_and_warns_once(empty_hub):
    with pytest.warns(MetricFallbackWarning) as record:
        assert resolve("auto") == "gmsd"
        assert resolve("auto") == "gmsd"
    assert len(record) == 1
    message = str(record[0].message)
    assert "gmsd" in message and "AlexNet" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a third call stays silent too
        assert resolve("auto") == "gmsd"


def test_lpips_without_weights_fails_clearly_without_trying_to_download(empty_hub, monkeypatch):
    import lpips

    def no_construct(*args, **kwargs):
        raise AssertionError("lpips.LPIPS constructed: torchvision would try to download")

    monkeypatch.setattr(lpips, "LPIPS", no_construct)
    x = scene(1)
    with pytest.raises(MetricUnavailable) as info:
        score("lpips", x, x)
    message = str(info.value)
    expected = os.path.join(str(empty_hub), "checkpoints", "alexnet-owt-7be5be79.pth")
    for part in ("AlexNet", expected, "torch.hub.get_dir()/checkpoints", "--metric auto", "gmsd", "network"):
        assert part in message, part
    assert isinstance(info.value, RuntimeError)
    assert not os.path.exists(expected)


def test_lpips_with_a_corrupt_weights_file_fails_clearly(empty_hub):
    (empty_hub / "checkpoints").mkdir(parents=True)
    (empty_hub / "checkpoints" / metrics.ALEXNET_WEIGHTS_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(MetricUnavailable, match="corrupt"):
        score("lpips", scene(1), scene(1))


# --------------------------------------------------------------------------- lpips code path


def test_lpips_runs_with_weights_present(fake_hub):
    """With a (stand-in) weights file in place, the real lpips.LPIPS code path runs."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", MetricFallbackWarning)
        assert resolve("auto") == "lpips"
    x = scene(3)
    assert score("lpips", x, x).tolist() == [0.0] * 3  # identical features: exactly 0
    y = torch.stack([noisy(x[i : i + 1], s, seed=i)[0] for i, s in enumerate([0.02, 0.1, 0.3])])
    batched = score("lpips", y, x)
    assert batched.shape == (3,) and (batched > 0).all()
    single = torch.cat([score("lpips", y[i : i + 1], x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-7)  # conv summation order
    assert list(score_all(y, x)) == ["lpips", "psnr", "ssim", "gmsd"]


def test_lpips_model_is_built_once_per_device(fake_hub, monkeypatch):
    import lpips

    built = []
    real = lpips.LPIPS

    def counting(*args, **kwargs):
        built.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(lpips, "LPIPS", counting)
    x = scene(1)
    for _ in range(3):
        score("lpips", x, x)
    assert built == [{"pretrained": True, "net": "alex", "verbose": False}]
    assert metrics._lpips_model(torch.device("cpu")) is metrics._lpips_model(torch.device("cpu"))
