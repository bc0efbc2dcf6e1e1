"""Tests of the synthetic retinal image source (input_pipeline/synthetic.py)."""

import pickle

import numpy as np
import pytest
from PIL import Image, ImageFilter
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from input_pipeline import synthetic
from input_pipeline.synthetic import (ATTRIBUTES, CLASSES, KNOWLEDGE, MODALITIES, OOD_CLASSES,
                                      SyntheticSource, render)


def _same(a: dict, b: dict):
    assert np.array_equal(a["image"], b["image"])
    assert {k: v for k, v in a.items() if k != "image"} == \
        {k: v for k, v in b.items() if k != "image"}


@pytest.mark.parametrize("modality", MODALITIES)
def test_record_format_shape_and_aspect(modality):
    src = SyntheticSource(modality, num_records=12, seed=0, image_size=96, name="train")
    assert len(src) == 12 and src.classes == CLASSES[modality]
    expected_h = {"cfp": round(0.87 * 96), "ffa": round(0.87 * 96), "oct": 48}[modality]
    for i in range(len(src)):
        r = src[i]
        assert r["image"].dtype == np.uint8 and r["image"].shape == (expected_h, 96, 3)
        assert r["categories"] == [src.classes[i % len(src.classes)]]
        assert r["label"] == i % len(src.classes)
        assert r["id"] == f"train/{i:06d}"
        assert r["attributes"] and set(r["attributes"]) <= set(ATTRIBUTES[modality])
        assert r["caption"].endswith(f"Impression: {r['categories'][0]}.")
        if modality != "cfp":
            assert np.array_equal(r["image"][..., 0], r["image"][..., 1])
            assert np.array_equal(r["image"][..., 0], r["image"][..., 2])


@pytest.mark.parametrize("modality", MODALITIES)
def test_determinism_and_order_independence(modality):
    kw = dict(num_records=10, image_size=64)
    a = SyntheticSource(modality, seed=3, name="train", **kw)
    b = SyntheticSource(modality, seed=3, name="train", **kw)
    forward = [a[i] for i in range(10)]
    backward = [b[i] for i in reversed(range(10))][::-1]
    for x, y in zip(forward, backward):
        _same(x, y)
    _same(a[7], pickle.loads(pickle.dumps(a))[7])
    other_seed = SyntheticSource(modality, seed=4, name="train", **kw)
    other_name = SyntheticSource(modality, seed=3, name="heldout", **kw)
    for i in range(3):
        assert not np.array_equal(a[i]["image"], other_seed[i]["image"])
        assert not np.array_equal(a[i]["image"], other_name[i]["image"])
    # Different records of the same class differ too.
    n = len(a.classes)
    assert not np.array_equal(a[0]["image"], a[n]["image"])
    assert len({a[i]["caption"] for i in range(10)}) > 5


def test_render_sizes_and_determinism():
    for modality in MODALITIES:
        for size in (32, 128, 200):
            img, attrs, cap = render(modality, CLASSES[modality][1],
                                     np.random.default_rng(5), size)
            assert img.shape[1] == size and img.shape[0] < size
            img2, attrs2, cap2 = render(modality, CLASSES[modality][1],
                                        np.random.default_rng(5), size)
            assert np.array_equal(img, img2) and attrs == attrs2 and cap == cap2


def test_index_errors_and_bad_classes():
    src = SyntheticSource("cfp", num_records=3, seed=0, image_size=32)
    for bad in (-1, 3, 100):
        with pytest.raises(IndexError):
            src[bad]
    with pytest.raises(ValueError):
        SyntheticSource("oct", num_records=3, seed=0, image_size=32, classes=["glaucoma"])
    with pytest.raises(ValueError):
        render("mri", "normal", np.random.default_rng(0), 64)


