"""tiny-flux's data: synthetic captioned scenes, drawn by code, and a checker of prompt-following.

tiny-flux is trained on the CPU from nothing, so its images must be generated, not downloaded.
They still have to be worth sampling: several coloured shapes at named positions over a textured
background give trajectories that are not trivially straight, and because every image comes from
a small structured `Scene`, whether a generated image follows its prompt can be checked by code
(`check`: colour and shape of each object in its expected region, and the background colour).

A fixed 14% of the (colour, shape, position) triples are held out of training (`is_heldout`),
so compositional generalisation can be measured on prompts made only of unseen triples.
Everything is deterministic given the seeds.

>>> scene = Scene((Obj("circle", "red", "large", "left"), Obj("square", "blue", "small", "top")), "gray", "stripes")
>>> caption(scene)
'a large red circle on the left and a small blue square at the top, on a gray striped background'
>>> parse_caption(caption(scene)) == scene
True
>>> check(render(scene), scene)["color_accuracy"]
1.0

Regenerate the prompt files with ``python -m zeustune.models.tinyflux.scenes --write-prompts``.
"""

from __future__ import annotations

import argparse
import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (245, 225, 40),
    "green": (40, 170, 60),
    "blue": (40, 90, 230),
    "purple": (150, 60, 190),
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
    "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle", "ring")
SIZES = ("small", "large")
#: Object centres in [0,1]^2 (x right, y down), in reading order, which is also caption order.
POSITIONS: dict[str, tuple[float, float]] = {
    "top left": (0.19, 0.19), "top": (0.5, 0.19), "top right": (0.81, 0.19),
    "left": (0.19, 0.5), "center": (0.5, 0.5), "right": (0.81, 0.5),
    "bottom left": (0.19, 0.81), "bottom": (0.5, 0.81), "bottom right": (0.81, 0.81),
}
TEXTURES = ("plain", "stripes", "checks", "dots", "gradient")

#: Diameters as a fraction of the image side: 14 and 24 px at 64 px. Adjacent grid positions are
#: 20 px apart, so small+small and small+large fit side by side and large+large do not.
DIAMETER = {"small": 14 / 64, "large": 24 / 64}
RING_HOLE = 0.5  # inner/outer diameter: fill ~0.59 of the box, and a hole at the centre
HELDOUT_FRACTION = 0.15

# Every caption uses 3-word position phrases and one token per word, so three objects and a
# textured background take 29 words: within tiny-flux's 32 text tokens with BOS/EOS.
_PLACE = {
    "top left": "at top left", "top": "at the top", "top right": "at top right",
    "left": "on the left", "center": "in the center", "right": "on the right",
    "bottom left": "at bottom left", "bottom": "at the bottom", "bottom right": "at bottom right",
}
_TEXTURE_WORD = {"plain": "", "stripes": "striped ", "checks": "checkered ", "dots": "dotted ", "gradient": "gradient "}
_SS = 4  # supersampling factor of render()

_NAMES = tuple(COLORS)
_PALETTE = np.array([COLORS[c] for c in _NAMES], dtype=np.float32)


@dataclass(frozen=True)
class Obj:
    shape: str
    color: str
    size: str
    position: str

    def __post_init__(self):
        attributes = ((self.shape, SHAPES), (self.color, COLORS), (self.size, SIZES), (self.position, POSITIONS))
        for value, allowed in attributes:
            if value not in allowed:
                raise ValueError(f"unknown attribute {value!r} in {self}")


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    background: str
    texture: str

    def __post_init__(self):
        if self.background not in COLORS or self.texture not in TEXTURES:
            raise ValueError(f"unknown background {self.background!r} / texture {self.texture!r}")
        if not self.objects:
            raise ValueError("a scene needs at least one object")


# --- held-out split --------------------------------------------------------------------------


def _stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


TRIPLES = tuple((c, s, p) for c in COLORS for s in SHAPES for p in POSITIONS)
#: At every position, the round(15%) of its (colour, shape) pairs with the smallest stable hash
#: (5 of 36: 45 of the 324 triples): a fixed set, the same on every machine.
HELDOUT = frozenset(
    t
    for p in POSITIONS
    for t in sorted((t for t in TRIPLES if t[2] == p), key=lambda t: _stable_hash("/".join(t)))[
        : round(HELDOUT_FRACTION * len(COLORS) * len(SHAPES))
    ]
)


