"""Specification of zeustune.quality.metrics: quality loss against same-seed full-step references.

LPIPS's AlexNet backbone weights cannot be downloaded here or in CI (FACTS.md §5), so every test
points torch hub at a temporary directory: an empty one to see the clear failure and the
fall-backs, one holding a stand-in weights file (random AlexNet) to run the real LPIPS code path.
ST-LPIPS runs on the real weights shipped in the stlpips-pytorch wheel (a dependency); tests that
need it absent patch zeustune.quality.stlpips.weights_path. No test touches the network.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from zeustune.quality import metrics
from zeustune.quality import stlpips as st
from zeustune.quality.metrics import METRICS, MetricFallbackWarning, MetricUnavailable, rank_agreement, resolve, score, score_all

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
def no_alexnet(tmp_path, monkeypatch):
    """torch hub pointed at an empty directory (no LPIPS); fresh model caches and warn-once flag."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.setattr(metrics, "_LPIPS_MODELS", {})
    monkeypatch.setattr(metrics, "_STLPIPS_MODELS", {})
    monkeypatch.setattr(metrics, "_FALLBACK_WARNED", False)
    return tmp_path / "hub"


@pytest.fixture
def empty_hub(no_alexnet, monkeypatch):
    """No weights at all: torch hub empty and the stlpips-pytorch wheel taken as not installed."""
    monkeypatch.setattr(st, "weights_path", lambda: None)
    return no_alexnet


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
#: The metrics that run in every test environment: the weight-free ones and st-lpips (its weights
#: ship in a dependency's wheel).
ALWAYS = WEIGHT_FREE + ("st-lpips",)


# --------------------------------------------------------------------------- the registry


def test_registry_describes_each_metric():
    assert set(METRICS) == {"lpips", "psnr", "ssim", "gmsd", "st-lpips", "st-lpips-video"}
    assert metrics.WEIGHT_FREE == "gmsd" and not METRICS["gmsd"].needs_weights
    assert METRICS["lpips"].needs_weights and METRICS["st-lpips"].needs_weights
    assert {n: m.higher_is_better for n, m in METRICS.items()} == \
        {"lpips": False, "psnr": True, "ssim": True, "gmsd": False, "st-lpips": False, "st-lpips-video": False}
    assert [n for n, m in METRICS.items() if m.video] == ["st-lpips-video"]
    assert METRICS["st-lpips"].perfect == 0.0
    assert METRICS["psnr"].unit == "dB"
    assert all(m.name == n and callable(m.fn) for n, m in METRICS.items())


def test_resolve_validates_names():
    for name in METRICS:
        assert resolve(name) == name
    assert resolve("auto", video=True) == "st-lpips-video"
    with pytest.raises(ValueError, match=r"'LPIPS'.*auto, lpips, psnr, ssim, gmsd"):
        resolve("LPIPS")
    with pytest.raises(ValueError, match="unknown metric"):
        score("fid", scene(), scene())


def test_weights_file_name_is_torchvisions():
    import torchvision

    url = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.url
    assert os.path.basename(url) == metrics.ALEXNET_WEIGHTS_FILE


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("name", ALWAYS)
def test_identical_images_score_perfect(name):
    x = scene(3)
    values = score(name, x, x.clone())
    assert values.shape == (3,)
    if name == "psnr":
        assert torch.isinf(values).all() and (values > 0).all()  # documented: inf, no cap
    else:
        # ssim: computed in float64, so 1 to ~1e-12 before rounding to float32: exact.
        # gmsd: the similarity map is (2mm + T) / (mm + mm + T), exactly 1 in floating point.
        # st-lpips: both images take the same arithmetic, so every feature difference is exactly 0.
        assert values.tolist() == [METRICS[name].perfect] * 3


@pytest.mark.parametrize("name", ALWAYS)
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


@pytest.mark.parametrize("name", ALWAYS)
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
@pytest.mark.parametrize("name", ALWAYS)
def test_computed_on_the_inputs_device(name, device):
    x = scene(2).to(device)
    y = noisy(x, 0.05)
    values = score(name, y, x)
    assert values.device.type == device and values.dtype == torch.float32 and values.shape == (2,)
    # st-lpips on CUDA: cuDNN convolutions use TF32 by default (10-bit mantissa, ~5e-4 relative
    # per product), which moves the score by up to a few 1e-3 relative.
    rtol = 5e-3 if name == "st-lpips" and device == "cuda" else 1e-4
    torch.testing.assert_close(values.cpu(), score(name, y.cpu(), x.cpu()), rtol=rtol, atol=1e-5)


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


