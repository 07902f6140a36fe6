"""Specification of zeustune.quality.references: reference keys, model fingerprints and the on-disk cache."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time

import numpy as np
import pytest
import torch

from zeustune.quality.references import ReferenceCache, config_dict, default_root, model_fingerprint, reference_key

# --------------------------------------------------------------------------- reference_key

BASE = dict(
    model="ab" * 32,
    scheduler={"class": "FlowMatchEulerDiscreteScheduler", "shift": 3.0, "use_dynamic_shifting": True},
    steps=28,
    height=64,
    width=64,
    guidance={"mode": "distilled", "scale": 3.5},
    prompt="a red fox in the snow",
    seed=0,
)


def test_key_is_a_stable_sha256():
    key = reference_key(**BASE)
    assert len(key) == 64 and int(key, 16) >= 0
    assert reference_key(**BASE) == key
    # Pinned: keys name files on disk, so a change of the canonical form must be deliberate
    # (it orphans every cached reference).
    assert key == "18de6c71228bf0d05c6e40832f0076bfc687f33df9ae76ae96a98c1ac4187237"


def test_key_is_order_independent():
    shuffled = dict(reversed(list(BASE.items())))
    shuffled["scheduler"] = dict(reversed(list(BASE["scheduler"].items())))
    assert reference_key(**shuffled) == reference_key(**BASE)


@pytest.mark.parametrize("part, value", [
    ("model", "cd" * 32),
    ("scheduler", {**BASE["scheduler"], "shift": 1.0}),
    ("scheduler", {**BASE["scheduler"], "class": "FlowMatchHeunDiscreteScheduler"}),
    ("steps", 50),
    ("height", 128),
    ("width", 128),
    ("guidance", {"mode": "distilled", "scale": 4.0}),
    ("guidance", {"mode": "cfg", "scale": 3.5}),
    ("prompt", "a red fox in the snow."),
    ("seed", 1),
])
def test_every_part_changes_the_key(part, value):
    assert reference_key(**{**BASE, part: value}) != reference_key(**BASE)


def test_extra_parts_enter_the_key():
    key = reference_key(**BASE)
    assert reference_key(**BASE, output="latent") != key
    assert reference_key(**BASE, negative_prompt=None) != key  # given as None differs from absent
    assert reference_key(**BASE, output="latent") != reference_key(**BASE, output="pil")


def test_floats_are_canonicalised():
    key = reference_key(**BASE)
    g = {"mode": "distilled"}
    assert reference_key(**{**BASE, "guidance": {**g, "scale": np.float32(3.5)}}) == key
    assert reference_key(**{**BASE, "guidance": {**g, "scale": torch.tensor(3.5)}}) == key
    assert reference_key(**{**BASE, "steps": 28.0, "seed": np.int64(0)}) == key
    assert reference_key(x=0.1 + 0.2) == reference_key(x=0.3)  # float64 noise beyond 15 digits
    assert reference_key(x=-0.0) == reference_key(x=0)
    assert reference_key(x=0.3) != reference_key(x=0.30001)
    assert reference_key(x=float("nan")) != reference_key(x="nan")
    assert reference_key(x=True) != reference_key(x=1)


def test_tensor_parts_enter_by_content():
    emb = torch.randn(2, 8, generator=torch.Generator().manual_seed(0))
    key = reference_key(prompt_embeds=emb)
    assert reference_key(prompt_embeds=emb.clone()) == key
    changed = emb.clone()
    changed[1, 7] += 1e-3
    assert reference_key(prompt_embeds=changed) != key
    assert reference_key(prompt_embeds=emb.double()) != key  # dtype counts
    assert reference_key(prompt_embeds=emb.reshape(4, 4)) != key  # shape counts


def test_scheduler_objects_enter_by_class_and_public_config():
    from diffusers import EulerAncestralDiscreteScheduler, EulerDiscreteScheduler

    a, b = EulerDiscreteScheduler(), EulerDiscreteScheduler.from_config(EulerDiscreteScheduler().config)
    assert reference_key(scheduler=a) == reference_key(scheduler=b)
    assert reference_key(scheduler=a) == reference_key(scheduler=config_dict(a))
    assert "_use_default_values" not in config_dict(a)["config"]
    assert reference_key(scheduler=a) != reference_key(scheduler=EulerAncestralDiscreteScheduler())
    assert reference_key(scheduler=a) != reference_key(scheduler=EulerDiscreteScheduler(timestep_spacing="trailing"))


def test_unhashable_parts_are_rejected():
    with pytest.raises(TypeError, match=r"parts\.guidance\.fn"):
        reference_key(guidance={"fn": object()})
    with pytest.raises(TypeError, match="keys must be strings or integers"):
        reference_key(table={(1, 2): 3})


def test_integer_keys_of_model_configs_are_hashed_as_text():
    # transformers configs carry id2label = {0: ..., 1: ...}
    assert reference_key(table={0: "a", 1: "b"}) == reference_key(table={"0": "a", "1": "b"})
    assert reference_key(table={0: "a"}) != reference_key(table={0: "b"})
    with pytest.raises(ValueError):
        reference_key()


# --------------------------------------------------------------------------- model_fingerprint


class Small(torch.nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.a = torch.nn.Linear(100, 80)  # 8000 weights: sampled, not hashed whole
        self.b = torch.nn.Conv2d(3, 4, 3)
        self.register_buffer("scale", torch.tensor(2.0))


def test_fingerprint_is_stable():
    f = model_fingerprint(Small())
    assert len(f) == 64
    assert model_fingerprint(Small()) == f  # same weights, another object
    m = Small()
    m.load_state_dict(Small(seed=0).state_dict())
    assert model_fingerprint(m) == f


@pytest.mark.parametrize("index", [0, 4, 7999, 7998])
def test_fingerprint_sees_a_sampled_weight(index):
    m = Small()
    f = model_fingerprint(m)
    with torch.no_grad():
        m.a.weight.view(-1)[index] += 1e-6  # first, last and strided elements are sampled
    assert model_fingerprint(m) != f


def test_fingerprint_sees_buffers_dtypes_shapes_and_every_value_when_full():
    m = Small()
    f, full = model_fingerprint(m), model_fingerprint(m, full=True)
    with torch.no_grad():
        m.scale.fill_(3.0)
    assert model_fingerprint(m) != f
    assert model_fingerprint(Small().double()) != f
    m = Small()
    with torch.no_grad():
        m.a.weight.view(-1)[4000 + 7] += 1.0  # between the strided samples (stride ~533)
    assert model_fingerprint(m) == f  # the documented blind spot of sampling...
    assert model_fingerprint(m, full=True) != full  # ...which full=True closes
    m = Small()
    m.b = torch.nn.Conv2d(3, 5, 3)
    assert model_fingerprint(m) != f


def test_fingerprint_of_diffusers_models_and_pipelines():
    from zeustune.models import tiny

    pipe = tiny.build("flux").pipe
    f = model_fingerprint(pipe)
    assert model_fingerprint(tiny.build("flux").pipe) == f
    assert model_fingerprint(tiny.build("flux", seed=1).pipe) != f  # other weights
    t = pipe.transformer
    ft = model_fingerprint(t)
    # A scheduler config change, all weights equal, changes the pipeline's fingerprint only.
    pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, shift=2.0)
    assert model_fingerprint(pipe) != f
    assert model_fingerprint(t) == ft
    with torch.no_grad():
        next(iter(t.parameters())).view(-1)[0] += 1e-3
    assert model_fingerprint(t) != ft


def test_fingerprint_of_a_model_directory(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "model_index.json").write_text('{"_class_name": "X"}')
    (tmp_path / "unet" / "config.json").write_text('{"in_channels": 4}')
    big = np.random.default_rng(0).bytes(6 << 20)  # over the 4 MiB limit: sampled
    (tmp_path / "unet" / "w.safetensors").write_bytes(big)
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "lock").write_text("x")
    f = model_fingerprint(tmp_path)
    assert model_fingerprint(str(tmp_path)) == f
    (tmp_path / ".cache" / "lock").write_text("y")  # hidden download metadata does not count
    assert model_fingerprint(tmp_path) == f
    (tmp_path / "unet" / "config.json").write_text('{"in_channels": 8}')
    assert model_fingerprint(tmp_path) != f
    (tmp_path / "unet" / "config.json").write_text('{"in_channels": 4}')
    assert model_fingerprint(tmp_path) == f
    with open(tmp_path / "unet" / "w.safetensors", "r+b") as fh:
        fh.seek(10)  # inside the first chunk (the safetensors header)
        fh.write(b"\x00" if big[10] else b"\x01")
    assert model_fingerprint(tmp_path) != f
    with pytest.raises(FileNotFoundError, match="not a local path"):
        model_fingerprint("black-forest-labs/FLUX.1-dev")
    with pytest.raises(TypeError, match="expected a pipeline"):
        model_fingerprint(42)


# --------------------------------------------------------------------------- ReferenceCache


def tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "images": torch.rand(2, 3, 16, 16, generator=gen),
        "latents": torch.randn(2, 4, 8, 8, generator=gen).to(torch.bfloat16),
        "steps": torch.arange(5),
    }


KEY = "f" * 64


def assert_bit_exact(got: dict, want: dict):
    assert set(got) == set(want)
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
        assert torch.equal(got[k].view(torch.uint8), want[k].contiguous().view(torch.uint8)), k


def test_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("ZEUSTUNE_CACHE", str(tmp_path / "c"))
    assert default_root() == tmp_path / "c" and ReferenceCache().root == tmp_path / "c"
    monkeypatch.delenv("ZEUSTUNE_CACHE")
    assert default_root() == __import__("pathlib").Path.home() / ".cache" / "zeustune" / "references"


def test_put_get_round_trip_is_bit_exact(tmp_path):
    cache = ReferenceCache(tmp_path)
    assert cache.get(KEY) is None
    want = tensors()
    want["strided"] = torch.arange(12.0).reshape(3, 4).T  # non-contiguous input
    cache.put(KEY, want, {"metric": "gmsd", "psnr": float("inf")})
    got = cache.get(KEY)
    assert_bit_exact(got, want)
    assert all(t.device.type == "cpu" for t in got.values())
    assert cache.meta(KEY) == {"metric": "gmsd", "psnr": float("inf")}
    assert KEY in cache and "e" * 64 not in cache
    assert (cache.stats.hits, cache.stats.misses, cache.stats.writes) == (1, 1, 1)
    # A second cache object on the same directory (another worker) reads the same entry.
    assert_bit_exact(ReferenceCache(tmp_path).get(KEY), want)
    side = json.loads(cache.sidecar_path(KEY).read_text())
    assert side["key"] == KEY and side["tensors"]["latents"] == {"dtype": "torch.bfloat16", "shape": [2, 4, 8, 8]}
    assert cache.tensor_path(KEY, side["sha256"]).is_file()
    assert not list(tmp_path.rglob("*.tmp"))  # no temporary files left


def age(path, seconds: float):
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_put_overwrites_and_later_removes_the_old_tensor_file(tmp_path):
    cache = ReferenceCache(tmp_path)
    cache.put(KEY, tensors(0))
    first = _tensor_file(cache)
    cache.put(KEY, tensors(1))
    assert_bit_exact(cache.get(KEY), tensors(1))
    assert first.exists()  # young: a concurrent reader may still be reading it
    age(first, 2 * cache.ORPHAN_GRACE_S)
    crashed = first.parent / f".{KEY}.json.abc.tmp"  # a writer that died before its os.replace
    crashed.write_bytes(b"partial")
    age(crashed, 2 * cache.ORPHAN_GRACE_S)
    cache.put(KEY, tensors(1))
    assert sorted(p.name for p in first.parent.iterdir()) == sorted(
        [f"{KEY}.json", _tensor_file(cache).name])
    assert_bit_exact(cache.get(KEY), tensors(1))
    assert cache.stats.corrupt == 0  # replaced files are not corruption


def test_put_validates(tmp_path):
    cache = ReferenceCache(tmp_path)
    with pytest.raises(ValueError, match="invalid cache key"):
        cache.put("../x", tensors())
    with pytest.raises(ValueError, match="non-empty"):
        cache.put(KEY, {})
    with pytest.raises(TypeError, match="torch.Tensor"):
        cache.put(KEY, {"a": [1, 2]})
    with pytest.raises(TypeError, match="JSON"):
        cache.put(KEY, tensors(), {"f": object()})
    assert not list(tmp_path.rglob("*.*"))


def test_get_or_compute_computes_once(tmp_path):
    cache = ReferenceCache(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return tensors(3)

    first = cache.get_or_compute(KEY, compute, {"steps": 28})
    second = cache.get_or_compute(KEY, compute, {"steps": 28})
    third = ReferenceCache(tmp_path).get_or_compute(KEY, compute)
    assert len(calls) == 1
    for got in (first, second, third):
        assert_bit_exact(got, tensors(3))
    assert (cache.stats.hits, cache.stats.misses, cache.stats.writes) == (1, 1, 1)
    assert cache.meta(KEY) == {"steps": 28}


def _tensor_file(cache, key=KEY):
    return cache.tensor_path(key, json.loads(cache.sidecar_path(key).read_text())["sha256"])


def flip_a_byte(cache):
    path = _tensor_file(cache)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # inside the tensor data: still parses, only the checksum sees it
    path.write_bytes(bytes(data))


def truncate(cache):
    path = _tensor_file(cache)
    path.write_bytes(path.read_bytes()[:100])


def delete_tensor_file(cache):
    _tensor_file(cache).unlink()


def damage_sidecar(cache):
    path = cache.sidecar_path(KEY)
    path.write_text(path.read_text().replace('"gmsd"', '"lpips"'))  # valid JSON, wrong content


def garble_sidecar(cache):
    cache.sidecar_path(KEY).write_bytes(b'{"format": 1, "sha')


@pytest.mark.parametrize("damage", [flip_a_byte, truncate, delete_tensor_file, damage_sidecar, garble_sidecar])
def test_corrupt_entry_is_detected_deleted_and_recomputed(tmp_path, damage, caplog):
    cache = ReferenceCache(tmp_path)
    cache.put(KEY, tensors(), {"metric": "gmsd"})
    damage(cache)
    calls = []

    def compute():
        calls.append(1)
        return tensors()

    with caplog.at_level(logging.WARNING, logger="zeustune.quality.references"):
        got = cache.get_or_compute(KEY, compute, {"metric": "gmsd"})
    assert calls == [1]
    assert_bit_exact(got, tensors())
    assert cache.stats.corrupt == 1 and cache.stats.misses == 1
    assert any("corrupt" in r.getMessage() and KEY in r.getMessage() for r in caplog.records)
    assert_bit_exact(cache.get(KEY), tensors())  # the recomputed entry is sound
    assert cache.meta(KEY) == {"metric": "gmsd"}
    assert len(list(tmp_path.rglob("*.safetensors"))) == 1


def test_missing_sidecar_is_a_miss_and_stale_orphans_are_deleted(tmp_path, caplog):
    cache = ReferenceCache(tmp_path)
    cache.put(KEY, tensors())
    orphan = _tensor_file(cache)
    cache.sidecar_path(KEY).unlink()
    assert cache.get(KEY) is None
    assert orphan.exists()  # young: may be a write in progress, left alone
    age(orphan, 2 * cache.ORPHAN_GRACE_S)
    with caplog.at_level(logging.WARNING, logger="zeustune.quality.references"):
        assert cache.get(KEY) is None
    assert not orphan.exists() and cache.stats.corrupt == 1 and cache.stats.misses == 2
    assert any("partial entry" in r.getMessage() for r in caplog.records)
    calls = []
    cache.get_or_compute(KEY, lambda: calls.append(1) or tensors())
    assert calls == [1] and cache.get(KEY) is not None


def test_a_read_racing_an_overwrite_is_retried_not_discarded(tmp_path, monkeypatch):
    cache = ReferenceCache(tmp_path)
    cache.put(KEY, tensors(0))
    other = ReferenceCache(tmp_path)  # another worker, which sweeps replaced files at once
    other.ORPHAN_GRACE_S = -1.0
    real_read = cache._read

    def read_after_an_overwrite(key, text):
        if not other.stats.writes:  # between our sidecar read and our tensor read:
            other.put(KEY, tensors(1))  # the entry is replaced and its old tensor file deleted
        return real_read(key, text)

    monkeypatch.setattr(cache, "_read", read_after_an_overwrite)
    assert_bit_exact(cache.get(KEY), tensors(1))
    assert cache.stats.corrupt == 0 and cache.stats.hits == 1


def test_device_argument(tmp_path):
    cache = ReferenceCache(tmp_path)
    got = cache.get_or_compute(KEY, tensors, device="cpu")
    assert all(t.device.type == "cpu" for t in got.values())
    if torch.cuda.is_available():
        assert all(t.is_cuda for t in cache.get(KEY, device="cuda").values())


# --------------------------------------------------------------------------- concurrency


def _writer(root: str, seed: int, rounds: int) -> None:
    cache = ReferenceCache(root)
    for _ in range(rounds):
        cache.put(KEY, tensors(seed), {"writer": seed})


def _reader(root: str, stop, queue) -> None:
    try:
        cache = ReferenceCache(root)
        seen, last = set(), False
        while not last:  # read until the writers are done, then once more
            last = stop.is_set()
            got = cache.get(KEY)
            assert got is not None or not last, "no entry after the writers finished"
            if got is not None:
                # Only whole entries from one writer, never a mixture or a partial file.
                seed = next(s for s in (0, 1) if torch.equal(got["images"], tensors(s)["images"]))
                assert_bit_exact(got, tensors(seed))
                seen.add(seed)
        queue.put((sorted(seen), cache.stats.corrupt, cache.stats.hits))
    except BaseException as e:  # report instead of leaving the parent waiting
        queue.put(("error", repr(e), 0))


@pytest.mark.parametrize("seeds", [(0, 0), (0, 1)], ids=["same-data", "different-data"])
def test_concurrent_writers_leave_a_valid_entry(tmp_path, seeds):
    # fork: the workers live in this test module, which importlib import mode hides from spawn.
    ctx = multiprocessing.get_context("fork")
    queue, stop = ctx.Queue(), ctx.Event()
    writers = [ctx.Process(target=_writer, args=(str(tmp_path), s, 40)) for s in seeds]
    reader = ctx.Process(target=_reader, args=(str(tmp_path), stop, queue))
    for p in [reader, *writers]:
        p.start()
    for p in writers:
        p.join(timeout=120)
        assert p.exitcode == 0
    stop.set()
    seen, corrupt, hits = queue.get(timeout=120)
    assert seen != "error", corrupt
    reader.join(timeout=120)
    assert reader.exitcode == 0
    assert corrupt == 0  # the reader never saw (and so never deleted) a partial entry
    assert hits > 0
    assert set(seen) <= set(seeds)
    cache = ReferenceCache(tmp_path)
    got = cache.get(KEY)
    assert got is not None and cache.stats.corrupt == 0
    winner = cache.meta(KEY)["writer"]
    assert winner in seeds
    assert_bit_exact(got, tensors(winner))
    assert not list(tmp_path.rglob("*.tmp"))
