"""Procedurally drawn synthetic retinal images (CFP, FFA, OCT) for demos and tests.

Cartoon retinal images whose class, location and extent are visible in the pixels and
stated in an expert-style caption, deterministic from a seed. They let the demo configs
train the contrastive image-text model end to end on a laptop CPU, and they exercise every
data path of METHOD.md §3: categorical samples (``categories`` + ``attributes`` for the
prompt "A [ATR] fundus photograph of [CLS]"), elite samples (``caption``), the domain
knowledge dictionary (``KNOWLEDGE``) and the out-of-distribution ban (``OOD_CLASSES``).

Drawing is NumPy (smooth backgrounds, masks) plus PIL ``ImageDraw`` (vessels, lesions) at the
target size, so one image costs a few milliseconds. All geometry is relative to the image
size, so lesions stay visible from 96 px to 512 px.

Conventions: laterality follows the photographic convention — the optic disc lies on the
right of a right-eye image (nasal side), the macula on the left (temporal side); OCT B-scans
use the same orientation (nasal to the right for a right eye, where the RNFL is thicker).
"""

from __future__ import annotations

import functools
import zlib
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

MODALITIES = ("cfp", "ffa", "oct")

CLASSES: dict[str, tuple[str, ...]] = {
    "cfp": (
        "normal",
        "diabetic retinopathy",
        "glaucoma",
        "age-related macular degeneration",
        "hypertensive retinopathy",
        "retinal vein occlusion",
    ),
    "ffa": (
        "normal",
        "diabetic retinopathy",
        "macular leakage",
        "retinal non-perfusion",
        "choroidal neovascularization",
    ),
    "oct": (
        "normal",
        "diabetic macular edema",
        "central serous chorioretinopathy",
        "drusen",
        "choroidal neovascularization",
    ),
}

# Drawn only for CFP, present in the data but banned from pretraining (METHOD.md §3).
OOD_CLASSES: tuple[str, ...] = ("cataract",)

# Domain-knowledge dictionary (KeepFIT v1 style). A name shared by two modalities carries
# phrases that are true of both drawings.
KNOWLEDGE: dict[str, tuple[str, ...]] = {
    "normal": ("no abnormal findings", "healthy retina", "normal retinal structure"),
    "diabetic retinopathy": ("microaneurysms", "dot and blot haemorrhages", "hard exudates"),
    "glaucoma": ("enlarged optic cup", "high cup-to-disc ratio", "thin neuroretinal rim"),
    "age-related macular degeneration": (
        "drusen in the macula",
        "yellowish deposits at the posterior pole",
        "macular pigment clumping",
    ),
    "hypertensive retinopathy": (
        "cotton-wool spots",
        "flame-shaped haemorrhages",
        "narrowed retinal arteries",
    ),
    "retinal vein occlusion": (
        "dilated tortuous retinal vein",
        "haemorrhages confined to one sector",
        "flame-shaped haemorrhages along a vein",
    ),
    "cataract": ("hazy blurred fundus image", "media opacity", "poorly visible retinal details"),
    "macular leakage": (
        "diffuse hyperfluorescent leakage at the macula",
        "dye pooling in the macula",
        "macular oedema",
    ),
    "retinal non-perfusion": (
        "capillary non-perfusion",
        "dark area of capillary dropout",
        "pruned retinal vessels",
    ),
    "choroidal neovascularization": (
        "abnormal new vessels beneath the macula",
        "neovascular membrane near the fovea",
    ),
    "diabetic macular edema": (
        "intraretinal fluid cysts",
        "macular thickening",
        "hyperreflective foci in the retina",
    ),
    "central serous chorioretinopathy": (
        "subretinal fluid",
        "serous detachment of the neurosensory retina",
        "dome-shaped fluid under the fovea",
    ),
    "drusen": (
        "bumps of the retinal pigment epithelium",
        "deposits beneath the retinal pigment epithelium",
        "undulating pigment epithelium line",
    ),
}

# Image-level attribute words for "A [ATR] <modality phrase> of [CLS]". Each sample gets one
# word from each pair, chosen by the generator and therefore true of its pixels. Laterality is
# deliberately not an attribute: the categorical augmentation flips images horizontally.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "cfp": ("macula-centred", "disc-centred", "well-exposed", "dim"),
    "ffa": ("macula-centred", "disc-centred", "high-contrast", "low-contrast"),
    "oct": ("high-quality", "noisy", "flat", "tilted"),
}

_ASPECT = {"cfp": 0.87, "ffa": 0.87, "oct": 0.5}


def image_shape(modality: str, image_size: int) -> tuple[int, int]:
    """(height, width) of a rendered image; the width is the long side."""
    return max(1, round(_ASPECT[modality] * image_size)), image_size


# ----------------------------------------------------------------------------------------
# Shared helpers.


