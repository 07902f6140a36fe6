"""tiny-wan's data: short captioned clips of one moving shape, drawn by code, and a detector that
says what a clip shows.

tiny-wan is trained on the CPU from nothing, so its videos must be generated, not downloaded. A
clip is one shape of a named colour on a plain background of another, doing one thing over the
frames: moving left, right, up or down, growing, shrinking, spinning (squares and triangles: a
circle or ring looks the same at every angle) or turning another colour. The caption names the
colour, shape, motion and background; where the shape starts, how far and how fast it goes, its
size and the spin direction are drawn from the clip's seed, so a caption has many clips.

Because every clip comes from a small structured `Clip`, whether a generated clip follows its
prompt can be checked by code: `detect` finds the background and object colours, the shape and
the motion (from the object's centroid, area, colour and outline across the frames), and `check`
compares that with a caption's `Clip`.

A fixed 15% of the (colour, shape, motion) triples are held out of training (`is_heldout`), so
generalisation can be measured on prompts the model never saw. Everything is deterministic
given the seeds.

>>> clip = Clip("circle", "red", "left", "blue")
>>> caption(clip)
'a red circle moving left on a blue background'
>>> parse_caption(caption(clip)) == clip
True
>>> render(clip).shape
(17, 32, 32, 3)
>>> check(render(clip), clip)["motion"]
'left'

Regenerate the prompt files with ``python -m zeustune.models.tinywan.scenes --write-prompts``.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..tinyflux.scenes import _SS, COLORS, _classify, _downsample, _grid, _mask, _nearest, _stable_hash

SHAPES = ("circle", "square", "triangle", "ring")
MOTIONS = ("left", "right", "up", "down", "growing", "shrinking", "spinning", "turning")
MOVES: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}  # y down
SPINNING_SHAPES = ("square", "triangle")
FRAMES = 17  # 4k + 1, as Wan's VAE wants: 5 latent frames
SIZE = 32  # pixels: with the 4x spatial VAE and 2x2 patches, 4x4 tokens per latent frame
HELDOUT_FRACTION = 0.15

#: Geometry as fractions of the frame side: the shape's box (its diameter), how far a moving shape
#: travels, the sizes a growing shape goes between, how far a spinning one turns (degrees).
DIAMETER = (0.3, 0.4)
TRAVEL = (0.3, 0.4)
GROW_FROM, GROW_TO = (0.14, 0.18), (0.42, 0.48)
SPIN = (60.0, 90.0)
MARGIN = 0.05  # 1.6 px at 32 px: anti-aliased edges stay off the border
#: A turning shape holds its first colour for this fraction of the clip, blends, then holds the second.
HOLD = 0.25

_NAMES = tuple(COLORS)
_PALETTE = np.array([COLORS[c] for c in _NAMES], dtype=np.float32)


@dataclass(frozen=True)
class Clip:
    shape: str
    color: str
    motion: str
    background: str
    to_color: str | None = None  # the colour a "turning" shape ends in

    def __post_init__(self):
        for value, allowed in ((self.shape, SHAPES), (self.color, COLORS), (self.motion, MOTIONS), (self.background, COLORS)):
            if value not in allowed:
                raise ValueError(f"unknown attribute {value!r} in {self}")
        if self.background == self.color:
            raise ValueError(f"the background must differ from the shape's colour: {self}")
        if self.motion == "spinning" and self.shape not in SPINNING_SHAPES:
            raise ValueError(f"a spinning {self.shape} looks still; only {', '.join(SPINNING_SHAPES)} spin: {self}")
        if (self.motion == "turning") != (self.to_color is not None):
            raise ValueError(f"to_color is set exactly when the motion is 'turning': {self}")
        if self.to_color is not None and (self.to_color not in COLORS or self.to_color in (self.color, self.background)):
            raise ValueError(f"to_color must be a colour other than the shape's and the background's: {self}")


# --- held-out split --------------------------------------------------------------------------


TRIPLES = tuple(
    (c, s, m) for c in COLORS for s in SHAPES for m in MOTIONS if m != "spinning" or s in SPINNING_SHAPES
)
#: For every motion, the round(15%) of its (colour, shape) pairs with the smallest stable hash
#: (5 of 36, 3 of 18 for spinning: 38 of the 270 triples): a fixed set, the same on every machine.
HELDOUT = frozenset(
    t
    for m in MOTIONS
    for pairs in [sorted((t for t in TRIPLES if t[2] == m), key=lambda t: _stable_hash("/".join(t)))]
    for t in pairs[: round(HELDOUT_FRACTION * len(pairs))]
)


def is_heldout(clip: Clip) -> bool:
    """Whether the clip's (colour, shape, motion) triple is one that training never shows."""
    return (clip.color, clip.shape, clip.motion) in HELDOUT