def is_heldout(obj: Obj) -> bool:
    """Whether the object's (colour, shape, position) triple is one that training never shows."""
    return (obj.color, obj.shape, obj.position) in HELDOUT


# --- sampling --------------------------------------------------------------------------------


def _fits(a: tuple[str, str], b: tuple[str, str]) -> bool:
    """Whether objects of (size, position) a and b have disjoint bounding boxes (touching is fine)."""
    (sa, pa), (sb, pb) = a, b
    gap = (DIAMETER[sa] + DIAMETER[sb]) / 2
    (xa, ya), (xb, yb) = POSITIONS[pa], POSITIONS[pb]
    return pa != pb and max(abs(xa - xb), abs(ya - yb)) >= gap - 1e-9


def sample_scene(rng: np.random.Generator, split: str = "train", max_objects: int = 3) -> Scene:
    """1..max_objects non-overlapping objects, in reading order, over a background of another colour.

    Split "train" never draws a held-out triple; split "heldout" draws only held-out ones.
    """
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")
    triples = [t for t in TRIPLES if (t in HELDOUT) == (split == "heldout")]
    count = int(rng.integers(1, max_objects + 1))
    objects: list[Obj] = []
    for _ in range(50 * count):  # rejection sampling; gives up with fewer objects if the grid is full
        if len(objects) == count:
            break
        color, shape, position = triples[rng.integers(len(triples))]
        size = SIZES[rng.integers(len(SIZES))]
        if all(_fits((size, position), (o.size, o.position)) for o in objects):
            objects.append(Obj(shape, color, size, position))
    order = list(POSITIONS)
    objects.sort(key=lambda o: order.index(o.position))
    free = [c for c in COLORS if c not in {o.color for o in objects}]
    return Scene(tuple(objects), free[rng.integers(len(free))], TEXTURES[rng.integers(len(TEXTURES))])


# --- captions --------------------------------------------------------------------------------


def caption(scene: Scene) -> str:
    """Lowercase, deterministic: "a large red circle on the left and a small blue square at the top,
    on a gray striped background" (objects in the scene's order, "a, b and c" for three; "an orange
    background"). At most 29 words and commas, so 31 tokens with BOS/EOS in tiny-flux's tokenizers."""
    parts = [f"a {o.size} {o.color} {o.shape} {_PLACE[o.position]}" for o in scene.objects]
    things = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    article = "an" if scene.background[0] in "aeiou" else "a"
    return f"{things}, on {article} {scene.background} {_TEXTURE_WORD[scene.texture]}background"


_OBJ_RE = re.compile(
    rf"a ({'|'.join(SIZES)}) ({'|'.join(COLORS)}) ({'|'.join(SHAPES)}) ({'|'.join(_PLACE.values())})"
)
_BG_RE = re.compile(
    rf"(.+), on an? ({'|'.join(COLORS)}) ({'|'.join(w for w in _TEXTURE_WORD.values() if w)})?background"
)
_POSITION_OF = {v: k for k, v in _PLACE.items()}
_TEXTURE_OF = {v.strip(): k for k, v in _TEXTURE_WORD.items()}


def parse_caption(text: str) -> Scene:
    """The Scene that caption() describes as `text` (its exact inverse); ValueError otherwise."""
    bg = _BG_RE.fullmatch(text)
    if bg is None:
        raise ValueError(f"not a tiny-flux caption: {text!r}")
    things, background, texture = bg.group(1), bg.group(2), _TEXTURE_OF[(bg.group(3) or "").strip()]
    head, _, last = things.rpartition(" and ")
    parts = (head.split(", ") if head else []) + [last]
    objects = []
    for part in parts:
        m = _OBJ_RE.fullmatch(part)
        if m is None:
            raise ValueError(f"not a tiny-flux caption: {text!r} (cannot read {part!r})")
        objects.append(Obj(m.group(3), m.group(2), m.group(1), _POSITION_OF[m.group(4)]))
    scene = Scene(tuple(objects), background, texture)
    if caption(scene) != text:  # e.g. "a, b, c" without "and": not caption()'s wording
        raise ValueError(f"not a tiny-flux caption: {text!r}")
    return scene