@functools.lru_cache(maxsize=32)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    return yy, xx


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Unit-variance-ish noise with features about `cell` px wide (bicubic upsampled)."""
    gh, gw = max(2, int(round(h / cell)) + 1), max(2, int(round(w / cell)) + 1)
    small = rng.standard_normal((gh, gw)).astype(np.float32)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC))


def _stable_int(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


class _Mask:
    """An 8-bit drawing layer turned into a float alpha in [0, 1]."""

    def __init__(self, h: int, w: int):
        self.im = Image.new("L", (w, h), 0)
        self.draw = ImageDraw.Draw(self.im)

    def alpha(self, blur: float = 0.0) -> np.ndarray:
        im = self.im.filter(ImageFilter.GaussianBlur(blur)) if blur > 0.3 else self.im
        return np.asarray(im, dtype=np.float32) * (1.0 / 255.0)


def _blend(img: np.ndarray, alpha: np.ndarray, colour) -> np.ndarray:
    """img <- img + alpha * (colour - img); colour broadcastable to img."""
    a = alpha[..., None] if img.ndim == 3 else alpha
    return img + a * (colour - img)


def _ellipse(draw: ImageDraw.ImageDraw, x: float, y: float, rx: float, ry: float, fill: int):
    rx, ry = max(rx, 0.6), max(ry, 0.6)
    draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=fill)


def _rotated_ellipse(draw, x, y, length, width, angle, fill, n=10):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    ca, sa = np.cos(angle), np.sin(angle)
    ex, ey = 0.5 * length * np.cos(t), 0.5 * max(width, 1.0) * np.sin(t)
    pts = np.stack([x + ca * ex - sa * ey, y + sa * ex + ca * ey], 1)
    draw.polygon([tuple(p) for p in pts], fill=fill)


def _extent(rng: np.random.Generator, words=("few", "scattered", "numerous")) -> tuple[int, str]:
    k = int(rng.integers(len(words)))
    return k, words[k]


_EXT_CAP = {"few": "A few", "scattered": "Scattered", "numerous": "Numerous",
            "multiple": "Multiple"}


# ----------------------------------------------------------------------------------------
# Fundus layout and vessel tree (shared by CFP and FFA).


def _fundus_layout(rng: np.random.Generator, h: int, w: int) -> dict:
    eye = "right" if rng.random() < 0.5 else "left"
    side = 1.0 if eye == "right" else -1.0  # +x is nasal (towards the disc)
    centring = "macula-centred" if rng.random() < 0.6 else "disc-centred"
    cx, cy = w / 2.0, h / 2.0
    fov_r = 0.5 * h * rng.uniform(0.98, 1.06)
    dd = w * rng.uniform(0.105, 0.125)  # disc diameter
    dist = dd * rng.uniform(2.3, 2.6)  # fovea-disc distance
    dy = -dd * rng.uniform(0.05, 0.3)  # disc slightly above the fovea
    jx, jy = rng.normal(0.0, 0.015 * w, 2)
    if centring == "macula-centred":
        fov = np.array([cx + jx, cy + jy])
        disc = fov + [side * dist, dy]
    else:
        disc = np.array([cx + jx, cy + jy])
        fov = disc - [side * dist, dy]
    return dict(eye=eye, side=side, centring=centring, c=np.array([cx, cy]), R=fov_r,
                DD=dd, dist=dist, F=fov, D=disc, h=h, w=w)


def _walk(rng, p0, angle, length, steps, curl):
    pts = [np.asarray(p0, float)]
    seg = length / steps
    for _ in range(steps):
        angle += rng.normal(0.0, curl)
        pts.append(pts[-1] + seg * np.array([np.cos(angle), np.sin(angle)]))
    return np.array(pts)


def _vessel_tree(rng: np.random.Generator, lay: dict, artery_scale=1.0, vein_scale=1.0,
                 dilated_vein: int = 0) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Polylines (kind, points (n,2), widths (n,)) of arteries and veins leaving the disc.

    Temporal arcades arch around the macula (ellipses about the fovea), nasal vessels
    run radially, small branches leave the arcades. `dilated_vein` = -1/+1 makes the
    superior/inferior temporal vein wide and tortuous (vein occlusion).
    """
    F, D, side, dist, w = lay["F"], lay["D"], lay["side"], lay["dist"], lay["w"]
    base_w = 0.0125 * w
    out = []
    for vy in (-1.0, 1.0):
        for kind in ("vein", "artery"):
            is_vein = kind == "vein"
            occl = is_vein and dilated_vein == vy
            wfac = (vein_scale * (1.7 if occl else 1.0)) if is_vein else 0.72 * artery_scale
            a = dist * rng.uniform(0.97, 1.1)
            b = dist * rng.uniform(0.72, 0.92) * (1.07 if is_vein else 0.93)
            th1 = rng.uniform(2.3, 2.8)
            n = 22
            th = np.linspace(0.1, th1, n)
            wob = 1 + 0.035 * np.sin(th * rng.uniform(3, 6) + rng.uniform(0, 2 * np.pi))
            if occl:  # tortuous: an extra wiggle that the 22 points still resolve
                wob = wob + 0.06 * np.sin(th * rng.uniform(7, 9) + rng.uniform(0, 2 * np.pi))
            x = F[0] + side * a * np.cos(th) * wob
            y = F[1] + vy * b * np.sin(th) * wob + (D[1] - F[1]) * (1 - th / th1)
            pts = np.vstack([D[None], np.stack([x, y], 1)])
            widths = base_w * wfac * np.linspace(1.0, 0.35, n + 1)
            out.append(("occluded vein" if occl else kind, pts, widths))
            for _ in range(int(rng.integers(2, 5))):  # outward branches
                i = int(rng.integers(4, n - 2))
                p0 = pts[i]
                v = p0 - F
                ang = np.arctan2(v[1], v[0]) + rng.normal(0, 0.45)
                br = _walk(rng, p0, ang, w * rng.uniform(0.08, 0.2), 7, 0.25)
                out.append((kind, br, widths[i] * 0.6 * np.linspace(1, 0.5, len(br))))
            for _ in range(int(rng.integers(1, 3))):  # small inward branches (stop at FAZ)
                i = int(rng.integers(5, n - 4))
                p0 = pts[i]
                v = F - p0
                ang = np.arctan2(v[1], v[0]) + rng.normal(0, 0.3)
                br = _walk(rng, p0, ang, np.hypot(*v) * rng.uniform(0.35, 0.55), 5, 0.2)
                out.append((kind, br, widths[i] * 0.45 * np.linspace(1, 0.6, len(br))))
    for vy in (-1.0, 1.0):  # nasal vessels
        for kind in ("vein", "artery"):
            wfac = vein_scale if kind == "vein" else 0.72 * artery_scale
            phi = rng.uniform(0.3, 1.2)
            ang = np.arctan2(vy * np.sin(phi), side * np.cos(phi))
            br = _walk(rng, D, ang, w * rng.uniform(0.28, 0.42), 10, 0.12)
            widths = base_w * wfac * 0.85 * np.linspace(1, 0.4, len(br))
            out.append((kind, br, widths))
            for _ in range(int(rng.integers(1, 3))):
                i = int(rng.integers(2, len(br) - 2))
                br2 = _walk(rng, br[i], ang + rng.choice([-1, 1]) * rng.uniform(0.4, 0.9),
                            w * rng.uniform(0.07, 0.15), 5, 0.25)
                out.append((kind, br2, widths[i] * 0.6 * np.linspace(1, 0.5, len(br2))))
    for vy in (-1.0, 1.0):  # papillomacular twigs
        p0 = D + [0.0, vy * 0.25 * lay["DD"]]
        v = F - p0
        br = _walk(rng, p0, np.arctan2(v[1], v[0]) + vy * 0.15, dist * rng.uniform(0.45, 0.6),
                   5, 0.15)
        out.append(("artery", br, base_w * 0.35 * artery_scale * np.ones(len(br))))
    return out


