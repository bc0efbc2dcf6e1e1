"""Contact sheet of the synthetic retinal images: one panel per modality, rows = classes.

  python benchmarks/synthetic_contact_sheet.py --out /tmp/synthetic.png [--size 128 --cols 5]
"""

import argparse
import os
import sys

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from input_pipeline import synthetic  # noqa: E402


def contact_sheet(size: int, cols: int, seed: int) -> Image.Image:
    label_w, pad = 190, 4
    panels = []
    for modality in synthetic.MODALITIES:
        classes = synthetic.CLASSES[modality] + (
            synthetic.OOD_CLASSES if modality == "cfp" else ())
        h, w = synthetic.image_shape(modality, size)
        panel = Image.new("RGB", (label_w + cols * (w + pad), len(classes) * (h + pad) + 16),
                          (40, 40, 40))
        draw = ImageDraw.Draw(panel)
        draw.text((4, 2), modality.upper(), fill=(255, 255, 0))
        for r, cls in enumerate(classes):
            y = 16 + r * (h + pad)
            draw.text((4, y + h // 2 - 6), cls, fill=(255, 255, 255))
            for c in range(cols):
                rng = np.random.default_rng([seed, r, c])
                img, _, _ = synthetic.render(modality, cls, rng, size)
                panel.paste(Image.fromarray(img), (label_w + c * (w + pad), y))
        panels.append(panel)
    sheet = Image.new("RGB", (max(p.width for p in panels), sum(p.height for p in panels)))
    y = 0
    for p in panels:
        sheet.paste(p, (0, y))
        y += p.height
    return sheet


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--cols", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    contact_sheet(args.size, args.cols, args.seed).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
