"""Images and videos to raster-order 14x14 patches, as Keye-VL reads them.

Resize so both sides are multiples of 28 (patch x merge) within a pixel budget, keeping the aspect ratio
(at most 200:1), bicubic; scale to [-1, 1] with mean = std = 0.5; cut into patches in (t, h, w) raster order.
Videos are sampled at a fixed rate (2 fps) within a frame range, every frame at one size chosen from a
per-frame token budget. This module knows nothing about tokens beyond counting them.

`KeyeImageProcessor` is the transformers face of these functions (`AutoImageProcessor`,
`preprocessor_config.json`). It handles videos too: transformers' own video processors need torchvision, which
has no build for the CPU torch wheel this project runs on, so there is no separate `AutoVideoProcessor` class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict
from transformers import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor

MAX_ASPECT_RATIO = 200


class VisionProcessingConfig(BaseModel):
    """Pixel and token budgets. Defaults are the 8B model's (KEYE.md); presets override them."""

    model_config = ConfigDict(extra="ignore")  # public preprocessor files carry keys we do not use

    patch_size: int = 14
    merge_size: int = 2
    min_pixels: int = 4 * 28 * 28
    max_pixels: int = 16384 * 28 * 28  # image up to 16384 tokens
    video_fps: float = 2.0
    video_min_frames: int = 4
    video_max_frames: int = 768
    video_min_tokens_per_frame: int = 128
    video_max_tokens_per_frame: int = 768
    video_max_tokens: int = 24576

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    @property
    def pixels_per_token(self) -> int:
        return self.factor**2


@dataclass
class PatchedVision:
    pixel_values: torch.Tensor  # [sum t*h*w, 3, P, P]
    grid_thw: torch.Tensor  # [items, 3]
    second_per_grid: list[float]  # seconds per temporal step (videos); 0 for images

    @property
    def tokens_per_item(self) -> list[int]:
        return tokens_per_item(self.grid_thw)


def tokens_per_item(grid_thw: torch.Tensor) -> list[int]:
    """Placeholder tokens each item fills: t*h*w patches, four per token after the 2x2 merge."""
    return [int(t * h * w) // 4 for t, h, w in grid_thw.tolist()]


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int,
                 what: str = "image") -> tuple[int, int]:
    """Target (height, width): multiples of `factor`, aspect kept, area within [min_pixels, max_pixels]."""
    if min(height, width) < factor:
        raise ValueError(f"{what} is {width}x{height} px; its shorter side must be at least {factor} px "
                         f"(one 2x2 block of {factor // 2}-px patches). Upscale or pad it before processing")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(f"{what} is {width}x{height} px, aspect ratio {max(height, width) / min(height, width):.0f}"
                         f":1; Keye-VL accepts at most {MAX_ASPECT_RATIO}:1. Crop or pad it")
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def to_pil(image: Any, what: str = "image") -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__"):
        return Image.open(image).convert("RGB")
    if isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[-1] in (1, 3, 4):
        return Image.fromarray(image.astype(np.uint8)).convert("RGB")
    raise TypeError(f"{what} must be a PIL image, a path, or an HxWx3 uint8 array; got {type(image).__name__}"
                    + (f" of shape {image.shape}" if isinstance(image, np.ndarray) else ""))


def normalized_array(image: Image.Image, height: int, width: int) -> np.ndarray:
    """[3, H, W] float32 in [-1, 1]."""
    resized = image.resize((width, height), resample=Image.Resampling.BICUBIC)
    array = np.asarray(resized, dtype=np.float32) / 255.0
    return ((array - 0.5) / 0.5).transpose(2, 0, 1)


