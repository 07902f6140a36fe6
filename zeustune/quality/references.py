"""An on-disk cache of reference outputs (full-step images, final latents), keyed by their inputs.

A reference is a deterministic function of the model, the scheduler, the sampling settings, the
prompt and the seed, so its key is a hash of exactly those (``reference_key``), with the model
represented by a cheap fingerprint of its weights and configs (``model_fingerprint``).

Layout under the root (``$ZEUSTUNE_CACHE``, else ``~/.cache/zeustune/references``)::

    <key[:2]>/<key>.json                           sidecar: meta, sha256 and size of the tensors,
                                                   and a sha256 of its own fields
    <key[:2]>/<key>.<sha256[:16]>.safetensors      the tensors, named by their content

Both files are written to a temporary file in the same directory and moved into place with
``os.replace``, tensors first, sidecar last: the sidecar is the commit, so readers on the same
filesystem see either the old entry, the new one or none, never a partial file. Concurrent writers
of one key each commit a complete entry and the last sidecar wins. Every read checks the sidecar
(its own checksum) and the tensor file (size, sha256, parse); a corrupt, truncated or half-deleted
entry is logged, deleted and reported as a miss (only once a re-read of an unchanged sidecar
fails again, so a read racing a writer is not mistaken for corruption). Tensor files without a
sidecar, or no longer referenced by it, and temporary files are deleted once they are older than
``ORPHAN_GRACE_S`` (a younger one may be a write in progress, or in use by a concurrent reader).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import numbers
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["CacheStats", "ReferenceCache", "default_root", "model_fingerprint", "reference_key"]

log = logging.getLogger(__name__)

_KEY_SCHEMA = 1


# --------------------------------------------------------------------------- keys


def _canon_float(x: float) -> Any:
    if math.isnan(x) or math.isinf(x):
        return {"__float__": repr(x)}
    if x.is_integer():
        return int(x)  # 7.0 and 7 (and -0.0 and 0) give one key
    return float(format(x, ".15g"))  # drops float64 noise: 0.1 + 0.2 and 0.3 give one key


def _tensor_digest(t: torch.Tensor) -> dict:
    t = t.detach().to("cpu").contiguous()
    data = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
    return {"__tensor__": {"dtype": str(t.dtype), "shape": list(t.shape),
                           "sha256": hashlib.sha256(data).hexdigest()}}


def _canon(v: Any, where: str) -> Any:
    """A JSON value standing for ``v``; equal for values that sample the same reference."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        return _canon_float(float(v))
    if type(v).__module__ == "numpy":  # arrays, numpy bools
        return _canon(torch.tensor(v) if v.shape else v.item(), where)
    if isinstance(v, torch.Tensor):
        return _canon(v.item(), where) if v.numel() == 1 and v.ndim == 0 else _tensor_digest(v)
    if isinstance(v, (torch.dtype, torch.device)):
        return str(v)
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    if isinstance(v, Mapping):
        # integer keys occur in model configs (transformers' id2label); JSON spells them as text
        bad = [k for k in v if not isinstance(k, (str, numbers.Integral)) or isinstance(k, bool)]
        if bad:
            raise TypeError(f"reference_key: {where}: keys must be strings or integers, got {bad[0]!r}")
        return {str(k): _canon(x, f"{where}.{k}") for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_canon(x, f"{where}[{i}]") for i, x in enumerate(v)]
    if isinstance(v, (set, frozenset)):
        return sorted((_canon(x, where) for x in v), key=lambda c: json.dumps(c, sort_keys=True))
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return _canon(dataclasses.asdict(v), where)
    if isinstance(getattr(v, "config", None), Mapping):  # a diffusers scheduler or model
        return _canon(config_dict(v), where)
    raise TypeError(f"reference_key: {where}: cannot hash a {type(v).__name__}; pass plain values")


def config_dict(obj: Any) -> dict:
    """The behaviour-relevant config of a diffusers/transformers object: its class name and its
    public config entries (keys starting with '_', such as ``_diffusers_version`` or
    ``_name_or_path``, and ``transformers_version`` are left out)."""
    config = obj.config
    config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    public = {k: v for k, v in config.items() if not k.startswith("_") and k != "transformers_version"}
    return {"class": type(obj).__name__, "config": public}