# --- sampling --------------------------------------------------------------------------------


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    t = np.clip((p - a) @ (b - a) / float((b - a) @ (b - a)), 0.0, 1.0)
    return float(np.linalg.norm(a + t * (b - a) - p))


def _backgrounds(color: str, to_color: str | None) -> list[str]:
    """Background colours for a shape: any other colour; for a turning shape also not its end
    colour nor near the blend between the two (black to white passes through gray)."""
    if to_color is None:
        return [c for c in COLORS if c != color]
    a, b = np.array(COLORS[color], np.float32), np.array(COLORS[to_color], np.float32)
    return [c for c in COLORS if c not in (color, to_color) and _segment_distance(np.array(COLORS[c], np.float32), a, b) >= 60]


def sample_clip(rng: np.random.Generator, split: str = "train") -> Clip:
    """A clip of a split: "train" never draws a held-out triple, "heldout" draws only those."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")
    triples = [t for t in TRIPLES if (t in HELDOUT) == (split == "heldout")]
    color, shape, motion = triples[rng.integers(len(triples))]
    to_color = None
    while True:  # a turning colour pair with no background far enough from its blend is drawn again
        if motion == "turning":
            others = [c for c in COLORS if c != color]
            to_color = others[rng.integers(len(others))]
        backgrounds = _backgrounds(color, to_color)
        if backgrounds:
            return Clip(shape, color, motion, backgrounds[rng.integers(len(backgrounds))], to_color)


# --- captions --------------------------------------------------------------------------------


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption(clip: Clip) -> str:
    """Lowercase, deterministic: "a red circle moving left on a blue background", "a green square
    spinning on a white background", "an orange ring turning blue on a gray background". At most 9
    words: 10 tokens with EOS in tiny-wan's tokenizer."""
    if clip.motion in MOVES:
        doing = f"moving {clip.motion}"
    elif clip.motion == "turning":
        doing = f"turning {clip.to_color}"
    else:
        doing = clip.motion
    return f"{_article(clip.color)} {clip.color} {clip.shape} {doing} on {_article(clip.background)} {clip.background} background"


#: Every word a caption can use, in a fixed order (tiny-wan's tokenizer is built from these).
WORDS = ("a", "an", "on", "background", "moving", *MOVES, "growing", "shrinking", "spinning", "turning", *COLORS, *SHAPES)

_COLOR = "|".join(COLORS)
_CAPTION_RE = re.compile(
    rf"an? ({_COLOR}) ({'|'.join(SHAPES)}) (?:moving ({'|'.join(MOVES)})|(growing|shrinking|spinning)|turning ({_COLOR}))"
    rf" on an? ({_COLOR}) background"
)


def parse_caption(text: str) -> Clip:
    """The Clip that caption() describes as `text` (its exact inverse); ValueError otherwise."""
    m = _CAPTION_RE.fullmatch(text)
    if m is None:
        raise ValueError(f"not a tiny-wan caption: {text!r}")
    color, shape, move, change, to_color, background = m.groups()
    motion = move or change or "turning"
    try:
        clip = Clip(shape, color, motion, background, to_color)
    except ValueError as e:
        raise ValueError(f"not a tiny-wan caption: {text!r} ({e})") from None
    if caption(clip) != text:  # "a orange ...": not caption()'s wording
        raise ValueError(f"not a tiny-wan caption: {text!r}")
    return clip


# --- rendering -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Track:
    """Where the shape is in each frame: centre (fractions of the side), diameter, angle (degrees)
    and how far its colour has turned (0: first colour, 1: second)."""

    x: np.ndarray
    y: np.ndarray
    diameter: np.ndarray
    angle: np.ndarray
    blend: np.ndarray