# --------------------------------------------------------------------------- st-lpips


def _package_stlpips(**kwargs):
    """The stlpips-pytorch package's own metric (its modules import IPython and torchsummary)."""
    pytest.importorskip("IPython", reason="stlpips-pytorch imports IPython (pip install -e '.[test]')")
    pytest.importorskip("torchsummary", reason="stlpips-pytorch imports torchsummary (pip install -e '.[test]')")
    from stlpips_pytorch.stlpips import LPIPS

    return LPIPS(net="alex", variant="shift_tolerant", verbose=False, **kwargs)


def _faithful_pairs() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Image pairs in [0, 1]: uniform noise against noise, and scenes against noisy, blurred and
    unrelated scenes; at 64x64 and at an odd, non-square size (padding and pooling edges)."""
    gen = torch.Generator().manual_seed(7)
    pairs = []
    for h, w in ((64, 64), (37, 50)):
        x = scene(4, size=max(h, w), seed=5)[..., :h, :w]
        blurred = torch.nn.functional.avg_pool2d(x, 5, 1, 2, count_include_pad=False)
        pairs.append((torch.rand(4, 3, h, w, generator=gen), torch.rand(4, 3, h, w, generator=gen)))
        pairs.append((torch.cat([noisy(x[:2], 0.03), blurred[2:]]), x))
        pairs.append((x, x.roll(1, dims=0)))  # different scenes
    return pairs


def test_st_lpips_equals_the_packages_metric():
    """Our network, on the wheel's weights, gives the package's per-image scores.

    Both evaluate the same float32 graph (same layers, same order, inputs scaled to [-1, 1] the
    same way), so they can differ only by the summation order the convolution backend picks:
    rounding of ~sqrt(K) * 2^-24 relative for K <= 192 * 5 * 5 = 4800 products per output, i.e.
    ~4e-6, hence rtol 1e-5; atol 1e-6 covers scores near 0, whose squared feature differences
    carry the absolute (not relative) error of the features. Measured: identical, max |diff| 0.
    """
    package = _package_stlpips()
    worst = 0.0
    for images, references in _faithful_pairs():
        with torch.no_grad():
            expected = package(images * 2 - 1, references * 2 - 1).reshape(-1)
        ours = score("st-lpips", images, references)
        torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
        assert (expected > 1e-4).all()  # real differences, not a comparison of zeros
        worst = max(worst, (ours - expected).abs().max().item())
    print(f"st-lpips vs stlpips-pytorch: max |diff| {worst:.3g}")


def test_st_lpips_packages_version_argument_only_drops_the_input_scaling():
    """Why the test above builds the package's metric without version="ST0.0".

    The package loads the same weights file for any version, but applies LPIPS' input scaling
    only when version == "0.1" (its default, with which the metric was trained and is documented).
    Passing version="ST0.0" therefore scores unscaled inputs: our network with the scaling set to
    the identity reproduces it, and it differs from the trained metric.
    """
    package = _package_stlpips(version="ST0.0")
    images, references = _faithful_pairs()[0]
    with torch.no_grad():
        expected = package(images * 2 - 1, references * 2 - 1).reshape(-1)
        unscaled = st.load()
        unscaled.shift.zero_()
        unscaled.scale.fill_(1.0)
        torch.testing.assert_close(unscaled(images * 2 - 1, references * 2 - 1), expected, rtol=1e-5, atol=1e-6)
    assert ((score("st-lpips", images, references) - expected).abs() > 1e-4).all()


def test_st_lpips_of_identical_noise_images_is_exactly_zero():
    x = torch.rand(3, 3, 48, 40, generator=torch.Generator().manual_seed(3))
    assert score("st-lpips", x, x.clone()).tolist() == [0.0] * 3


def test_st_lpips_grows_with_blur():
    x = scene(3)
    values = torch.stack([score("st-lpips", torch.nn.functional.avg_pool2d(x, k, 1, k // 2, count_include_pad=False), x)
                          for k in (3, 5, 7, 9)])  # box blurs of growing width; (levels, images)
    assert (values[0] > 1e-3).all() and (values.diff(dim=0) > 0).all(), values.T.tolist()


@pytest.mark.parametrize("axis", ["x", "y"])
def test_st_lpips_tolerates_a_one_pixel_shift(axis):
    """A 1 px shift of a scene costs far less than slight noise (sigma 0.02, ~5/255) under
    st-lpips; under GMSD, which compares edges in place, the same shift costs more than the noise,
    so the ordering is the metric's property, not the images'."""
    big = scene(4, size=SIZE + 1)
    reference = big[..., :SIZE, :SIZE]
    shifted = big[..., :SIZE, 1:] if axis == "x" else big[..., 1:, :SIZE]  # the same scene, moved 1 px
    slightly_noisy = noisy(reference, 0.02)
    st_shift, st_noise = score("st-lpips", shifted, reference), score("st-lpips", slightly_noisy, reference)
    assert (st_shift > 0).all() and (st_shift < 0.2 * st_noise).all(), (st_shift.tolist(), st_noise.tolist())
    assert (score("gmsd", shifted, reference) > score("gmsd", slightly_noisy, reference)).all()


def test_st_lpips_size_and_precision():
    n = st.MIN_SIZE
    x = scene(2, size=n)
    assert score("st-lpips", noisy(x, 0.1), x).shape == (2,)
    with pytest.raises(ValueError, match=f"at least {n}x{n}"):
        score("st-lpips", x[..., 1:, :], x[..., 1:, :])
    y = noisy(scene(2), 0.05)
    double = score("st-lpips", y.double(), scene(2).double())
    assert double.dtype == torch.float64  # computed in float32, returned in the inputs' precision
    torch.testing.assert_close(double.float(), score("st-lpips", y, scene(2)), rtol=0, atol=0)


def test_st_lpips_weights_are_found_in_the_installed_wheel():
    from importlib.metadata import files

    path = st.weights_path()
    shipped = [f for f in files(st.DISTRIBUTION) if f.name == "alex_shift_tolerant.pth"]
    assert path is not None and len(shipped) == 1
    assert os.path.samefile(path, shipped[0].locate())


def test_st_lpips_imports_neither_the_package_nor_ipython():
    code = ("import sys, torch; from zeustune.quality import metrics; x = torch.rand(1, 3, 32, 32); "
            "assert metrics.score('st-lpips', x, x).item() == 0; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('stlpips_pytorch', 'IPython', 'torchsummary')]; "
            "assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_st_lpips_model_is_loaded_once_per_device(no_alexnet, monkeypatch):
    loads = []
    real = st.load
    monkeypatch.setattr(st, "load", lambda path=None: loads.append(path) or real(path))
    x = scene(1)
    for _ in range(3):
        score("st-lpips", x, x)
    assert loads == [st.weights_path()]
    assert metrics._stlpips_model(torch.device("cpu")) is metrics._stlpips_model(torch.device("cpu"))


def test_st_lpips_without_the_wheel_fails_clearly(empty_hub):
    with pytest.raises(MetricUnavailable, match="pip install stlpips-pytorch"):
        score("st-lpips", scene(1), scene(1))


@pytest.mark.parametrize("damage, match", [
    (lambda state: state.update({"net.slice2.4.filt": state["net.slice2.4.filt"].roll(1, dims=-1)}), "blur filter"),
    (lambda state: state.pop("lin4.model.1.weight"), "missing or unexpected.*lin4"),
    (lambda state: state.update({"lin0.model.1.weight": torch.zeros(1, 32, 1, 1)}), "size mismatch"),
])
def test_st_lpips_rejects_a_foreign_weights_file(no_alexnet, monkeypatch, tmp_path, damage, match):
    state = torch.load(st.weights_path(), map_location="cpu", weights_only=True)
    damage(state)
    torch.save(state, tmp_path / "foreign.pth")
    monkeypatch.setattr(st, "weights_path", lambda: str(tmp_path / "foreign.pth"))
    with pytest.raises(MetricUnavailable, match=match):
        score("st-lpips", scene(1), scene(1))
    (tmp_path / "corrupt.pth").write_bytes(b"not a checkpoint")
    monkeypatch.setattr(st, "weights_path", lambda: str(tmp_path / "corrupt.pth"))
    with pytest.raises(MetricUnavailable, match="could not load"):
        score("st-lpips", scene(1), scene(1))


def test_auto_picks_st_lpips_without_the_alexnet_weights(no_alexnet):
    with pytest.warns(MetricFallbackWarning) as record:
        assert resolve("auto") == "st-lpips"
        assert resolve("auto") == "st-lpips"
    assert len(record) == 1
    message = str(record[0].message)
    assert "using 'st-lpips' instead of 'lpips'" in message and "AlexNet" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(score_all(noisy(scene(2), 0.05), scene(2))) == ["st-lpips", "psnr", "ssim", "gmsd"]


def test_auto_picks_gmsd_without_either_weights_and_says_why(empty_hub):
    with pytest.warns(MetricFallbackWarning) as record:
        assert resolve("auto") == "gmsd"
    message = str(record[0].message)
    assert "weight-free 'gmsd'" in message and "AlexNet" in message and "pip install stlpips-pytorch" in message


# --------------------------------------------------------------------------- rank agreement

#: Five metrics over 10 rows, with ties within columns and an exact match (psnr inf, ssim 1).
AGREEMENT = {
    "lpips": [0.30, 0.10, 0.10, 0.25, 0.00, 0.40, 0.10, 0.22, 0.35, 0.05],
    "st-lpips": [0.28, 0.12, 0.09, 0.31, 0.00, 0.33, 0.12, 0.20, 0.33, 0.04],
    "gmsd": [0.10, 0.04, 0.04, 0.02, 0.00, 0.12, 0.06, 0.06, 0.09, 0.01],
    "psnr": [21.0, 30.5, 30.5, 24.0, float("inf"), 19.0, 28.0, 26.0, 21.0, 35.0],
    "ssim": [0.70, 0.91, 0.90, 0.80, 1.00, 0.70, 0.91, 0.83, 0.66, 0.97],
}


def _scipy_agreement(values, against):
    from scipy.stats import spearmanr

    def loss(name):
        column = np.asarray(values[name], dtype=float)
        return -column if METRICS[name].higher_is_better else column

    return {n: spearmanr(loss(against), loss(n)).statistic for n in values if n != against}


@pytest.mark.parametrize("scipy_available", [True, False])
def test_rank_agreement_equals_scipy_with_ties(scipy_available, monkeypatch):
    pytest.importorskip("scipy.stats")
    expected = {against: _scipy_agreement(AGREEMENT, against) for against in AGREEMENT}
    if not scipy_available:  # the numpy fall-back
        monkeypatch.setitem(sys.modules, "scipy.stats", None)
        with pytest.raises(ImportError):
            from scipy.stats import spearmanr  # noqa: F401
    for against in AGREEMENT:
        got = rank_agreement(AGREEMENT, against)
        assert list(got) == [n for n in AGREEMENT if n != against]
        assert got == pytest.approx(expected[against], rel=1e-12, abs=1e-12), against
    # Every column has ties, so ranks in order of appearance (no averaging) would not pass.
    assert all(len(set(column)) < len(column) for column in AGREEMENT.values())


def test_average_ranks_equal_scipys_rankdata():
    from scipy.stats import rankdata

    gen = np.random.default_rng(0)
    for _ in range(20):
        a = gen.integers(0, 5, size=gen.integers(1, 30)).astype(float)
        a[gen.random(len(a)) < 0.1] = np.inf
        np.testing.assert_array_equal(metrics._average_ranks(a), rankdata(a))


def test_rank_agreement_orients_higher_is_better_metrics():
    loss = [0.1, 0.4, 0.2, 0.3]
    values = {"gmsd": loss, "psnr": [40, 10, 30, 20], "ssim": [0.9, 0.6, 0.8, 0.7], "lpips": loss[::-1]}
    got = rank_agreement(values, "gmsd")
    assert got["psnr"] == pytest.approx(1.0) and got["ssim"] == pytest.approx(1.0)
    assert got["lpips"] == pytest.approx(-0.6)  # ranks 1 4 2 3 vs 3 2 4 1: 1 - 6 * 16 / (4 * 15)
    assert np.isnan(rank_agreement({"gmsd": loss, "ssim": [1.0] * 4}, "gmsd")["ssim"])  # constant: undefined


@pytest.mark.parametrize("values, against, match", [
    ({"gmsd": [0.1, 0.2], "fid": [1.0, 2.0]}, "gmsd", "unknown metric 'fid'"),
    ({"gmsd": [0.1, 0.2], "psnr": [1.0, 2.0, 3.0]}, "gmsd", "same number"),
    ({"gmsd": [0.1], "psnr": [1.0]}, "gmsd", "same number"),
    ({"gmsd": [0.1, float("nan")], "psnr": [1.0, 2.0]}, "gmsd", "NaN"),
    ({"gmsd": [0.1, 0.2], "psnr": [1.0, 2.0]}, "ssim", "not a key"),
])
def test_rank_agreement_rejects_bad_input(values, against, match):
    with pytest.raises(ValueError, match=match):
        rank_agreement(values, against)


# --------------------------------------------------------------------------- video


def clip(n: int = 2, frames: int = 6, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Clips (n, frames, 3, size, size): a scene that drifts one pixel to the right per frame."""
    base = scene(n, size + frames, seed)
    return torch.stack([base[:, :, :size, f:f + size] for f in range(frames)], dim=1)


