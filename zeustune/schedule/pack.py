"""A pack: the schedules of one model for several settings and speeds, shipped with the model.

A pack is a folder, by convention ``zeustune/`` beside a model's ``model_index.json``, holding
schedule files and an index, ``pack.yaml``:

    zeustune_pack: 1
    description: tiny-flux at 20 and 28 steps
    default_speed: 3x                  # optional; else enable() or zeustune.speed() names one
    schedules:
      - {file: 28-64x64-3x.yaml, speed: 3x}
      - {file: 20-64x64-3x.yaml, speed: 3x}
      - {file: 28-64x64-2x.yaml, speed: 2x}

Every schedule is validated as a single schedule file is; the pack then checks that they are of
one model (``model``: family, id and pipeline; LoRAs are a setting) and that no two entries at one
speed are tuned for settings the runtime cannot tell apart (:meth:`Pack.choose` must never have to
guess). The runtime (``zeustune.enable(pipe, pack)``) chooses an entry at the start of every call
from what the call is: :class:`Setting`.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from . import safeyaml
from .format import ScheduleError, Schedule
from .messages import shown

PACK_VERSION = 1
INDEX = "pack.yaml"
#: A model folder's pack: this folder beside its model_index.json.
FOLDER = "zeustune"
_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.ya?ml")  # inside the pack folder, no path
_SPEED = re.compile(r"(\d+(?:\.\d+)?)x?")
#: Guidance modes whose scale the pipeline records where the runtime reads it (``pipe._guidance_scale``):
#: CFG, FLUX's distilled guidance, and Wan's CFG (a second call, "true_cfg" here). FLUX's true CFG
#: scale is a local of FluxPipeline's __call__: its entries are told apart by the other settings.
_SEEN_GUIDANCE = {("sd3", "cfg"), ("sdxl", "cfg"), ("sd", "cfg"), ("flux", "distilled"), ("wan", "true_cfg")}


class PackError(ScheduleError):
    """A pack that is malformed, or that holds schedules of different models."""


def parse_speed(value: Any, source: str = "speed", field: str = "speed") -> float:
    """``"3x"``, ``"3"``, ``3`` or ``3.0`` -> 3.0 (a speedup over full steps, at least 1)."""
    text = str(value).strip().lower() if isinstance(value, (str, int, float)) and not isinstance(value, bool) else ""
    m = _SPEED.fullmatch(text)
    if m is None or float(m.group(1)) < 1:
        raise PackError(source, field, value, "a speedup such as 3x (a number >= 1, 'x' optional)")
    return float(m.group(1))


def speed_label(speed: float) -> str:
    return f"{speed:g}x"


@dataclass(frozen=True)
class Setting:
    """What a pipeline call is sampled at, as far as a pack chooses by it. ``None`` is unknown (the
    call) or unrecorded (a schedule): it matches anything."""

    scheduler: str
    steps: int
    height: int | None = None
    width: int | None = None
    frames: int | None = None
    guidance: float | None = None  # the scale pipe._guidance_scale holds (see _SEEN_GUIDANCE)
    loras: tuple[str, ...] = ()  # active adapter names, sorted (zeustune names them <name>-<sha8>)

    @classmethod
    def of(cls, schedule: Schedule) -> Setting:
        """The setting a schedule was tuned at."""
        s, g = schedule.sampler, schedule.sampler.guidance
        seen = g.scale if (schedule.model.family, g.mode) in _SEEN_GUIDANCE else None
        return cls(s.scheduler, s.steps, s.height, s.width, s.frames, seen, tuple(sorted(x.adapter for x in schedule.model.loras)))

    def differences(self, call: Setting) -> list[str]:
        """What differs between this (tuned) setting and a call's, one phrase each; [] = it matches."""
        out = []
        if self.scheduler != call.scheduler:
            out.append(f"scheduler {call.scheduler} (tuned: {self.scheduler})")
        if self.steps != call.steps:
            out.append(f"{call.steps} steps (tuned: {self.steps})")
        for name in ("height", "width", "frames"):
            mine, theirs = getattr(self, name), getattr(call, name)
            if mine is not None and theirs is not None and mine != theirs:
                out.append(f"{name} {theirs} (tuned: {mine})")
        if self.guidance is not None and call.guidance is not None and not math.isclose(self.guidance, call.guidance):
            out.append(f"guidance {call.guidance:g} (tuned: {self.guidance:g})")
        if self.loras != call.loras:
            out.append(f"LoRAs [{', '.join(call.loras) or 'none'}] (tuned: [{', '.join(self.loras) or 'none'}])")
        return out

    def distance(self, call: Setting) -> tuple:
        """How far a call is from this setting, for the nearest entry: the scheduler first, then the
        LoRAs, the image size (log of the pixel ratio), the step count (log ratio), the guidance."""
        def log_ratio(a, b):
            return abs(math.log(a / b)) if a and b else 0.0

        pixels = [(s.height or 0) * (s.width or 0) * (s.frames or 1) for s in (self, call)]
        guidance = abs(self.guidance - call.guidance) if self.guidance is not None and call.guidance is not None else 0.0
        return (self.scheduler != call.scheduler, self.loras != call.loras, log_ratio(*pixels),
                log_ratio(self.steps, call.steps), guidance)

    def __str__(self) -> str:
        size = "x".join(str(v) for v in (self.height, self.width) if v is not None)
        parts = [f"{self.steps} steps", size, f"{self.frames} frames" if self.frames else ""]
        if self.guidance is not None:
            parts.append(f"guidance {self.guidance:g}")
        if self.loras:
            parts.append(f"LoRAs {', '.join(self.loras)}")
        return ", ".join(p for p in parts if p)