def test_ood_class_is_drawable_but_not_listed():
    assert "cataract" in OOD_CLASSES
    for modality in MODALITIES:
        assert not set(OOD_CLASSES) & set(CLASSES[modality])
    src = SyntheticSource("cfp", num_records=4, seed=1, image_size=96,
                          classes=CLASSES["cfp"][:1] + OOD_CLASSES)
    r = src[1]
    assert r["categories"] == ["cataract"] and r["caption"].endswith("Impression: cataract.")
    # Cataract is blurred: much less high-frequency energy than a normal image (measured
    # inside the field of view, away from its edge).
    def grad(im):
        h, w = im.shape[:2]
        c = im[h // 4: 3 * h // 4, w // 4: 3 * w // 4].astype(float).mean(-1)
        return np.abs(np.diff(c, axis=1)).mean()
    assert grad(r["image"]) < 0.5 * grad(src[0]["image"])


def test_knowledge_covers_every_class():
    names = {c for m in MODALITIES for c in CLASSES[m]} | set(OOD_CLASSES)
    for name in names:
        assert name == name.lower()
        phrases = KNOWLEDGE[name]
        assert 2 <= len(phrases) <= 4 and all(isinstance(p, str) and p for p in phrases)
    for modality in MODALITIES:
        assert len(CLASSES[modality]) >= 5 and len(set(CLASSES[modality])) == len(CLASSES[modality])
    assert not any("macular hole" in n or "myopia" in n or "retinitis" in n for n in names)


def test_captions_state_location_and_extent():
    rng = np.random.default_rng(0)
    for _ in range(5):
        _, _, cap = render("cfp", "diabetic retinopathy", rng, 64)
        assert any(w in cap for w in ("quadrant", "macula", "posterior pole"))
        assert any(w in cap.lower() for w in ("few", "scattered", "numerous"))
        _, _, cap = render("cfp", "glaucoma", rng, 64)
        cdr = float(cap.split("Cup-to-disc ratio ")[1][:3])
        assert cdr >= 0.7
        _, _, cap = render("oct", "central serous chorioretinopathy", rng, 64)
        assert any(w in cap for w in ("beneath the fovea", "nasal to", "temporal to"))


def _disc_x(img: np.ndarray) -> float:
    """Column of the brightest smoothed spot (the optic disc / its cup)."""
    lum = Image.fromarray(img).convert("L").filter(ImageFilter.GaussianBlur(img.shape[1] / 40))
    lum = np.asarray(lum, float)
    return float(np.unravel_index(np.argmax(lum), lum.shape)[1])


@pytest.mark.parametrize("cls", ["normal", "glaucoma"])
def test_laterality_in_caption_matches_disc_position(cls):
    rng = np.random.default_rng(11)
    checked = 0
    for _ in range(30):
        img, attrs, cap = render("cfp", cls, rng, 128)
        right = "right eye" in cap
        assert right != ("left eye" in cap)
        x = _disc_x(img) / img.shape[1]
        if "macula-centred" in attrs:  # the disc sits well to one side
            assert (x > 0.6) if right else (x < 0.4), (cap, x)
            checked += 1
        else:  # disc-centred: the disc is near the middle
            assert 0.35 < x < 0.65, (cap, x)
    assert checked >= 5


def test_attributes_match_pixels():
    """'dim' CFP images are darker than every 'well-exposed' one."""
    src = SyntheticSource("cfp", num_records=40, seed=2, image_size=64)
    means = {"dim": [], "well-exposed": []}
    for i in range(len(src)):
        r = src[i]
        means[r["attributes"][1]].append(r["image"].mean())
    assert max(means["dim"]) < min(means["well-exposed"])


def _features(img: np.ndarray) -> np.ndarray:
    """Model-free features: 16x16 pixels, per-channel log histograms, a log histogram of the
    high-pass luminance (dots, edges) and of the G/R chromaticity (red vs yellow lesions)."""
    small = np.asarray(Image.fromarray(img).resize((16, 16), Image.BILINEAR), np.float32) / 255
    hists = [np.log1p(np.histogram(img[..., c], bins=32, range=(0, 256))[0]) for c in range(3)]
    grey = Image.fromarray(img).convert("L")
    highpass = np.asarray(grey, np.float32) - np.asarray(
        grey.filter(ImageFilter.GaussianBlur(2)), np.float32)
    hp_hist = np.log1p(np.histogram(highpass, bins=24, range=(-60, 60))[0])
    f = img.astype(np.float32)
    lit = f[..., 0] > 20
    chroma = np.log1p(np.histogram(f[..., 1][lit] / f[..., 0][lit], bins=16, range=(0, 1.2))[0])
    return np.concatenate([small.ravel(), *hists, hp_hist, chroma])


@pytest.mark.parametrize("modality", MODALITIES)
def test_classes_learnable_from_pixels(modality):
    """A linear probe on simple pixel features separates the classes at 96 px (40 per class)."""
    n_cls = len(CLASSES[modality])
    per_class = 40
    train = SyntheticSource(modality, num_records=per_class * n_cls, seed=0, image_size=96,
                            name="train")
    test = SyntheticSource(modality, num_records=per_class * n_cls, seed=1, image_size=96,
                           name="test")
    xtr = np.stack([_features(train[i]["image"]) for i in range(len(train))])
    ytr = np.array([train[i]["label"] for i in range(len(train))])
    xte = np.stack([_features(test[i]["image"]) for i in range(len(test))])
    yte = np.array([test[i]["label"] for i in range(len(test))])
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    acc = clf.fit(xtr, ytr).score(xte, yte)
    print(f"{modality}: linear-probe accuracy {acc:.3f}")
    assert acc >= 0.8, f"{modality}: accuracy {acc:.3f}"


def test_module_exports():
    for name in ("MODALITIES", "CLASSES", "OOD_CLASSES", "KNOWLEDGE", "ATTRIBUTES", "render",
                 "SyntheticSource", "image_shape"):
        assert hasattr(synthetic, name)
