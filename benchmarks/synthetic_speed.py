"""Milliseconds per synthetic image, per modality, on one core.

  python benchmarks/synthetic_speed.py [--n 200]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from input_pipeline import synthetic  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=200, help="images per modality and size")
    args = ap.parse_args()
    for size in (128, 512):
        for modality in synthetic.MODALITIES:
            src = synthetic.SyntheticSource(modality, num_records=args.n, seed=0,
                                            image_size=size)
            src[0]  # warm caches
            n = args.n if size <= 128 else max(10, args.n // 4)
            t = time.perf_counter()
            for i in range(n):
                src[i]
            ms = (time.perf_counter() - t) / n * 1e3
            print(f"{modality} {size:4d}px: {ms:6.2f} ms/image")


if __name__ == "__main__":
    main()
