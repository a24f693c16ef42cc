import random

import numpy as np
from PIL import Image, ImageDraw

from cold_start_data.dedup import PromptIndex, normalise_prompt
from cold_start_data.phash import hamming, phash, visual_hashes
from cold_start_data.sources.shapes import counting_task


def _scene(offset: int = 0) -> Image.Image:
    image = Image.new("RGB", (224, 224), "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse((40 + offset, 40, 120 + offset, 120), fill="red")
    draw.rectangle((130, 130, 200, 210), fill="blue")
    return image


def test_hamming_by_hand():
    assert hamming(0, 0) == 0
    assert hamming(0b1111, 0) == 4
    assert hamming(2 ** 64 - 1, 0) == 64


def test_phash_is_stable_under_resizing_and_small_noise():
    base = _scene()
    assert hamming(phash(base), phash(base.resize((448, 448)))) <= 2
    noisy = np.asarray(base).astype(int) + np.random.default_rng(0).integers(-8, 9, (224, 224, 3))
    assert hamming(phash(base), phash(np.clip(noisy, 0, 255).astype(np.uint8))) <= 4


def test_phash_separates_different_scenes():
    a, b = counting_task(random.Random(0)).images[0], counting_task(random.Random(1)).images[0]
    assert hamming(phash(a), phash(b)) > 10
    assert 0 <= phash(a) < 2 ** 64


def test_video_hashes_use_first_middle_last_frames():
    frames = [np.full((28, 28, 3), 10 * k, np.uint8) for k in range(6)]
    assert len(visual_hashes([], frames)) == 3
    assert len(visual_hashes([_scene()], None)) == 1


def test_prompt_normalisation():
    assert normalise_prompt("What is  2 + 3?\n/no_think") == normalise_prompt("what is 2 + 3?")


def test_exact_text_duplicates_and_scope():
    index = PromptIndex()
    index.add("What is 2 + 3?", scope="think/think")
    assert index.contains("what is 2 +  3? /think", scope="think/think")
    assert not index.contains("What is 2 + 3?", scope="no_think/no_think")  # once per mode is allowed
    assert not index.contains("What is 2 + 4?", scope="think/think")


def test_same_question_on_a_near_duplicate_image_is_a_duplicate():
    index = PromptIndex(max_distance=4)
    index.add("How many?", (phash(_scene()),))
    assert index.contains("How many?", (phash(_scene().resize((230, 230))),))
    assert not index.contains("How many?", (phash(counting_task(random.Random(3)).images[0]),))
    assert not index.contains("How many?")  # text-only prompt is not the image prompt
    assert not index.contains("Count them.", (phash(_scene()),))  # another question about the same image