def track(clip: Clip, frames: int = FRAMES, rng: np.random.Generator | None = None) -> Track:
    """The clip's path, drawn from `rng`: constant speed, growth rate and spin across the frames."""
    rng = rng if rng is not None else np.random.default_rng(0)
    u = np.linspace(0.0, 1.0, frames)
    d0 = d1 = rng.uniform(*DIAMETER)
    if clip.motion == "growing":
        d0, d1 = rng.uniform(*GROW_FROM), rng.uniform(*GROW_TO)
    elif clip.motion == "shrinking":
        d0, d1 = rng.uniform(*GROW_TO), rng.uniform(*GROW_FROM)
    reach = max(d0, d1) / 2 * (np.sqrt(2) if clip.motion == "spinning" else 1.0)  # a turned square's corners
    lo, hi = reach + MARGIN, 1 - reach - MARGIN
    x0, y0 = rng.uniform(lo, hi, size=2)
    dx = dy = 0.0
    if clip.motion in MOVES:
        sx, sy = MOVES[clip.motion]
        travel = rng.uniform(*TRAVEL)
        start = rng.uniform(lo, hi - travel)  # along the motion, from the side it leaves
        if sx:
            x0, dx = (start if sx > 0 else 1 - start), sx * travel
        else:
            y0, dy = (start if sy > 0 else 1 - start), sy * travel
    spin = rng.choice([-1.0, 1.0]) * rng.uniform(*SPIN) if clip.motion == "spinning" else 0.0
    blend = np.clip((u - HOLD) / (1 - 2 * HOLD), 0.0, 1.0) if clip.motion == "turning" else np.zeros(frames)
    return Track(x0 + dx * u, y0 + dy * u, d0 + (d1 - d0) * u, spin * u, blend)


def render(clip: Clip, frames: int = FRAMES, size: int = SIZE, seed: int = 0) -> np.ndarray:
    """The clip as uint8 frames x size x size x 3, each frame drawn at 4x and box-downsampled.

    `seed` draws the path (see `track`) and jitters the shape's colours (+-4 levels).
    """
    rng = np.random.default_rng(seed)
    path = track(clip, frames, rng)
    start = _PALETTE[_NAMES.index(clip.color)] + rng.integers(-4, 5, size=3)
    end = start if clip.to_color is None else _PALETTE[_NAMES.index(clip.to_color)] + rng.integers(-4, 5, size=3)
    background = _PALETTE[_NAMES.index(clip.background)]
    out = np.empty((frames, size, size, 3), np.float32)
    x, y = _grid(size * _SS)
    for f in range(frames):
        img = out[f]
        img[:] = background
        cx, cy, r = path.x[f] * size, path.y[f] * size, path.diameter[f] * size / 2
        reach = r * (np.sqrt(2) if clip.motion == "spinning" else 1.0)
        x0, x1 = max(0, int(cx - reach - 1)), min(size, int(np.ceil(cx + reach + 1)))
        y0, y1 = max(0, int(cy - reach - 1)), min(size, int(np.ceil(cy + reach + 1)))
        sub = (slice(y0 * _SS, y1 * _SS), slice(x0 * _SS, x1 * _SS))
        px, py = x[sub] - cx, y[sub] - cy
        a = np.deg2rad(path.angle[f])
        if a:  # turn the sampling grid the other way: the shape turns by `a` (clockwise on screen)
            px, py = np.cos(a) * px + np.sin(a) * py, -np.sin(a) * px + np.cos(a) * py
        cover = _downsample(_mask(clip.shape, px, py, r).astype(np.float32))[..., None]
        color = start + path.blend[f] * (end - start)
        img[y0:y1, x0:x1] += cover * (color - img[y0:y1, x0:x1])
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def clips(seed: int, split: str = "train", frames: int = FRAMES, size: int = SIZE) -> Iterator[tuple[np.ndarray, str]]:
    """An endless, reproducible stream of (rendered clip, caption) of a split."""
    rng = np.random.default_rng(seed)
    while True:
        clip = sample_clip(rng, split)
        yield render(clip, frames, size, seed=int(rng.integers(2**31))), caption(clip)


def dataset(n: int, seed: int, frames: int = FRAMES, size: int = SIZE, split: str = "train") -> tuple[np.ndarray, list[str]]:
    """The first n clips of `clips(seed, split)`: n x frames x size x size x 3 uint8, and captions."""
    stream = clips(seed, split, frames, size)
    videos = np.empty((n, frames, size, size, 3), np.uint8)
    captions = []
    for i in range(n):
        videos[i], text = next(stream)
        captions.append(text)
    return videos, captions