def _draw_polylines(draw: ImageDraw.ImageDraw, vessels, fill_for_kind: dict):
    """Tapered polylines: consecutive segments with equal rounded width share one call."""
    for kind, pts, widths in vessels:
        fill = fill_for_kind[kind]
        wr = np.maximum(1, np.round(widths)).astype(int)
        start = 0
        for i in range(1, len(pts)):
            if i == len(pts) - 1 or wr[i] != wr[start]:
                seg = [tuple(p) for p in pts[start:i + 1]]
                draw.line(seg, fill=fill, width=int(wr[start]), joint="curve")
                start = i


_QUADRANTS = ("superior temporal", "inferior temporal", "superior nasal", "inferior nasal")

_LOC_PHRASE = {
    "superior temporal": "in the superior temporal quadrant",
    "inferior temporal": "in the inferior temporal quadrant",
    "superior nasal": "in the superior nasal quadrant",
    "inferior nasal": "in the inferior nasal quadrant",
    "macula": "at the macula",
    "peripapillary": "around the optic disc",
    "posterior pole": "throughout the posterior pole",
}


def _region_points(rng: np.random.Generator, lay: dict, region: str, n: int) -> np.ndarray:
    """n points inside a named fundus region and inside the field of view."""
    F, D, side, dist, dd = lay["F"], lay["D"], lay["side"], lay["dist"], lay["DD"]
    m = max(4 * n, 16)
    if region in ("superior temporal", "inferior temporal"):
        vy = -1.0 if region.startswith("superior") else 1.0
        r = dist * rng.uniform(0.3, 0.95, m)
        a = rng.uniform(0.15, 1.5, m)
        pts = np.stack([F[0] - side * r * np.cos(a), F[1] + vy * r * np.sin(a)], 1)
    elif region in ("superior nasal", "inferior nasal"):
        vy = -1.0 if region.startswith("superior") else 1.0
        r = dd * rng.uniform(0.8, 2.2, m)
        a = rng.uniform(0.15, 1.45, m)
        pts = np.stack([D[0] + side * r * np.cos(a), D[1] + vy * r * np.sin(a)], 1)
    elif region == "macula":
        r = dist * 0.45 * np.sqrt(rng.uniform(0.0, 1.0, m))
        a = rng.uniform(0, 2 * np.pi, m)
        pts = F + np.stack([r * np.cos(a), r * np.sin(a)], 1)
    elif region == "peripapillary":
        r = dd * rng.uniform(0.65, 1.4, m)
        a = rng.uniform(0, 2 * np.pi, m)
        pts = D + np.stack([r * np.cos(a), r * np.sin(a)], 1)
    elif region == "posterior pole":
        r = dist * 1.05 * np.sqrt(rng.uniform(0.0, 1.0, m))
        a = rng.uniform(0, 2 * np.pi, m)
        pts = (F + D) / 2 + np.stack([r * np.cos(a), r * np.sin(a)], 1)
    else:
        raise ValueError(f"unknown region {region!r}")
    ok = np.hypot(*(pts - lay["c"]).T) < 0.9 * lay["R"]
    ok &= (pts[:, 1] > 0.03 * lay["h"]) & (pts[:, 1] < 0.97 * lay["h"])
    if region != "peripapillary":
        ok &= np.hypot(*(pts - D).T) > 0.6 * dd
    good = pts[ok]
    if len(good) < n:  # fall back to points pulled towards the fovea
        extra = F + 0.5 * (pts[~ok][: n - len(good)] - F)
        good = np.vstack([good, extra])
    return good[:n]


def _fundus_header(rng, lay: dict, kind: str) -> str:
    eye, cen = lay["eye"], lay["centring"]
    if kind == "cfp":
        opts = (f"Colour fundus photograph of the {eye} eye, {cen}.",
                f"{cen.capitalize()} colour fundus image of the {eye} eye.",
                f"Fundus photograph, {eye} eye, {cen}.")
    else:
        opts = (f"Fluorescein angiogram of the {eye} eye, {cen}.",
                f"{cen.capitalize()} fluorescein angiography image of the {eye} eye.",
                f"FFA, {eye} eye, {cen}.")
    return opts[int(rng.integers(len(opts)))]


def _assemble(rng, header: str, sentences: list[str], class_name: str,
              extra: str | None = None) -> str:
    body = list(sentences)
    if len(body) > 1 and rng.random() < 0.5:
        body = body[::-1]
    parts = [header] + ([extra] if extra else []) + body + [f"Impression: {class_name}."]
    return " ".join(parts)


# ----------------------------------------------------------------------------------------
# Colour fundus photograph.