@dataclass(frozen=True)
class Entry:
    file: str
    speed: float
    schedule: Schedule

    @property
    def setting(self) -> Setting:
        return Setting.of(self.schedule)


@dataclass(frozen=True)
class Choice:
    """The entry a call runs, and how it was chosen: ``exact``, or the nearest one at the speed,
    whose ``differences`` from the call are listed (the runtime resamples it, or runs full steps)."""

    entry: Entry
    exact: bool
    differences: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pack:
    source: str
    entries: tuple[Entry, ...]
    default_speed: float | None = None
    description: str = ""

    @property
    def model(self):
        return self.entries[0].schedule.model

    @property
    def speeds(self) -> list[float]:
        return sorted({e.speed for e in self.entries})

    def speed(self, value: Any, field: str = "speed") -> float:
        """A speed this pack holds (``"3x"``, 3, ...), or PackError naming the ones it does."""
        v = parse_speed(value, self.source, field)
        if v not in self.speeds:
            raise PackError(self.source, field, value, f"one of {', '.join(map(speed_label, self.speeds))} (the speeds this pack holds)")
        return v

    def choose(self, call: Setting, speed: float) -> Choice:
        """The entry at ``speed`` tuned for the call's setting; else the nearest one at that speed."""
        here = [e for e in self.entries if e.speed == speed]
        if not here:
            raise PackError(self.source, "speed", speed_label(speed), f"one of {', '.join(map(speed_label, self.speeds))}")
        exact = [e for e in here if not e.setting.differences(call)]
        if exact:  # unrecorded fields match anything: the entry that records most of the call wins
            return Choice(max(exact, key=lambda e: sum(v is not None for v in vars(e.setting).values())), True)
        nearest = min(here, key=lambda e: e.setting.distance(call))
        return Choice(nearest, False, tuple(nearest.setting.differences(call)))

    @classmethod
    def load(cls, folder: str | os.PathLike) -> Pack:
        """A pack folder, or a model folder carrying one in ``zeustune/``."""
        folder = Path(folder)
        if not (folder / INDEX).is_file() and (folder / FOLDER / INDEX).is_file():
            folder = folder / FOLDER
        source = str(folder)
        if not (folder / INDEX).is_file():
            raise PackError(source, "file", str(folder / INDEX), f"a pack index ({INDEX}) in this folder or in its {FOLDER}/")
        return from_dict(safeyaml.read(folder / INDEX, PackError), folder)

    def save_index(self, folder: str | os.PathLike) -> Path:
        """Write ``pack.yaml`` for these entries (their files are written by the caller)."""
        data = {"zeustune_pack": PACK_VERSION}
        if self.description:
            data["description"] = self.description
        if self.default_speed is not None:
            data["default_speed"] = speed_label(self.default_speed)
        data["schedules"] = [{"file": e.file, "speed": speed_label(e.speed)} for e in self.entries]
        path = Path(folder) / INDEX
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(yaml.safe_dump(data, sort_keys=False, width=200))
        os.replace(tmp, path)  # atomic: a reader never sees half an index
        return path


def is_pack(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a pack folder or a model folder carrying one."""
    p = Path(path)
    return (p / INDEX).is_file() or (p / FOLDER / INDEX).is_file()


def from_dict(data: Any, folder: Path) -> Pack:
    source = str(folder)

    def fail(field: str, value: Any, expected: str):
        raise PackError(source, field, value, expected)

    if not isinstance(data, dict):
        fail("document", data, "a mapping with zeustune_pack and schedules")
    allowed = ("zeustune_pack", "description", "default_speed", "schedules")
    for key in data:
        if key not in allowed:
            fail(str(key), key, f"one of the keys {', '.join(allowed)}")
    if data.get("zeustune_pack") != PACK_VERSION or isinstance(data.get("zeustune_pack"), bool):
        fail("zeustune_pack", data.get("zeustune_pack"), f"{PACK_VERSION} (the pack versions this zeustune reads)")
    description = data.get("description") or ""
    if not isinstance(description, str):
        fail("description", description, "a string")
    listed = data.get("schedules")
    if not isinstance(listed, list) or not listed:
        fail("schedules", listed, "a non-empty list of {file, speed}")

    entries: list[Entry] = []
    for i, item in enumerate(listed):
        where = f"schedules[{i}]"
        if not isinstance(item, dict) or set(item) != {"file", "speed"}:
            fail(where, item, "a mapping with exactly the keys file and speed")
        name = item["file"]
        if not isinstance(name, str) or not _FILE.fullmatch(name):
            fail(f"{where}.file", name, "a .yaml file name in the pack folder (letters, digits, '.', '_', '-'; no folders)")
        if any(e.file == name for e in entries):
            fail(f"{where}.file", name, "each file once")
        entries.append(Entry(name, parse_speed(item["speed"], source, f"{where}.speed"), Schedule.load(folder / name)))

    first = entries[0]
    for e in entries[1:]:  # one model: the runtime checks the family once, at enable()
        for key in ("family", "id", "pipeline"):
            mine, theirs = getattr(first.schedule.model, key), getattr(e.schedule.model, key)
            if mine != theirs:
                fail(f"{e.file}: model.{key}", theirs,
                     f"{shown(mine)} as in {first.file} (a pack holds the schedules of one model)")
    for i, a in enumerate(entries):
        for b in entries[i + 1:]:
            if a.speed == b.speed and a.setting == b.setting:
                fail(f"{b.file}: sampler", str(b.setting),
                     f"a setting no other {speed_label(a.speed)} entry has: {a.file} has it too, and the runtime could "
                     "not tell the two apart (FLUX's true CFG scale is not visible to it)")
    pack = Pack(source, tuple(entries), None, description)
    default = data.get("default_speed")
    return pack if default is None else replace(pack, default_speed=pack.speed(default, "default_speed"))
