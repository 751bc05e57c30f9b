"""Write scikit-learn's 8x8 digits as PNG image folders, one folder per site.

``data/site-K/<digit>/<n>.png``: each site's images sorted into one sub-folder per class, as
an image folder would be at a real site. The sites get different mixes of digits (a
Dirichlet label skew), so the federation is non-IID.

    python make_images.py [--out data] [--sites 3] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from murmura.data.partition import partition


def main() -> None:
    """Split the digits across sites and write each image as an 8-bit grey PNG."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    ap.add_argument("--sites", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    x, y = load_digits(return_X_y=True)
    pixels = (x * (255 / 16)).round().astype(np.uint8).reshape(-1, 8, 8)
    parts = partition("dirichlet", y, a.sites, a.seed, alpha=1.0, min_size=100)
    for k, rows in enumerate(parts):
        site = a.out / f"site-{k}"
        for i in rows:
            folder = site / str(y[i])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels[i], mode="L").save(folder / f"{i}.png")
        print(f"{site}: {len(rows)} images")


if __name__ == "__main__":
    main()