# --- rendering -------------------------------------------------------------------------------


def _shade(name: str) -> np.ndarray:
    """The second tone of a textured background: the colour moved toward white or black as far as
    possible (at most 40%) while every pixel between the two tones stays clearly nearest to `name`
    in the palette, so check() can tell background from objects by nearest named colour."""
    base = _PALETTE[_NAMES.index(name)]
    others = np.delete(_PALETTE, _NAMES.index(name), axis=0)
    best = base
    for target in (255.0, 0.0):
        for step in np.linspace(0.4, 0.0, 41):
            shade = base + step * (target - base)
            if np.linalg.norm(shade - base) <= 0.6 * np.linalg.norm(others - shade, axis=1).min():
                break
        if np.linalg.norm(shade - base) > np.linalg.norm(best - base):
            best = shade
    return best


SHADES = {name: _shade(name).astype(np.float32) for name in COLORS}


@lru_cache(maxsize=8)
def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of an n x n supersampled image, in output pixels."""
    c = (np.arange(n, dtype=np.float32) + 0.5) / _SS
    return np.meshgrid(c, c, indexing="xy")


def _box(obj: Obj, size: int) -> tuple[float, float, float]:
    """Centre x, y and radius in pixels; centres and even diameters snap to the pixel grid."""
    cx, cy = POSITIONS[obj.position]
    radius = round(DIAMETER[obj.size] * size / 2)
    return float(round(cx * size)), float(round(cy * size)), float(radius)


def _texture(texture: str, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Weight in [0,1] of the shade at each supersampled pixel, with seeded scale and phase."""
    x, y = _grid(n)
    if texture == "plain":
        return np.zeros((n, n), np.float32)
    if texture == "stripes":
        angle, period = rng.uniform(0, np.pi), rng.uniform(0.1, 0.19) * size
        t = (x * np.cos(angle) + y * np.sin(angle)) / period + rng.uniform()
        return (t % 1.0 < 0.5).astype(np.float32)
    if texture == "checks":
        period = rng.uniform(0.12, 0.25) * size
        fx, fy = rng.uniform(size=2)
        return ((np.floor(x / period + fx) + np.floor(y / period + fy)) % 2).astype(np.float32)
    if texture == "dots":
        period = rng.uniform(0.12, 0.19) * size
        radius = rng.uniform(0.2, 0.3) * period
        dx = ((x / period + rng.uniform()) % 1.0 - 0.5) * period
        dy = ((y / period + rng.uniform()) % 1.0 - 0.5) * period
        return (dx * dx + dy * dy <= radius * radius).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)  # gradient: a full ramp across the image, any direction
    t = (x - size / 2) * np.cos(angle) + (y - size / 2) * np.sin(angle)
    return np.clip(t / (size * 0.75) + 0.5, 0.0, 1.0).astype(np.float32)


def _mask(shape: str, x: np.ndarray, y: np.ndarray, r: float) -> np.ndarray:
    """Coverage of a shape centred at (0, 0) with box half-side r (triangle: apex up)."""
    if shape == "square":
        return (np.abs(x) <= r) & (np.abs(y) <= r)
    if shape == "triangle":
        return (y <= r) & (np.abs(x) <= (y + r) / 2)
    d2 = x * x + y * y
    if shape == "circle":
        return d2 <= r * r
    return (d2 <= r * r) & (d2 >= (RING_HOLE * r) ** 2)


def _downsample(a: np.ndarray) -> np.ndarray:
    """Mean over _SS x _SS blocks: supersampled coverage to pixel coverage."""
    h, w = a.shape[0] // _SS, a.shape[1] // _SS
    return a.reshape(h, _SS, w, _SS).mean(axis=(1, 3), dtype=np.float32)


