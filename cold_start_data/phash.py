"""64-bit perceptual hashes (pHash) for near-duplicate images, from the `imagehash` package.

pHash: greyscale, resize to 32x32, 2-D DCT, the 8x8 lowest frequencies, one bit per coefficient (above their
median or not); visually similar images differ in few bits (Hamming distance). Hashes are kept as Python ints
so they fit numpy's uint64 arrays for fast distance scans. At the sizes this package builds, comparing hashes
directly is exact and fast enough; the pre-training data (`pretrain_data.hygiene`) adds the paper's MinHash LSH
over the same hashes for scale. This module knows nothing about records or datasets.
"""

from __future__ import annotations

from typing import Any

import imagehash
import numpy as np
from PIL import Image


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
    return int(str(imagehash.phash(to_pil(image))), 16)


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
