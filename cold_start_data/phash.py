"""A 64-bit perceptual hash (pHash) for near-duplicate images, with numpy only.

The classic recipe (as in the `imagehash` package): greyscale, resize to 32x32, 2-D DCT-II, keep the 8x8
lowest frequencies, one bit per coefficient: above the median of those 64 or not. Visually similar images
differ in few bits (Hamming distance). The paper goes on to minHash over these hashes for scale (Jaccard >
0.95 over 128 permutations); at the sizes this package builds, comparing hashes directly is exact and fast
enough, so that step is left out. This module knows nothing about records or datasets.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

HASH_SIDE, LOW = 32, 8


@lru_cache(maxsize=1)
def _dct_matrix(n: int = HASH_SIDE) -> np.ndarray:
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    return np.cos(np.pi * (2 * x + 1) * k / (2 * n))


def to_pil(image: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, np.ndarray):
        return Image.fromarray(image)
    with Image.open(image) as opened:  # a path
        return opened.convert("RGB")


def phash(image: Any) -> int:
    """The 64-bit pHash of a PIL image, an [H, W, 3] array or an image path.

    >>> flat = Image.new("RGB", (64, 64), (128, 128, 128))
    >>> phash(flat) == phash(flat.resize((100, 100)))
    True
    """
    grey = to_pil(image).convert("L").resize((HASH_SIDE, HASH_SIDE), Image.Resampling.LANCZOS)
    pixels = np.asarray(grey, dtype=np.float64)
    c = _dct_matrix()
    low = (c @ pixels @ c.T)[:LOW, :LOW]
    bits = (low > np.median(low)).ravel()
    return int("".join("1" if b else "0" for b in bits), 2)


def hamming(a: int, b: int) -> int:
    """Number of differing bits.

    >>> hamming(0b1011, 0b0001)
    2
    """
    return (a ^ b).bit_count()


def min_distances(query: int, hashes: np.ndarray) -> int:
    """Smallest Hamming distance from `query` to any of `hashes` (uint64 array); 65 when it is empty."""
    if hashes.size == 0:
        return 65
    return int(np.bitwise_count(hashes ^ np.uint64(query)).min())


def visual_hashes(images: list[Any], video: list[np.ndarray] | None = None) -> tuple[int, ...]:
    """The hashes that identify a prompt's visual content: each image, and a video's first, middle and
    last frames (in the order shown: a reshuffled clip is a different prompt)."""
    hashes = [phash(image) for image in images]
    if video is not None and len(video):
        hashes += [phash(video[k]) for k in (0, len(video) // 2, len(video) - 1)]
    return tuple(hashes)