def _render_cfp(class_name: str, rng: np.random.Generator, size: int):
    h, w = image_shape("cfp", size)
    yy, xx = _grid(h, w)
    lay = _fundus_layout(rng, h, w)
    F, D, dd, side = lay["F"], lay["D"], lay["DD"], lay["side"]
    dim = rng.random() < 0.3
    bright = rng.uniform(0.5, 0.66) if dim else rng.uniform(0.92, 1.08)
    base = np.array([rng.uniform(190, 225), rng.uniform(75, 110), rng.uniform(30, 60)],
                    np.float32)
    ic = lay["c"] + rng.normal(0, 0.05 * w, 2)
    d2 = ((xx - ic[0]) ** 2 + (yy - ic[1]) ** 2) / lay["R"] ** 2
    illum = (bright * (1.0 - 0.5 * np.minimum(d2, 1.3) ** 1.2)).astype(np.float32)
    fd2 = (xx - F[0]) ** 2 + (yy - F[1]) ** 2
    mac = 1.0 - 0.32 * np.exp(-fd2 / (2 * (0.42 * dd) ** 2)) \
        - 0.12 * np.exp(-fd2 / (2 * (1.3 * dd) ** 2))
    tex = 1.0 + 0.06 * _smooth_noise(rng, h, w, w / 12)
    img = (illum * mac * tex)[..., None] * base

    # Optic disc with a paler cup (cup diameter / disc diameter = CDR).
    if class_name == "glaucoma":
        cdr = round(float(rng.uniform(0.7, 0.9)), 1)
    else:
        cdr = round(float(rng.uniform(0.2, 0.4)), 1)
    rx, ry = 0.5 * dd * rng.uniform(0.92, 1.0), 0.5 * dd * rng.uniform(1.0, 1.1)
    rdisc = np.sqrt(((xx - D[0]) / rx) ** 2 + ((yy - D[1]) / ry) ** 2)
    disc_col = np.array([245, 165, 105], np.float32) * bright
    img = _blend(img, np.clip((1.0 - rdisc) / 0.15, 0, 1), disc_col)
    cupc = D + [-side * 0.08 * dd * (1 - cdr), 0.0]
    rcup = np.sqrt(((xx - cupc[0]) / (cdr * rx)) ** 2 + ((yy - cupc[1]) / (cdr * ry)) ** 2)
    cup_col = np.array([255, 240, 215], np.float32) * bright
    img = _blend(img, 0.95 * np.clip((1.0 - rcup) / 0.15, 0, 1), cup_col)

    # Vessels: a multiplicative layer (veins darker and wider than arteries).
    hr = class_name == "hypertensive retinopathy"
    rvo_vy = 0
    if class_name == "retinal vein occlusion":
        rvo_vy = -1 if rng.random() < 0.5 else 1
    vessels = _vessel_tree(rng, lay, artery_scale=0.5 if hr else 1.0, dilated_vein=rvo_vy)
    vl = Image.new("RGB", (w, h), (255, 255, 255))
    vd = ImageDraw.Draw(vl)
    art = (235, 175, 160) if hr else (220, 150, 140)
    _draw_polylines(vd, vessels, {"vein": (140, 70, 85), "artery": art,
                                  "occluded vein": (120, 55, 70)})
    img *= np.asarray(vl, np.float32) * (1.0 / 255.0)

    def local(p):  # illumination at a point, so lesion colours follow the falloff
        x = int(np.clip(p[0], 0, w - 1))
        y = int(np.clip(p[1], 0, h - 1))
        return float(illum[y, x])

    u = w / 128.0  # one "pixel at 128 px"
    findings: list[str] = []
    red_dark = np.array([95, 15, 15], np.float32)  # dot and blot haemorrhages
    red_flame = np.array([150, 22, 14], np.float32)  # flame haemorrhages (nerve fibre layer)

    if class_name == "diabetic retinopathy":
        k, ext = _extent(rng)
        region = (*_QUADRANTS, "macula", "posterior pole")[int(rng.integers(6))]
        n_ma, n_hm, n_ex = (12, 20, 32)[k], (3, 5, 8)[k], (2, 3, 4)[k]
        mask_r, mask_y = _Mask(h, w), _Mask(h, w)
        for p in _region_points(rng, lay, region, n_ma):
            r = max(0.8, 0.9 * u * rng.uniform(0.8, 1.3))
            _ellipse(mask_r.draw, *p, r, r, 255)
        for p in _region_points(rng, lay, region, n_hm):
            r = u * rng.uniform(1.8, 2.8)
            _ellipse(mask_r.draw, *p, r, r * rng.uniform(0.7, 1.0), 255)
        for c in _region_points(rng, lay, region, n_ex):
            for _ in range(int(rng.integers(3, 7))):
                q = c + rng.normal(0, 2.5 * u, 2)
                r = max(0.7, u * rng.uniform(0.6, 1.1))
                _ellipse(mask_y.draw, *q, r, r, 255)
        img = _blend(img, mask_r.alpha(0.3 * u), red_dark * illum[..., None])
        img = _blend(img, 0.95 * mask_y.alpha(0.25 * u),
                     np.array([245, 225, 95], np.float32) * np.sqrt(illum)[..., None])
        loc = _LOC_PHRASE[region]
        opts = (f"{_EXT_CAP[ext]} microaneurysms, dot and blot haemorrhages and hard exudates {loc}.",
                f"{loc[0].upper() + loc[1:]} there are {ext if ext != 'few' else 'a few'} "
                f"microaneurysms with dot and blot haemorrhages and yellow hard exudates.")
        findings.append(opts[int(rng.integers(2))])
    elif class_name == "glaucoma":
        findings.append(rng.choice(["Enlarged pale optic cup with a thin neuroretinal rim.",
                                    "The optic cup is enlarged and the neuroretinal rim is thin."]))
    elif class_name == "age-related macular degeneration":
        k, ext = _extent(rng)
        large = rng.random() < 0.5
        n = (8, 16, 28)[k]
        mask = _Mask(h, w)
        for p in _region_points(rng, lay, "macula", n):
            r = u * (rng.uniform(1.6, 2.6) if large else rng.uniform(0.9, 1.4))
            _ellipse(mask.draw, *p, r, r, 255)
        img = _blend(img, 0.9 * mask.alpha((0.8 if large else 0.35) * u),
                     np.array([235, 210, 120], np.float32) * illum[..., None] * 1.05)
        pig = _Mask(h, w)
        for p in _region_points(rng, lay, "macula", int(rng.integers(2, 6))):
            r = u * rng.uniform(0.7, 1.2)
            _ellipse(pig.draw, *p, r, r, 255)
        img = _blend(img, 0.8 * pig.alpha(0.3 * u), np.array([60, 30, 20], np.float32) * bright)
        size_w = "large soft" if large else "small hard"
        findings.append(f"{_EXT_CAP[ext]} {size_w} drusen at the macula with pigment clumping.")
    elif class_name == "hypertensive retinopathy":
        k, ext = _extent(rng)
        region = ("peripapillary", "superior temporal", "inferior temporal",
                  "posterior pole")[int(rng.integers(4))]
        n_cws, n_fl = (3, 5, 8)[k], (3, 4, 6)[k]
        mask = _Mask(h, w)
        for p in _region_points(rng, lay, region, n_cws):
            for _ in range(3):
                q = p + rng.normal(0, 0.9 * u, 2)
                _ellipse(mask.draw, *q, u * rng.uniform(2.0, 3.2), u * rng.uniform(1.5, 2.4), 255)
        img = _blend(img, 0.9 * mask.alpha(1.0 * u),
                     np.array([250, 245, 225], np.float32) * np.minimum(illum, 1.0)[..., None])
        fl = _Mask(h, w)
        for p in _region_points(rng, lay, region, n_fl):
            v = p - D
            _rotated_ellipse(fl.draw, *p, u * rng.uniform(4, 7), u * rng.uniform(1.0, 1.6),
                             np.arctan2(v[1], v[0]), 255)
        img = _blend(img, 0.9 * fl.alpha(0.4 * u), red_flame * illum[..., None])
        findings.append(f"{_EXT_CAP[ext]} cotton-wool spots {_LOC_PHRASE[region]} with "
                        f"flame-shaped haemorrhages.")
        findings.append(rng.choice(["Generalised arteriolar narrowing.",
                                    "The retinal arteries are narrowed."]))
    elif class_name == "retinal vein occlusion":
        k, ext = _extent(rng, ("scattered", "numerous"))
        region = "superior temporal" if rvo_vy == -1 else "inferior temporal"
        n = (24, 40)[k]
        fl = _Mask(h, w)
        for p in _region_points(rng, lay, region, n):
            v = p - D
            _rotated_ellipse(fl.draw, *p, u * rng.uniform(5, 9), u * rng.uniform(1.6, 2.6),
                             np.arctan2(v[1], v[0]) + rng.normal(0, 0.3), 255)
        img = _blend(img, 0.92 * fl.alpha(0.4 * u), red_flame * illum[..., None])
        vname = region.split()[0]
        findings.append(f"Dilated tortuous {vname} temporal vein with {ext} flame-shaped "
                        f"haemorrhages confined to the {region} quadrant.")
    elif class_name == "normal":
        findings.append(rng.choice(["No haemorrhages, exudates or drusen are seen.",
                                    "The retina appears healthy with normal vessels.",
                                    "Normal macula and retinal vessels; no lesions."]))
    elif class_name == "cataract":
        findings.append(rng.choice(["Hazy view of the fundus; disc and vessels are poorly visible.",
                                    "Media opacity blurs the whole image."]))
    else:
        raise ValueError(f"unknown cfp class {class_name!r}")

    rr = np.sqrt((xx - lay["c"][0]) ** 2 + (yy - lay["c"][1]) ** 2)
    fov = np.clip((lay["R"] - rr) / (0.012 * w), 0, 1)
    img *= fov[..., None]
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    out = out.filter(ImageFilter.GaussianBlur(0.0025 * w))
    if class_name == "cataract":
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.02, 0.03) * w))
        haze = rng.uniform(0.35, 0.5)
        arr = np.asarray(out, np.float32)
        arr = arr * (1 - haze) + haze * np.array([215, 195, 155], np.float32) * bright \
            * (0.6 + 0.4 * fov[..., None]) * fov[..., None]
        out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if class_name != "glaucoma" and class_name != "cataract":
        disc_sentence = rng.choice([f"Cup-to-disc ratio {cdr:.1f}.",
                                    f"The optic disc has a cup-to-disc ratio of {cdr:.1f}."])
    elif class_name == "glaucoma":
        disc_sentence = f"Cup-to-disc ratio {cdr:.1f}."
    else:
        disc_sentence = "Disc margins indistinct."
    extra = "The image is dim." if dim and rng.random() < 0.5 else None
    caption = _assemble(rng, _fundus_header(rng, lay, "cfp"), findings + [disc_sentence],
                        class_name, extra)
    attrs = (lay["centring"], "dim" if dim else "well-exposed")
    return np.asarray(out), attrs, caption