def prompts(split: str, n: int, seed: int) -> list[str]:
    """n distinct captions of sampled clips of a split, in sampling order."""
    rng = np.random.default_rng(seed)
    seen: dict[str, None] = {}
    while len(seen) < n:
        seen[caption(sample_clip(rng, split))] = None
    return list(seen)


# --- detecting -------------------------------------------------------------------------------


def _vote(pixels: np.ndarray, background: np.ndarray, bg_index: int) -> int | None:
    """Index of the object's colour among pixels: the most frequent nearest named colour of the
    half of the non-background pixels farthest from the background (anti-aliased or blurred edges
    blend the two and can land near a third colour); None if there are too few."""
    near = _nearest(pixels)
    keep = near != bg_index
    if keep.sum() < 8:
        return None
    far = np.linalg.norm(pixels[keep] - background, axis=-1)
    votes = near[keep][far >= np.median(far)]
    return int(np.bincount(votes, minlength=len(_NAMES)).argmax())


def _object_mask(img: np.ndarray, background: np.ndarray, bg_index: int) -> np.ndarray:
    """Pixels nearer the frame's object colour than the background, on the line between the two
    (anti-aliased edges count, stray pixels of other colours do not)."""
    near = _nearest(img)
    index = _vote(img.reshape(-1, 3), background, bg_index)
    if index is None:
        return np.zeros(img.shape[:2], bool)
    color = np.median(img[near == index], axis=0)
    axis = color - background
    alpha = (img - background) @ axis / max(float(axis @ axis), 1e-6)
    off_line = np.linalg.norm(img - background - alpha[..., None] * axis, axis=-1)
    return (alpha > 0.5) & (off_line < 0.35 * np.linalg.norm(axis))