def patchify(frames: np.ndarray, patch: int) -> np.ndarray:
    """[T, C, H, W] -> [T * H/p * W/p, C, p, p] in (t, h, w) raster order."""
    t, c, h, w = frames.shape
    x = frames.reshape(t, c, h // patch, patch, w // patch, patch).transpose(0, 2, 4, 1, 3, 5)
    return x.reshape(-1, c, patch, patch)


def process_images(images: list[Any], config: VisionProcessingConfig) -> PatchedVision:
    pixels, grids = [], []
    for i, image in enumerate(images):
        pil = to_pil(image, f"image {i}")
        h, w = smart_resize(pil.height, pil.width, config.factor, config.min_pixels, config.max_pixels, f"image {i}")
        pixels.append(patchify(normalized_array(pil, h, w)[None], config.patch_size))
        grids.append([1, h // config.patch_size, w // config.patch_size])
    return _pack(pixels, grids, [0.0] * len(grids))


def sample_frame_indices(num_frames: int, fps: float, config: VisionProcessingConfig) -> list[int]:
    """Frames to keep: `video_fps` per second, clamped to the frame range and token budget, an even count."""
    duration = num_frames / fps
    wanted = round(duration * config.video_fps)
    most = min(config.video_max_frames, config.video_max_tokens // config.video_min_tokens_per_frame)
    count = min(max(wanted, config.video_min_frames), most)
    count = max(2, count - count % 2)
    return np.linspace(0, num_frames - 1, count).round().astype(int).tolist()


def process_videos(videos: list[dict], config: VisionProcessingConfig) -> PatchedVision:
    """Each video is a dict with `video` (a list of frames or a [T, H, W, 3] array) and optional `fps`
    (the rate of the given frames; default: already sampled at `video_fps`)."""
    pixels, grids, seconds = [], [], []
    for i, item in enumerate(videos):
        frames = item.get("video") if isinstance(item, dict) else item
        if isinstance(frames, (str, bytes)) or frames is None or len(frames) == 0:
            raise TypeError(f"video {i} must be a non-empty list of frames or a [T, H, W, 3] array "
                            f"(decode video files to frames first); got {type(frames).__name__}")
        fps = float(item.get("fps", config.video_fps)) if isinstance(item, dict) else config.video_fps
        keep = sample_frame_indices(len(frames), fps, config)
        pils = [to_pil(frames[k], f"video {i} frame {k}") for k in keep]
        per_frame = min(max(config.video_max_tokens // len(keep), config.video_min_tokens_per_frame),
                        config.video_max_tokens_per_frame)
        h, w = smart_resize(pils[0].height, pils[0].width, config.factor,
                            config.video_min_tokens_per_frame * config.pixels_per_token,
                            per_frame * config.pixels_per_token, f"video {i}")
        array = np.stack([normalized_array(p, h, w) for p in pils])
        pixels.append(patchify(array, config.patch_size))
        grids.append([len(keep), h // config.patch_size, w // config.patch_size])
        seconds.append(len(frames) / fps / len(keep))
    return _pack(pixels, grids, seconds)


def _pack(pixels: list[np.ndarray], grids: list[list[int]], seconds: list[float]) -> PatchedVision:
    return PatchedVision(pixel_values=torch.from_numpy(np.concatenate(pixels)),
                         grid_thw=torch.tensor(grids, dtype=torch.long), second_per_grid=seconds)


# Keys the public Keye-VL `preprocessor_config.json` carries that the budgets above already imply (resize to
# multiples of 28, bicubic, rescale by 1/255, mean = std = 0.5, one frame per temporal patch).
PUBLIC_IMPLIED_KEYS = {"do_convert_rgb", "do_normalize", "do_rescale", "do_resize", "image_mean", "image_std",
                       "resample", "rescale_factor", "temporal_patch_size", "auto_map", "image_processor_type",
                       "size", "processor_class"}


class KeyeImageProcessor(BaseImageProcessor):
    """Images and videos -> `pixel_values` [N, 3, 14, 14] and grids [items, 3], within a preset's budgets.

    The attributes are `VisionProcessingConfig`'s fields, plus `size` = {min_pixels, max_pixels} and the
    normalisation constants, which vLLM's Keye model reads from the processor to count placeholder tokens.
    """

    model_input_names = ["pixel_values", "image_grid_thw"]

    def __init__(self, **kwargs):
        unknown = set(kwargs) - set(VisionProcessingConfig.model_fields) - PUBLIC_IMPLIED_KEYS
        if unknown:
            raise TypeError(f"KeyeImageProcessor got unknown settings {sorted(unknown)}; it takes "
                            f"{sorted(VisionProcessingConfig.model_fields)}")
        size = kwargs.get("size") or {}
        budgets = {k: v for k, v in {**size, **kwargs}.items() if k in VisionProcessingConfig.model_fields}
        super().__init__(**VisionProcessingConfig(**budgets).model_dump())
        self.size = {"min_pixels": self.min_pixels, "max_pixels": self.max_pixels}
        self.image_mean = self.image_std = [0.5, 0.5, 0.5]
        self.temporal_patch_size = 1

    @property
    def vision(self) -> VisionProcessingConfig:
        return VisionProcessingConfig(**{k: getattr(self, k) for k in VisionProcessingConfig.model_fields})

    def preprocess(self, images: list[Any] | None = None, videos: list[Any] | None = None,
                   return_tensors: str | None = "pt") -> BatchFeature:
        """`pixel_values`/`image_grid_thw` for images; `pixel_values_videos`/`video_grid_thw`/
        `second_per_grid_ts` for videos (each a dict `{"video": frames, "fps": rate}` or a list of frames)."""
        if return_tensors not in ("pt", None):
            raise ValueError(f"return_tensors={return_tensors!r}: Keye's processor returns torch tensors ('pt')")
        data = {}
        if images:
            patched = process_images(list(images), self.vision)
            data.update(pixel_values=patched.pixel_values, image_grid_thw=patched.grid_thw)
        if videos:
            patched = process_videos(list(videos), self.vision)
            data.update(pixel_values_videos=patched.pixel_values, video_grid_thw=patched.grid_thw,
                        second_per_grid_ts=torch.tensor(patched.second_per_grid))
        return BatchFeature(data=data)

    def __call__(self, images=None, videos=None, return_tensors: str | None = "pt") -> BatchFeature:
        return self.preprocess(images, videos, return_tensors)