# ----------------------------------------------------------------------------------------
# Fluorescein angiogram.


def _render_ffa(class_name: str, rng: np.random.Generator, size: int):
    h, w = image_shape("ffa", size)
    yy, xx = _grid(h, w)
    lay = _fundus_layout(rng, h, w)
    F, D, dd, side = lay["F"], lay["D"], lay["DD"], lay["side"]
    u = w / 128.0
    ic = lay["c"] + rng.normal(0, 0.05 * w, 2)
    d2 = ((xx - ic[0]) ** 2 + (yy - ic[1]) ** 2) / lay["R"] ** 2
    fall = (1.0 - 0.45 * np.minimum(d2, 1.3) ** 1.2).astype(np.float32)
    level = rng.uniform(50, 75)
    bg = level * (1.0 + 0.18 * _smooth_noise(rng, h, w, w / 20)) \
        * (1.0 + 0.08 * _smooth_noise(rng, h, w, w / 60))
    fd2 = (xx - F[0]) ** 2 + (yy - F[1]) ** 2
    faz = 1.0 - 0.75 * np.exp(-fd2 / (2 * (0.33 * dd) ** 2)) \
        - 0.2 * np.exp(-fd2 / (2 * (1.2 * dd) ** 2))
    img = bg * faz
    rdisc = np.sqrt(((xx - D[0]) / (0.5 * dd)) ** 2 + ((yy - D[1]) / (0.53 * dd)) ** 2)
    img = img + 95.0 * np.clip((1.0 - rdisc) / 0.25, 0, 1)

    vessels = _vessel_tree(rng, lay)
    vm = Image.new("L", (w, h), 0)
    _draw_polylines(ImageDraw.Draw(vm), vessels, {"vein": 135, "artery": 160,
                                                  "occluded vein": 135})
    vmask = np.asarray(vm.filter(ImageFilter.GaussianBlur(0.3 * u)), np.float32)
    img = img + vmask * 0.9

    findings: list[str] = []
    if class_name == "diabetic retinopathy":
        k, ext = _extent(rng)
        region = (*_QUADRANTS, "macula", "posterior pole")[int(rng.integers(6))]
        n_ma = (25, 40, 60)[k]
        ma = _Mask(h, w)
        for p in _region_points(rng, lay, region, n_ma):
            r = max(1.0, u * rng.uniform(0.9, 1.3))
            _ellipse(ma.draw, *p, r, r, 255)
        img = img + 230.0 * ma.alpha(0.25 * u)
        dark = _Mask(h, w)
        for p in _region_points(rng, lay, region, (2, 4, 6)[k]):
            r = u * rng.uniform(1.3, 2.2)
            _ellipse(dark.draw, *p, r, r, 255)
        for c in _region_points(rng, lay, region, (1, 1, 2)[k]):  # faint blocked exudates
            for _ in range(4):
                q = c + rng.normal(0, 2.0 * u, 2)
                _ellipse(dark.draw, *q, 0.8 * u, 0.8 * u, 150)
        img = img * (1.0 - 0.65 * dark.alpha(0.3 * u))
        findings.append(rng.choice([
            f"{_EXT_CAP[ext]} hyperfluorescent microaneurysms {_LOC_PHRASE[region]}, with "
            f"hypofluorescent dot haemorrhages.",
            f"{_LOC_PHRASE[region][0].upper() + _LOC_PHRASE[region][1:]} there are "
            f"{ext if ext != 'few' else 'a few'} pinpoint hyperfluorescent microaneurysms and "
            f"blocked fluorescence from haemorrhages."]))
    elif class_name == "macular leakage":
        large = rng.random() < 0.5
        rad = dd * (rng.uniform(1.3, 1.7) if large else rng.uniform(0.85, 1.1))
        m = _Mask(h, w)
        petaloid = rng.random() < 0.5
        if petaloid:
            for t in np.linspace(0, 2 * np.pi, 8, endpoint=False) + rng.uniform(0, 1):
                p = F + 0.45 * rad * np.array([np.cos(t), np.sin(t)])
                _rotated_ellipse(m.draw, *p, 0.7 * rad, 0.35 * rad, t, 255)
        else:
            _ellipse(m.draw, *F, rad * 0.8, rad * 0.7, 255)
        img = img + rng.uniform(150, 190) * m.alpha(0.25 * rad)
        findings.append(f"{'Extensive' if large else 'Small'} area of diffuse late leakage at "
                        f"the macula{' in a petaloid pattern' if petaloid else ''}.")
    elif class_name == "retinal non-perfusion":
        region = _QUADRANTS[int(rng.integers(4))]
        large = rng.random() < 0.5
        m = _Mask(h, w)
        pts = _region_points(rng, lay, region, 6)
        c = pts.mean(0)
        rad = w * (rng.uniform(0.19, 0.24) if large else rng.uniform(0.14, 0.17))
        v = c - lay["c"]  # keep the whole area inside the field of view
        excess = np.hypot(*v) + 0.8 * rad - 0.92 * lay["R"]
        if excess > 0:
            c = c - v / max(np.hypot(*v), 1e-6) * excess
        for p in pts:
            q = c + 0.4 * (p - c)
            _ellipse(m.draw, *q, rad * rng.uniform(0.6, 0.9), rad * rng.uniform(0.6, 0.9), 255)
        a = m.alpha(0.15 * rad)
        img = img * (1.0 - 0.9 * a)
        ring = np.clip(a * (1 - a) * 4, 0, 1)  # leaky vessels at the border
        patchy = np.clip(0.6 + 0.8 * _smooth_noise(rng, h, w, 0.03 * w), 0, 1.6)
        img = img + 110.0 * ring * patchy
        findings.append(f"{'Large' if large else 'Small'} area of capillary non-perfusion "
                        f"{_LOC_PHRASE[region]}, with pruned vessels and leaking borders.")
    elif class_name == "choroidal neovascularization":
        large = rng.random() < 0.5
        where = ("subfoveal", "temporal", "nasal", "superior", "inferior")[int(rng.integers(5))]
        off = {"subfoveal": (0, 0), "temporal": (-side, 0), "nasal": (side, 0),
               "superior": (0, -1), "inferior": (0, 1)}[where]
        rad = dd * (rng.uniform(0.75, 0.95) if large else rng.uniform(0.5, 0.65))
        c = F + 0.45 * dd * np.array(off, float)
        m = _Mask(h, w)
        m.draw.ellipse([c[0] - rad, c[1] - rad, c[0] + rad, c[1] + rad], outline=255,
                       width=max(1, int(round(0.9 * u))))
        for _ in range(int(rng.integers(6, 11))):  # lacy net of new vessels
            a1, a2 = rng.uniform(0, 2 * np.pi, 2)
            r1, r2 = rad * rng.uniform(0, 1, 2)
            m.draw.line([tuple(c + r1 * np.array([np.cos(a1), np.sin(a1)])),
                         tuple(c + r2 * np.array([np.cos(a2), np.sin(a2)]))],
                        fill=255, width=max(1, int(round(0.8 * u))))
        glow = _Mask(h, w)
        _ellipse(glow.draw, *c, rad, rad, 255)
        halo = _Mask(h, w)
        _ellipse(halo.draw, *c, rad * 1.45, rad * 1.45, 255)
        img = img * (1.0 - 0.75 * halo.alpha(0.2 * rad))
        img = img + 70.0 * glow.alpha(0.3 * rad) + 190.0 * m.alpha(0.3 * u)
        loc = "beneath the fovea" if where == "subfoveal" else f"just {where} to the fovea"
        findings.append(f"{'Large' if large else 'Small'} lacy hyperfluorescent neovascular "
                        f"membrane {loc}, with a hypofluorescent rim.")
    elif class_name == "normal":
        findings.append(rng.choice([
            "Normal filling of the retinal vessels with an intact foveal avascular zone; "
            "no leakage.",
            "Normal angiogram: no leakage, no non-perfusion, intact foveal avascular zone."]))
    else:
        raise ValueError(f"unknown ffa class {class_name!r}")

    high = rng.random() < 0.6
    if high:
        img = img * rng.uniform(1.0, 1.15)
    else:
        img = 45.0 + img * rng.uniform(0.5, 0.62)
    rr = np.sqrt((xx - lay["c"][0]) ** 2 + (yy - lay["c"][1]) ** 2)
    fov = np.clip((lay["R"] - rr) / (0.012 * w), 0, 1)
    img = img * fall * fov
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    out = out.filter(ImageFilter.GaussianBlur(0.0035 * w))
    caption = _assemble(rng, _fundus_header(rng, lay, "ffa"), findings, class_name)
    attrs = (lay["centring"], "high-contrast" if high else "low-contrast")
    g = np.asarray(out)
    return np.repeat(g[..., None], 3, axis=2), attrs, caption