def _centred_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two masks after moving b's centroid onto a's (whole pixels)."""
    (ya, xa), (yb, xb) = (np.argwhere(m).mean(0) for m in (a, b))
    shifted = np.roll(b, (round(ya - yb), round(xa - xb)), axis=(0, 1))
    return float((a & shifted).sum() / max(1, (a | shifted).sum()))


#: Thresholds of `detect`, in fractions of the side and ratios. The clips have travel 0.3-0.4,
#: area ratios ~5-12 for growing, and spins whose outline overlaps the first at IoU 0.71 (square at
#: 45 degrees) or 0.5 (triangle at 60); a still shape stays above ~0.9 even blurred.
MIN_TRAVEL = 0.12
MIN_AREA_RATIO = 2.0
MAX_SPIN_IOU = 0.82


def detect(video: np.ndarray) -> dict:
    """What a clip (uint8 frames x H x W x 3) shows: background colour, the object's colour in the
    first and last quarter of the frames, its shape, its motion and the per-frame track.

    * background: the most frequent nearest named colour over all pixels (the shape covers at most
      ~18% of a frame);
    * colours: a vote of the purest non-background pixels (see `_vote`);
    * track: centroid (fractions of the side, y down) and area (fraction of the frame) of the
      object's mask in each frame;
    * motion, by the first test that holds: a line fitted to the centroids moves at least
      MIN_TRAVEL ("left", "right", "up", "down" by its larger component); the area of the last
      quarter over the first is above MIN_AREA_RATIO ("growing") or below its inverse
      ("shrinking"); the colour changes ("turning"); the outline, centred, overlaps the first
      frame's at IoU below MAX_SPIN_IOU in some frame ("spinning"); else "still". "none" when no
      object is found in at least half of the frames;
    * shape: `tinyflux.scenes._classify` on the mask of the first frame for a spinning shape (it
      starts upright), else of the frame where the shape is largest.
    """
    video = np.asarray(video, dtype=np.float32)[..., :3]
    frames, size = video.shape[0], video.shape[1]
    bg_index = int(np.bincount(_nearest(video[::2, ::2, ::2]).ravel(), minlength=len(_NAMES)).argmax())
    background = _PALETTE[bg_index]
    quarter = max(1, round(frames / 4))
    first = _vote(video[:quarter].reshape(-1, 3), background, bg_index)
    last = _vote(video[-quarter:].reshape(-1, 3), background, bg_index)
    masks = np.stack([_object_mask(f, background, bg_index) for f in video])
    area = masks.sum((1, 2)) / size**2
    seen = area * size**2 >= 4
    cx = np.full(frames, np.nan)
    cy = np.full(frames, np.nan)
    for f in np.flatnonzero(seen):
        cy[f], cx[f] = (np.argwhere(masks[f]).mean(0) + 0.5) / size
    result = {
        "background": _NAMES[bg_index],
        "color": _NAMES[first] if first is not None else "none",
        "end_color": _NAMES[last] if last is not None else "none",
        "shape": "none",
        "motion": "none",
        "x": cx.round(4).tolist(),
        "y": cy.round(4).tolist(),
        "area": area.round(5).tolist(),
    }
    if seen.sum() < frames / 2:
        return result
    t = np.flatnonzero(seen)
    span = frames - 1
    move_x, move_y = (np.polyfit(t, c[t], 1)[0] * span for c in (cx, cy))
    growth = area[-quarter:][seen[-quarter:]].mean() / max(area[:quarter][seen[:quarter]].mean(), 1e-6) \
        if seen[:quarter].any() and seen[-quarter:].any() else 1.0
    first_seen = int(t[0])
    spin_iou = min(_centred_iou(masks[first_seen], masks[f]) for f in t)
    if max(abs(move_x), abs(move_y)) >= MIN_TRAVEL:
        if abs(move_x) >= abs(move_y):
            motion = "right" if move_x > 0 else "left"
        else:
            motion = "down" if move_y > 0 else "up"
    elif growth >= MIN_AREA_RATIO:
        motion = "growing"
    elif growth <= 1 / MIN_AREA_RATIO:
        motion = "shrinking"
    elif first != last:
        motion = "turning"
    elif spin_iou < MAX_SPIN_IOU:
        motion = "spinning"
    else:
        motion = "still"
    shape_frame = first_seen if motion == "spinning" else int(area.argmax())
    result["shape"] = _classify(masks[shape_frame])[0]
    result["motion"] = motion
    result.update(travel=[round(float(move_x), 4), round(float(move_y), 4)], growth=round(float(growth), 3),
                  spin_iou=round(spin_iou, 3))
    return result


def check(video: np.ndarray, clip: Clip) -> dict:
    """Does a clip show `clip`? `detect`'s findings with a verdict on each: colour (the first
    quarter's), shape, motion (for "turning" also the end colour) and background."""
    found = detect(video)
    motion_ok = found["motion"] == clip.motion and (clip.to_color is None or found["end_color"] == clip.to_color)
    return {
        **found,
        "color_ok": found["color"] == clip.color,
        "shape_ok": found["shape"] == clip.shape,
        "motion_ok": motion_ok,
        "background_ok": found["background"] == clip.background,
    }


# --- prompt files ----------------------------------------------------------------------------

PROMPT_DIR = Path(__file__).resolve().parents[2] / "prompt_sets" / "tiny-wan"
PROMPT_FILES = {"calib.txt": ("train", 64, 1), "heldout.txt": ("heldout", 64, 2)}


def prompt_file_text(name: str) -> str:
    """The text of a prompt file: a '# ' header saying how it was made, then one caption a line."""
    from ..prompts import generated_prompt_file

    return generated_prompt_file("zeustune.models.tinywan.scenes", prompts, *PROMPT_FILES[name])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zeustune.models.tinywan.scenes", description=__doc__.splitlines()[0])
    parser.add_argument("--write-prompts", action="store_true", help=f"write {', '.join(PROMPT_FILES)} to {PROMPT_DIR}")
    parser.add_argument("--preview", metavar="PNG", help="save 8 training clips as rows of frames (and print captions)")
    args = parser.parse_args(argv)
    if args.write_prompts:
        PROMPT_DIR.mkdir(parents=True, exist_ok=True)
        for name in PROMPT_FILES:
            (PROMPT_DIR / name).write_text(prompt_file_text(name))
            print(PROMPT_DIR / name)
    if args.preview:
        from PIL import Image

        videos, captions = dataset(8, seed=0)
        n, f, h, w, _ = videos.shape
        grid = videos.transpose(0, 2, 1, 3, 4).reshape(n * h, f * w, 3)
        Image.fromarray(grid).resize((f * w * 2, n * h * 2), Image.NEAREST).save(args.preview)
        print("\n".join(captions))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