def reference_key(**parts: Any) -> str:
    """sha256 (hex) of a canonical JSON of ``parts``, e.g. model (a ``model_fingerprint``),
    scheduler (a config dict or the scheduler), steps, height, width, guidance (dict), prompt, seed.

    Argument order does not matter; floats are canonicalised (integral floats as ints, 15
    significant digits), tensors and arrays enter by dtype, shape and a hash of their bytes,
    objects with a ``config`` by ``config_dict``. A part given as None differs from a part left out.
    Library versions are not included: pass them as a part if bit-level drift matters to you.
    """
    if not parts:
        raise ValueError("reference_key: no parts given")
    payload = {"zeustune.reference_key": _KEY_SCHEMA, "parts": _canon(parts, "parts")}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- fingerprints


def _sample_indices(n: int, k: int) -> torch.Tensor:
    if n <= 3 * k:
        return torch.arange(n)
    idx = torch.cat([torch.arange(k), torch.arange(n - k, n), torch.linspace(0, n - 1, k).long()])
    return torch.unique(idx)  # sorted


def _module_fingerprint(module: torch.nn.Module, h: "hashlib._Hash", samples: int, full: bool) -> None:
    if isinstance(getattr(module, "config", None), Mapping) or hasattr(getattr(module, "config", None), "to_dict"):
        h.update(json.dumps(_canon(config_dict(module), "config"), sort_keys=True).encode())
    else:
        h.update(type(module).__name__.encode())
    state = module.state_dict()
    picks = []
    for name in sorted(state):
        t = state[name]
        if t.is_meta:
            raise ValueError(f"model_fingerprint: {name} is on the meta device (sequential offload?); "
                             "fingerprint the model before offloading it, or its directory")
        h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        if t.numel() == 0:
            continue
        if full:
            picked = t.detach().reshape(-1)
        else:
            idx = _sample_indices(t.numel(), samples)
            picked = t.detach()[torch.unravel_index(idx.to(t.device), t.shape)] if t.ndim else t.detach().reshape(1)
        picks.append(picked.contiguous().view(torch.uint8).reshape(-1))
    if not picks:
        return
    if len({p.device for p in picks}) == 1:
        h.update(torch.cat(picks).cpu().numpy().tobytes())  # one device sync
    else:
        for p in picks:
            h.update(p.cpu().numpy().tobytes())


def _file_digest(path: Path, h: "hashlib._Hash", chunk: int = 1 << 16, small: int = 4 << 20) -> None:
    size = path.stat().st_size
    h.update(f"{size}\n".encode())
    with open(path, "rb") as f:
        if size <= small:
            h.update(f.read())
            return
        for offset in [0, *(int(i * (size - chunk) / 17) for i in range(1, 17)), size - chunk]:
            f.seek(offset)
            h.update(f.read(chunk))


def model_fingerprint(obj: Any, *, samples: int = 16, full: bool = False) -> str:
    """A stable sha256 (hex) of a diffusers pipeline, an ``nn.Module`` or a local model path.

    Pipelines: pipeline class plus every component by name. Modules: class and public config,
    then for every state-dict tensor its name, dtype, shape and the raw bytes of a deterministic
    sample of its elements: the first and last ``samples`` and ``samples`` evenly strided ones.
    Schedulers: class and config; tokenizers: class and vocabulary. Paths: every non-hidden file's
    relative name and size, small files (<= 4 MiB: configs, tokenizers) whole, big ones by 18
    chunks of 64 KiB (the safetensors header with shapes and dtypes is the first).

    Trade-off: this reads kilobytes, not gigabytes, so it is cheap to call per run, and it sees any
    change of config, dtype, shape, tensor set, or of a sampled element. A change confined to
    elements outside the sample (an edit of a few weights mid-tensor) goes unseen; fine-tunes, LoRA
    fusing and requantisation change nearly every element and are caught. ``full=True`` hashes
    every element (exact, but reads all weights). The device does not enter; the dtype does. A path
    and the module loaded from it have different fingerprints.
    """
    h = hashlib.sha256(b"zeustune.model_fingerprint.1\n")
    if isinstance(obj, (str, os.PathLike)):
        root = Path(obj)
        if not root.exists():
            raise FileNotFoundError(f"model_fingerprint: {root} is not a local path (hub ids are not "
                                    "resolved: load the pipeline and pass it)")
        files = [root] if root.is_file() else sorted(
            p for p in root.rglob("*") if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(root).parts))
        for p in files:
            h.update(f"\n{p.relative_to(root).as_posix() if p != root else p.name}\n".encode())
            _file_digest(p, h)
        return h.hexdigest()
    components = getattr(obj, "components", None)
    items = sorted(components.items()) if isinstance(components, dict) else [("", obj)]
    if isinstance(components, dict):
        h.update(type(obj).__name__.encode())
    for name, comp in items:
        h.update(f"\n[{name}] {type(comp).__name__}\n".encode())
        if comp is None:
            continue
        if isinstance(comp, torch.nn.Module):
            _module_fingerprint(comp, h, samples, full)
        elif hasattr(comp, "get_vocab"):  # tokenizers
            h.update(json.dumps(sorted(comp.get_vocab().items()), ensure_ascii=False).encode())
        elif isinstance(getattr(comp, "config", None), Mapping):  # schedulers
            h.update(json.dumps(_canon(config_dict(comp), name), sort_keys=True).encode())
        elif hasattr(comp, "to_dict"):  # image processors, feature extractors
            h.update(json.dumps(_canon(comp.to_dict(), name), sort_keys=True, default=str).encode())
        elif not isinstance(components, dict):
            raise TypeError(f"model_fingerprint: expected a pipeline, an nn.Module or a path, "
                            f"got {type(obj).__name__}")
    return h.hexdigest()