# ----------------------------------------------------------------------------------------
# OCT B-scan.

# Layers top to bottom; value = reflectivity. Boundaries are the tops of layers 1..L.
_OCT_LAYERS = ("vitreous", "rnfl", "gcl_ipl", "inl", "opl", "onl", "myoid", "ez", "iz",
               "srf", "rpe", "sub_rpe", "bruch", "choroid", "sclera")
_OCT_VALUE = dict(vitreous=0.03, rnfl=0.78, gcl_ipl=0.5, inl=0.22, opl=0.55, onl=0.14,
                  myoid=0.32, ez=0.85, iz=0.36, srf=0.02, rpe=0.97, sub_rpe=0.5, bruch=0.8,
                  choroid=0.5, sclera=0.1)


def _render_oct(class_name: str, rng: np.random.Generator, size: int):
    h, w = image_shape("oct", size)
    yy, xx = _grid(h, w)
    x = np.arange(w, dtype=np.float32)
    eye = "right" if rng.random() < 0.5 else "left"
    side = 1.0 if eye == "right" else -1.0
    u = w / 256.0
    xf = w / 2 + rng.normal(0, 0.04 * w)
    tilted = rng.random() < 0.4
    tilt = (rng.choice([-1, 1]) * rng.uniform(0.12, 0.2)) if tilted else rng.uniform(-0.03, 0.03)
    curv = rng.uniform(0.1, 0.3)
    xc = (x - w / 2) / w
    bruch = (0.64 * h + tilt * (x - w / 2) - curv * xc ** 2 * h).astype(np.float32)

    def g(c, s):
        return np.exp(-((x - c) ** 2) / (2 * s ** 2)).astype(np.float32)

    pit = g(xf, 0.065 * w)
    inner = 1.0 - 0.95 * pit
    th = {
        "rnfl": (0.02 * h + 0.03 * h * np.clip(side * (x - xf) / (0.45 * w), 0, 1)) * inner,
        "gcl_ipl": 0.07 * h * inner,
        "inl": 0.035 * h * (1.0 - 0.9 * pit),
        "opl": 0.018 * h * (0.5 + 0.5 * inner),
        "onl": 0.08 * h + 0.035 * h * pit,
        "myoid": np.full(w, 0.02 * h, np.float32),
        "ez": np.full(w, 0.014 * h, np.float32),
        "iz": np.full(w, 0.012 * h, np.float32),
        "srf": np.zeros(w, np.float32),
        "rpe": np.full(w, 0.026 * h, np.float32),
        "sub_rpe": np.zeros(w, np.float32),
        "bruch": np.full(w, max(0.006 * h, 1.0), np.float32),
        "choroid": 0.16 * h * (1 + 0.1 * np.sin(x / w * 7 + rng.uniform(0, 6))),
    }
    sub_value = 0.5
    findings: list[str] = []
    where = ("subfoveal", "nasal", "temporal")[int(rng.integers(3))]
    loc_x = xf + {"subfoveal": 0.0, "nasal": side, "temporal": -side}[where] \
        * rng.uniform(0.08, 0.14) * w
    loc = {"subfoveal": "beneath the fovea", "nasal": "nasal to the fovea",
           "temporal": "temporal to the fovea"}[where]
    cysts = []
    if class_name == "diabetic macular edema":
        k, ext = _extent(rng, ("few", "multiple", "numerous"))
        loc = {"subfoveal": "at the fovea"}.get(where, loc)
        bump = g(loc_x, rng.uniform(0.07, 0.1) * w)
        th["inl"] = th["inl"] + 0.06 * h * bump
        th["onl"] = th["onl"] + 0.08 * h * bump
        th["gcl_ipl"] = th["gcl_ipl"] + 0.03 * h * bump
        cysts = [(loc_x + rng.normal(0, 0.05 * w)) for _ in range((3, 6, 10)[k])]
        findings.append(rng.choice([
            f"{_EXT_CAP[ext]} intraretinal cystoid spaces {loc}, with macular thickening "
            f"and hyperreflective foci.",
            f"Macular thickening {loc} with {ext if ext != 'few' else 'a few'} dark "
            f"intraretinal fluid cysts and hyperreflective foci."]))
    elif class_name == "central serous chorioretinopathy":
        large = rng.random() < 0.5
        hmax = h * (rng.uniform(0.1, 0.14) if large else rng.uniform(0.06, 0.08))
        wd = w * (rng.uniform(0.16, 0.22) if large else rng.uniform(0.09, 0.13))
        th["srf"] = (hmax * np.clip(1 - ((x - loc_x) / wd) ** 2, 0, 1) ** 0.7).astype(np.float32)
        findings.append(f"{'Large' if large else 'Small'} dome-shaped serous detachment of the "
                        f"neurosensory retina {loc}, with subretinal fluid.")
    elif class_name == "drusen":
        k, ext = _extent(rng, ("few", "multiple", "numerous"))
        n = (4, 6, 9)[k]
        bumps = np.zeros(w, np.float32)
        for _ in range(n):
            c = loc_x + rng.uniform(-0.14, 0.14) * w
            bumps = np.maximum(bumps, rng.uniform(0.06, 0.1) * h
                               * g(c, rng.uniform(0.015, 0.028) * w))
        th["sub_rpe"] = bumps
        sub_value = 0.3
        findings.append(f"{_EXT_CAP[ext]} drusen elevating the retinal pigment epithelium {loc}.")
    elif class_name == "choroidal neovascularization":
        large = rng.random() < 0.5
        s = w * (rng.uniform(0.05, 0.065) if large else rng.uniform(0.035, 0.045))
        hh = h * (rng.uniform(0.16, 0.2) if large else rng.uniform(0.12, 0.15))
        irr = 1 + 0.15 * np.sin(x / s * 2.1 + rng.uniform(0, 6))
        th["sub_rpe"] = (hh * g(loc_x, s) * irr).astype(np.float32)
        sub_value = 0.9
        srf = np.zeros(w, np.float32)
        for sgn in (-1, 1):
            sx = loc_x + sgn * 1.7 * s
            srf += (rng.uniform(0.045, 0.07) * h
                    * np.clip(1 - ((x - sx) / (1.1 * s)) ** 2, 0, 1) ** 0.7)
        th["srf"] = srf.astype(np.float32)
        findings.append(f"{'Large' if large else 'Small'} hyperreflective lesion beneath the "
                        f"retinal pigment epithelium {loc}, with adjacent subretinal fluid.")
    elif class_name == "normal":
        findings.append(rng.choice([
            "Normal foveal contour with intact retinal layers; no fluid.",
            "Retinal layers are intact with a normal foveal pit and no fluid."]))
    else:
        raise ValueError(f"unknown oct class {class_name!r}")

    # Boundaries: stack thicknesses upwards from Bruch's membrane and down into the choroid.
    names = _OCT_LAYERS
    tops = {}
    y = bruch.copy()
    for name in ("bruch", "sub_rpe", "rpe", "srf", "iz", "ez", "myoid", "onl", "opl", "inl",
                 "gcl_ipl", "rnfl"):
        if name == "bruch":
            tops["bruch"] = y.copy()
            continue
        y = y - th[name]
        tops[name] = y.copy()
    tops["choroid"] = bruch + th["bruch"]
    tops["sclera"] = tops["choroid"] + th["choroid"]
    bounds = np.stack([tops[n] for n in names[1:]])  # (L, W)
    idx = (yy[None] >= bounds[:, None, :]).sum(0)
    values = np.array([_OCT_VALUE[n] for n in names], np.float32)
    values[names.index("sub_rpe")] = sub_value
    img = values[idx]
    # choroidal vessels: dark lumens in the choroid
    chor = idx == names.index("choroid")
    cn = _smooth_noise(rng, h, w, 0.03 * w)
    img = np.where(chor, img * np.clip(0.75 + 0.5 * cn, 0.2, 1.3), img)
    deep = np.clip((yy - tops["choroid"][None]) / (0.2 * h), 0, 1)
    img = img * (1.0 - 0.5 * deep)

    if cysts:
        m = _Mask(h, w)
        for cx in cysts:
            ci = int(np.clip(cx, 0, w - 1))
            top, bot = tops["inl"][ci], tops["myoid"][ci]
            cy = rng.uniform(top + 0.25 * (bot - top), bot - 0.25 * (bot - top))
            ry = min(0.2 * (bot - top), 0.035 * h * rng.uniform(0.6, 1.2))
            rx = ry * rng.uniform(0.8, 1.6)
            _ellipse(m.draw, cx, cy, rx, ry, 255)
        img = _blend(img, m.alpha(0.6 * u), 0.02)
        foci = _Mask(h, w)
        for _ in range(int(rng.integers(3, 7))):
            fx = loc_x + rng.normal(0, 0.07 * w)
            ci = int(np.clip(fx, 0, w - 1))
            fy = rng.uniform(tops["gcl_ipl"][ci], tops["myoid"][ci])
            _ellipse(foci.draw, fx, fy, 0.9 * u, 0.9 * u, 255)
        img = _blend(img, foci.alpha(0.4 * u), 0.9)
    if class_name == "choroidal neovascularization":
        sub = idx == names.index("sub_rpe")
        img = np.where(sub, img * np.clip(0.8 + 0.4 * _smooth_noise(rng, h, w, 0.015 * w),
                                          0.4, 1.3), img)

    # Horizontally elongated multiplicative speckle, then a little blur and a noise floor.
    # Speckle is finer than a pixel at low resolution, so it averages out: its shape
    # parameter grows as the image shrinks.
    noisy = rng.random() < 0.4
    k_sp = (rng.uniform(1.3, 2.0) if noisy else rng.uniform(3.5, 5.0)) * max(1.0, 256.0 / w)
    sp = rng.gamma(k_sp, 1.0 / k_sp, (h, max(2, w // 2))).astype(np.float32)
    sp = np.asarray(Image.fromarray(sp).resize((w, h), Image.BILINEAR))
    floor = rng.gamma(1.5, 1.0, (h, w)).astype(np.float32) \
        * ((0.05 if noisy else 0.025) * min(1.0, np.sqrt(w / 256.0)))
    gain = rng.uniform(0.7, 0.85) if noisy else rng.uniform(0.95, 1.1)
    img = (img * sp * gain + floor) * 235.0
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    out = out.filter(ImageFilter.GaussianBlur(0.5 * u))
    header = rng.choice([f"OCT B-scan through the fovea of the {eye} eye.",
                         f"Horizontal macular OCT scan, {eye} eye.",
                         f"Foveal OCT B-scan, {eye} eye."])
    extra = "Image quality is reduced by speckle noise." if noisy and rng.random() < 0.5 else None
    caption = _assemble(rng, str(header), findings, class_name, extra)
    attrs = ("noisy" if noisy else "high-quality", "tilted" if tilted else "flat")
    g8 = np.asarray(out)
    return np.repeat(g8[..., None], 3, axis=2), attrs, caption


_RENDERERS = {"cfp": _render_cfp, "ffa": _render_ffa, "oct": _render_oct}


def render(modality: str, class_name: str, rng: np.random.Generator, image_size: int
           ) -> tuple[np.ndarray, tuple[str, ...], str]:
    """Draw one image of `class_name`.

    Returns (uint8 image HxWx3, attributes, caption). The width is `image_size`; CFP/FFA are
    0.87 as tall, OCT 0.5 as tall (see `image_shape`). Grey modalities repeat one channel.
    The caption ends with "Impression: {class_name}." and states the location and extent
    of what is drawn.
    """
    if modality not in _RENDERERS:
        raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
    allowed = CLASSES[modality] + (OOD_CLASSES if modality == "cfp" else ())
    if class_name not in allowed:
        raise ValueError(f"class {class_name!r} is not drawn for modality {modality!r}; "
                         f"choose from {allowed}")
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size}")
    img, attrs, caption = _RENDERERS[modality](class_name, rng, int(image_size))
    return np.ascontiguousarray(img, dtype=np.uint8), tuple(str(a) for a in attrs), str(caption)


class SyntheticSource:
    """Grain-compatible random-access source of synthetic records (picklable).

    Record i has class `classes[i % len(classes)]` and is drawn from an RNG seeded by
    SeedSequence([seed, crc32(name), i]), so it is identical whatever the access order.
    """

    def __init__(self, modality: str, *, num_records: int, seed: int, image_size: int,
                 classes: Sequence[str] | None = None, name: str = "synthetic"):
        if modality not in MODALITIES:
            raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
        self.modality = modality
        self.classes = tuple(CLASSES[modality] if classes is None else classes)
        allowed = CLASSES[modality] + (OOD_CLASSES if modality == "cfp" else ())
        bad = [c for c in self.classes if c not in allowed]
        if bad or not self.classes:
            raise ValueError(f"SyntheticSource({modality!r}): classes {bad or '()'} not drawable; "
                             f"choose from {allowed}")
        if num_records < 0 or seed < 0:
            raise ValueError("num_records and seed must be non-negative")
        self.num_records = int(num_records)
        self.seed = int(seed)
        self.image_size = int(image_size)
        self.name = str(name)
        self._name_key = _stable_int(self.name)

    def __len__(self) -> int:
        return self.num_records

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if not 0 <= index < self.num_records:
            raise IndexError(f"{self.name}: index {index} out of range [0, {self.num_records})")
        label = index % len(self.classes)
        cls = self.classes[label]
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self._name_key, index]))
        image, attrs, caption = render(self.modality, cls, rng, self.image_size)
        return {"image": image, "categories": [cls], "attributes": list(attrs),
                "caption": caption, "id": f"{self.name}/{index:06d}", "label": label}

    def __repr__(self) -> str:
        return (f"SyntheticSource({self.modality!r}, num_records={self.num_records}, "
                f"seed={self.seed}, image_size={self.image_size}, name={self.name!r})")