def render(scene: Scene, size: int = 64, seed: int = 0) -> np.ndarray:
    """The scene as a uint8 size x size x 3 image, drawn at 4x and box-downsampled (anti-aliased).

    `seed` jitters the texture's scale, phase and direction and each object's colour (+-4 levels).
    """
    rng = np.random.default_rng(seed)
    n = size * _SS
    base = _PALETTE[_NAMES.index(scene.background)]
    # Colours are linear in coverage, so coverages are downsampled first and coloured after.
    weight = _downsample(_texture(scene.texture, n, size, rng))[..., None]
    img = base + weight * (SHADES[scene.background] - base)
    x, y = _grid(n)
    for obj in scene.objects:
        cx, cy, r = _box(obj, size)
        x0, x1 = max(0, int(cx - r - 1)), min(size, int(cx + r + 1))  # in pixels, 1 px margin
        y0, y1 = max(0, int(cy - r - 1)), min(size, int(cy + r + 1))
        sub = (slice(y0 * _SS, y1 * _SS), slice(x0 * _SS, x1 * _SS))
        cover = _downsample(_mask(obj.shape, x[sub] - cx, y[sub] - cy, r).astype(np.float32))[..., None]
        color = _PALETTE[_NAMES.index(obj.color)] + rng.integers(-4, 5, size=3)
        img[y0:y1, x0:x1] += cover * (color - img[y0:y1, x0:x1])
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def dataset(n: int, seed: int, size: int = 64, split: str = "train") -> tuple[np.ndarray, list[str]]:
    """n sampled scenes of a split, rendered (n x size x size x 3 uint8) and captioned; reproducible."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size, 3), np.uint8)
    captions = []
    for i in range(n):
        scene = sample_scene(rng, split)
        images[i] = render(scene, size, seed=int(rng.integers(2**31)))
        captions.append(caption(scene))
    return images, captions


def prompts(split: str, n: int, seed: int) -> list[str]:
    """n distinct captions of sampled scenes of a split, in sampling order."""
    rng = np.random.default_rng(seed)
    seen: dict[str, None] = {}
    while len(seen) < n:
        seen[caption(sample_scene(rng, split))] = None
    return list(seen)


# --- checking --------------------------------------------------------------------------------


def _nearest(pixels: np.ndarray) -> np.ndarray:
    """Index into COLORS of the nearest named colour of each pixel (RGB distance)."""
    d = ((pixels[..., None, :] - _PALETTE) ** 2).sum(-1)
    return d.argmin(-1)


def _classify(mask: np.ndarray) -> tuple[str, float]:
    """Shape name and fill ratio of a coloured mask within its bounding box (rows and columns with
    at least 2 mask pixels, so stray pixels do not count). A ring has an empty centre (fill ~0.6),
    a triangle (apex up) a much fuller bottom half than top half (fill 0.5-0.65: its thin apex
    rows drop out of the box), a square fills its box (~1), a circle ~0.79."""
    rows, cols = np.flatnonzero(mask.sum(1) >= 2), np.flatnonzero(mask.sum(0) >= 2)
    if len(rows) < 2 or len(cols) < 2:
        return "none", 0.0
    box = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = box.shape
    fill = float(box.mean())
    yy, xx = np.mgrid[:h, :w]
    centre = (xx - (w - 1) / 2) ** 2 + (yy - (h - 1) / 2) ** 2 <= max(1.0, 0.18 * min(h, w)) ** 2
    if fill < 0.8 and box[centre].mean() < 0.4:
        return "ring", fill
    if box[h - h // 2 :].mean() - box[: h // 2].mean() > 0.25:
        return "triangle", fill
    return ("square" if fill >= 0.9 else "circle"), fill


def check(image: np.ndarray, scene: Scene) -> dict:
    """Does an image (uint8 H x W x 3) show the scene? Per object, in its expected box (1 px margin):

    * colour: pixels whose nearest named colour is the background's are ignored (that covers the
      texture); the object's colour is the most frequent nearest named colour among the half of
      the rest farthest from the background colour (a vote of the purest pixels: anti-aliased or
      blurred edges blend object and background, and such blends can land near a third named
      colour). "none" if fewer than 5% of the box is left.
    * shape: the pixels nearer to the found colour than to the background, and on the line between
      the two (anti-aliased edges, not other objects), are classified by `_classify`.

    Returns {"objects": [{"color", "found", "color_ok", "shape", "shape_found", "shape_ok", "fill"}],
    "color_accuracy", "shape_accuracy", "background_found", "background_ok"}; the background's
    colour is the vote over pixels outside every object's box.
    """
    img = np.asarray(image, dtype=np.float32)[..., :3]
    size = img.shape[0]
    nearest = _nearest(img)
    bg_index = _NAMES.index(scene.background)
    bg = _PALETTE[bg_index]
    outside = np.ones(img.shape[:2], bool)
    results = []
    for obj in scene.objects:
        cx, cy, r = _box(obj, size)
        ys = slice(max(0, int(cy - r - 1)), min(size, int(cy + r + 1)))
        xs = slice(max(0, int(cx - r - 1)), min(size, int(cx + r + 1)))
        outside[ys, xs] = False
        region, near = img[ys, xs], nearest[ys, xs]
        keep = near != bg_index
        found, shape_found, fill = "none", "none", 0.0
        if keep.sum() >= 0.05 * near.size:
            far = np.linalg.norm(region[keep] - bg, axis=-1)
            votes = near[keep][far >= np.median(far)]
            found_index = int(np.bincount(votes, minlength=len(_NAMES)).argmax())
            found = _NAMES[found_index]
            color = np.median(region[near == found_index], axis=0)
            axis = color - bg
            alpha = (region - bg) @ axis / max(float(axis @ axis), 1e-6)
            off_line = np.linalg.norm(region - bg - alpha[..., None] * axis, axis=-1)
            shape_found, fill = _classify((alpha > 0.5) & (off_line < 0.35 * np.linalg.norm(axis)))
        results.append(dict(
            color=obj.color, found=found, color_ok=found == obj.color,
            shape=obj.shape, shape_found=shape_found, shape_ok=shape_found == obj.shape, fill=round(fill, 3),
        ))
    rest = nearest[outside]
    background_found = _NAMES[int(np.bincount(rest, minlength=len(_NAMES)).argmax())] if rest.size else "none"
    return {
        "objects": results,
        "color_accuracy": float(np.mean([o["color_ok"] for o in results])),
        "shape_accuracy": float(np.mean([o["shape_ok"] for o in results])),
        "background_found": background_found,
        "background_ok": background_found == scene.background,
    }


# --- prompt files ----------------------------------------------------------------------------

PROMPT_DIR = Path(__file__).resolve().parents[2] / "prompt_sets" / "tiny-flux"
PROMPT_FILES = {"calib.txt": ("train", 64, 1), "heldout.txt": ("heldout", 64, 2)}


def prompt_file_text(name: str) -> str:
    """The text of a prompt file: a '# ' header saying how it was made, then one caption a line."""
    from ..prompts import generated_prompt_file

    return generated_prompt_file("zeustune.models.tinyflux.scenes", prompts, *PROMPT_FILES[name])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zeustune.models.tinyflux.scenes", description=__doc__.splitlines()[0])
    parser.add_argument("--write-prompts", action="store_true", help=f"write {', '.join(PROMPT_FILES)} to {PROMPT_DIR}")
    parser.add_argument("--preview", metavar="PNG", help="save an 8x8 grid of training images (and print captions)")
    args = parser.parse_args(argv)
    if args.write_prompts:
        PROMPT_DIR.mkdir(parents=True, exist_ok=True)
        for name in PROMPT_FILES:
            (PROMPT_DIR / name).write_text(prompt_file_text(name))
            print(PROMPT_DIR / name)
    if args.preview:
        from PIL import Image

        images, captions = dataset(64, seed=0)
        grid = images.reshape(8, 8, *images.shape[1:]).transpose(0, 2, 1, 3, 4).reshape(8 * 64, 8 * 64, 3)
        Image.fromarray(grid).resize((8 * 128, 8 * 128), Image.NEAREST).save(args.preview)
        print("\n".join(captions))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