def test_video_metric_is_zero_for_identical_clips_and_needs_clips():
    x = clip()
    assert score("st-lpips-video", x, x.clone()).tolist() == [0.0, 0.0]
    assert metrics.temporal_error(x, x.clone()).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match=r"clips of shape \(N, F, 3, H, W\)"):
        score("st-lpips-video", x[:, 0], x[:, 0])
    with pytest.raises(ValueError, match="shape mismatch"):
        score("st-lpips-video", x, x[:, :5])


def test_video_metric_grows_with_distortion_and_ranks_like_per_frame_psnr_and_ssim():
    x = clip(frames=5)
    sigmas = (0.01, 0.03, 0.06, 0.1)
    video = [score("st-lpips-video", noisy(x, s), x).mean().item() for s in sigmas]
    assert video == sorted(video) and video[0] > 0
    per_frame = {name: [score(name, noisy(x, s), x).mean().item() for s in sigmas] for name in ("psnr", "ssim")}
    agreement = rank_agreement({"st-lpips-video": video, **per_frame}, against="st-lpips-video")
    assert agreement == {"psnr": 1.0, "ssim": 1.0}


def test_temporal_term_sees_flicker_that_per_frame_scores_miss():
    """The same per-frame error, once fixed in every frame and once alternating in sign (flicker):
    per-frame st-lpips cannot tell them apart much, the temporal term is 0 for the first only."""
    x = clip(n=1, frames=6)
    offset = 0.04 * torch.ones_like(x)
    steady = (x + offset).clamp(0, 1)
    signs = torch.tensor([1.0, -1.0] * 3).view(1, 6, 1, 1, 1)
    flicker = (x + offset * signs).clamp(0, 1)
    assert metrics.temporal_error(steady, x).item() == pytest.approx(0.0, abs=1e-7)  # x stays inside [0.1, 0.9]
    assert metrics.temporal_error(flicker, x).item() == pytest.approx(0.08, rel=1e-5)  # |(+0.04) - (-0.04)| each step
    assert score("st-lpips-video", flicker, x).item() > score("st-lpips-video", steady, x).item()


def test_image_metrics_average_over_frames_for_clips():
    x, y = clip(), noisy(clip(), 0.05)
    for name in ("psnr", "gmsd", "st-lpips"):
        frames = METRICS[name].fn(x.flatten(0, 1), y.flatten(0, 1)).view(2, -1)
        assert torch.allclose(score(name, x, y), frames.mean(dim=1))
    assert set(score_all(x, y, ("auto", "psnr"))) == {"st-lpips-video", "psnr"}


def test_an_image_model_is_refused_the_video_metric():
    with pytest.raises(ValueError, match="--metric: got 'st-lpips-video', expected a metric for images"):
        metrics.require("st-lpips-video")
    assert metrics.require("st-lpips-video", video=True) == "st-lpips-video"