# --------------------------------------------------------------------------- cache

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_FORMAT = 1


def default_root() -> Path:
    """``$ZEUSTUNE_CACHE`` if set, else ``~/.cache/zeustune/references``."""
    env = os.environ.get("ZEUSTUNE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "zeustune" / "references"


@dataclasses.dataclass
class CacheStats:
    """Counts of this cache object (this process): reads that hit or missed (corrupt entries are
    also misses), entries found corrupt and discarded, entries written."""

    hits: int = 0
    misses: int = 0
    corrupt: int = 0
    writes: int = 0


class _Corrupt(Exception):
    pass


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sidecar_check(side: dict) -> str:
    """sha256 of the sidecar's own fields (without "check"), so a damaged sidecar is seen too."""
    return hashlib.sha256(json.dumps(side, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class ReferenceCache:
    """Reference tensors on disk, by key (see the module docstring for the layout and guarantees).

    Tensors come back on the CPU (or ``device``), bit-exact. ``stats`` counts hits and misses.
    """

    #: Age in seconds after which a tensor file without sidecar (a crashed write), one replaced by a
    #: later put, or a temporary file is deleted.
    ORPHAN_GRACE_S = 300.0

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser() if root is not None else default_root()
        self.stats = CacheStats()

    def __repr__(self) -> str:
        return f"ReferenceCache({str(self.root)!r})"

    # paths
    def _dir(self, key: str) -> Path:
        if not isinstance(key, str) or not _KEY.match(key):
            raise ValueError(f"invalid cache key {key!r}: expected 1-128 characters of [A-Za-z0-9_-]")
        return self.root / key[:2]

    def sidecar_path(self, key: str) -> Path:
        return self._dir(key) / f"{key}.json"

    def tensor_path(self, key: str, sha256: str) -> Path:
        return self._dir(key) / f"{key}.{sha256[:16]}.safetensors"

    # reading
    def _read(self, key: str, text: bytes) -> tuple[dict[str, torch.Tensor], dict]:
        """The entry whose sidecar holds ``text``; raises _Corrupt if it does not check out."""
        from safetensors.torch import load

        try:
            side = json.loads(text)
            sha, size, check = side["sha256"], side["size"], side.pop("check")
            if check != _sidecar_check(side):
                raise ValueError("sidecar checksum mismatch")
            if side.get("format") != _FORMAT or side.get("key") != key or not isinstance(size, int) \
                    or not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
                raise ValueError("unexpected fields")
        except (ValueError, KeyError, TypeError) as e:
            raise _Corrupt(f"unreadable sidecar ({e})") from e
        try:
            data = self.tensor_path(key, sha).read_bytes()
        except FileNotFoundError as e:
            raise _Corrupt("tensor file missing") from e
        if len(data) != size:
            raise _Corrupt(f"tensor file has {len(data)} bytes, sidecar says {size}")
        if hashlib.sha256(data).hexdigest() != sha:
            raise _Corrupt("tensor file checksum mismatch")
        try:
            tensors = load(data)
        except Exception as e:  # noqa: BLE001 - whatever safetensors raises on bad bytes
            raise _Corrupt(f"tensor file unreadable ({e})") from e
        return tensors, side.get("meta", {})

    def _discard(self, key: str, reason: str) -> None:
        log.warning("reference cache %s: discarding corrupt entry %s: %s", self.root, key, reason)
        self.stats.corrupt += 1
        self.sidecar_path(key).unlink(missing_ok=True)
        for p in self._dir(key).glob(f"{key}.*.safetensors"):
            p.unlink(missing_ok=True)

    def _sweep(self, key: str, keep: str | None) -> None:
        """Delete files of ``key`` older than ORPHAN_GRACE_S other than the tensor file ``keep``:
        temporary files of crashed writers, tensor files without sidecar (``keep`` None, a
        partial entry) or replaced by a later put. Younger ones may belong to a write in progress."""
        d = self._dir(key)
        if not d.is_dir():
            return
        now = time.time()
        for p in [*d.glob(f"{key}.*.safetensors"), *d.glob(f".{key}.*.tmp")]:
            try:
                if p.name == keep or now - p.stat().st_mtime <= self.ORPHAN_GRACE_S:
                    continue
                if keep is None:
                    log.warning("reference cache %s: deleting partial entry %s (no sidecar)", self.root, p.name)
                    self.stats.corrupt += 1
                p.unlink(missing_ok=True)
            except FileNotFoundError:
                pass

    def _lookup(self, key: str) -> tuple[dict[str, torch.Tensor], dict] | None:
        # A concurrent put may replace the entry between reading the sidecar and the tensor file,
        # so a bad read is retried while the sidecar keeps changing; an entry is only discarded
        # when the same sidecar fails twice.
        previous, error = None, None
        for _ in range(5):
            try:
                text = self.sidecar_path(key).read_bytes()
            except FileNotFoundError:
                self._sweep(key, keep=None)
                return None
            if text == previous:
                self._discard(key, str(error))
                return None
            try:
                return self._read(key, text)
            except _Corrupt as e:
                previous, error = text, e
        return None  # writers kept replacing the entry: a miss, nothing deleted

    def get(self, key: str, device: str | torch.device | None = None) -> dict[str, torch.Tensor] | None:
        """The stored tensors (on the CPU, or ``device``), or None on a miss or a corrupt entry."""
        found = self._lookup(key)
        if found is None:
            self.stats.misses += 1
            return None
        self.stats.hits += 1
        tensors = found[0]
        return tensors if device is None else {k: v.to(device) for k, v in tensors.items()}

    def meta(self, key: str) -> dict | None:
        """The meta stored with ``key`` (after the same checks as ``get``; no hit or miss counted)."""
        found = self._lookup(key)
        return None if found is None else found[1]

    def __contains__(self, key: str) -> bool:
        return self.meta(key) is not None

    # writing
    def _put(self, key: str, tensors: Mapping[str, torch.Tensor], meta: Mapping | None) -> dict[str, torch.Tensor]:
        from safetensors.torch import save

        if not isinstance(tensors, Mapping) or not tensors:
            raise ValueError(f"put({key!r}): expected a non-empty dict of tensors, got {tensors!r:.80}")
        for name, t in tensors.items():
            if not isinstance(name, str) or not isinstance(t, torch.Tensor):
                raise TypeError(f"put({key!r}): {name!r}: expected str -> torch.Tensor, got {type(t).__name__}")
        meta = dict(meta or {})
        try:
            json.dumps(meta)
        except (TypeError, ValueError) as e:
            raise TypeError(f"put({key!r}): meta must be JSON-serialisable: {e}") from e
        cpu = {k: t.detach().to("cpu", copy=True).contiguous() for k, t in tensors.items()}
        data = save(cpu)
        sha = hashlib.sha256(data).hexdigest()
        sidecar = self.sidecar_path(key)
        sidecar.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.tensor_path(key, sha), data)
        side = {"format": _FORMAT, "key": key, "sha256": sha, "size": len(data),
                "tensors": {k: {"dtype": str(t.dtype), "shape": list(t.shape)} for k, t in cpu.items()},
                "meta": meta, "created": time.time()}
        side["check"] = _sidecar_check(side)
        _atomic_write(sidecar, json.dumps(side, indent=1, sort_keys=True).encode())
        # The replaced entry's tensor file is left until it is old: a concurrent reader or writer
        # may still be using it.
        self._sweep(key, keep=self.tensor_path(key, sha).name)
        self.stats.writes += 1
        return cpu

    def put(self, key: str, tensors: Mapping[str, torch.Tensor], meta: Mapping | None = None) -> None:
        """Store ``tensors`` (copied to the CPU) with ``meta`` (JSON-serialisable) under ``key``."""
        self._put(key, tensors, meta)

    def get_or_compute(self, key: str, fn: Callable[[], Mapping[str, torch.Tensor]],
                       meta: Mapping | None = None,
                       device: str | torch.device | None = None) -> dict[str, torch.Tensor]:
        """The stored tensors, or ``fn()`` stored then returned (as ``get`` would return it)."""
        found = self.get(key, device)
        if found is not None:
            return found
        cpu = self._put(key, fn(), meta)
        return cpu if device is None else {k: v.to(device) for k, v in cpu.items()}
