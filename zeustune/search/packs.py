"""``zeustune search`` over several settings: one study per setting (steps x size), each stored and
resumed like a single search, and every budget's schedule of each setting written into a pack.

The pack's index is rewritten after each setting, so an interrupted search leaves a valid pack of
the settings it finished; rerunning the same command skips those (their files are in the pack) and
resumes the interrupted setting's study from the storage. A pack folder that already holds other
settings of the same model keeps them: a later ``--steps 50`` adds to it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from .. import runtime
from ..models.loading import load as load_model
from ..models.settings import apply, model_slug
from ..schedule.format import Schedule, user_dir, user_schedules
from ..schedule import safeyaml
from ..schedule.pack import INDEX, Entry, Pack, PackError, from_dict, speed_label
from .cost import parse_budgets
from .driver import SearchConfig, log, run


@dataclass(frozen=True)
class Setting:
    """One study's setting: steps, and a size (None: the model's)."""

    steps: int
    height: int | None = None
    width: int | None = None

    def name(self, spec) -> str:
        """The file-name stem of its entries: ``28-1024x1024``."""
        return f"{self.steps}-{self.height or spec.height}x{self.width or spec.width}"


def default_folder(spec) -> Path:
    """Where a pack search writes without ``--pack``: ``<ZEUSTUNE_HOME>/packs/<model>``."""
    return user_dir() / "packs" / model_slug(spec)


def _existing(folder: Path) -> Pack | None:
    """The pack already in ``folder``, less the entries whose files were deleted (to be searched again)."""
    if not (folder / INDEX).is_file():
        return None
    data = safeyaml.read(folder / INDEX, PackError)
    listed = data.get("schedules") if isinstance(data, dict) else None
    if isinstance(listed, list):
        kept = [x for x in listed if not isinstance(x, dict) or not isinstance(x.get("file"), str) or (folder / x["file"]).is_file()]
        for x in listed:
            if x not in kept:
                log(f"pack: {folder / x['file']} is listed in {INDEX} but deleted: its setting is searched again")
        if not kept:
            return None
        data = {**data, "schedules": kept}
    return from_dict(data, folder)


def search_pack(cfg: SearchConfig, settings: list[Setting], folder: Path | None = None) -> dict:
    """Search ``cfg`` at each setting and write the pack; returns the pack and each setting's result."""
    budgets = parse_budgets(cfg.budget)
    pipe, base = load_model(cfg.model, device=cfg.device, progress=False)  # once: a setting is a call argument
    folder = Path(folder or default_folder(base))
    folder.mkdir(parents=True, exist_ok=True)
    have = _existing(folder)  # a pack of another model is refused here
    entries = {e.file: e for e in have.entries} if have else {}
    default = have.default_speed if have and have.default_speed is not None else budgets[0]
    done = []
    for setting in settings:
        spec = apply(base, steps=setting.steps, height=setting.height, width=setting.width)
        stem = setting.name(spec)
        files = {b: f"{stem}-{speed_label(b)}.yaml" for b in budgets}
        if all(f in entries and (folder / f).is_file() for f in files.values()):
            log(f"pack: {stem}: in {folder} already ({', '.join(files.values())}); delete a file to search its setting again")
            done.append({"setting": stem, "skipped": True})
            continue
        log(f"pack: {stem}: searching {', '.join(map(speed_label, budgets))}")
        staging = (cfg.export_dir or user_schedules() / model_slug(spec)) / stem  # the driver's exports, per setting
        result = run(replace(cfg, model=spec, export_dir=staging, out=cfg.out / stem if cfg.out else None), pipe=pipe)
        runtime.disable(pipe)
        for r in result.get("ladder", [result]):
            file = files[r["budget"]]
            schedule = replace(Schedule.load(r["path"]), tag=Path(file).stem)  # tags name the entry in summaries
            schedule.save(folder / file)
            entries[file] = Entry(file, r["budget"], schedule)
        about = have.description if have else f"{model_slug(base)}, searched by zeustune"
        Pack(str(folder), tuple(entries.values()), default, about).save_index(folder)
        Pack.load(folder)  # read back as a deployment will: one model, no two entries alike
        done.append({"setting": stem, "skipped": False, **result})
    return {"pack": Pack.load(folder), "settings": done}
