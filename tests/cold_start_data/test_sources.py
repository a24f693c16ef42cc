import random

import numpy as np
import pytest

from cold_start_data.sources import SOURCES, make_task
from cold_start_data.sources.arithmetic import (
    addition_steps,
    addition_task,
    has_carry,
    multiplication_task,
    subtraction_task,
)
from cold_start_data.sources.shapes import COLOURS, SIZE
from cold_start_data.sources.small_detail import colour_task, dots_task
from cold_start_data.sources.video import SIZE as VIDEO_SIZE
from keye_protocol.grounding import denormalize_box, parse_boxes


def test_addition_column_steps_by_hand():
    steps, total = addition_steps(37, 45)
    assert steps == ["Add the ones: 7 + 5 = 12, write 2 and carry 1.", "Add the tens: 3 + 4 + 1 = 8, write 8.",
                     "So 37 + 45 = 82."]
    assert total == 82
    assert addition_steps(85, 47, style="compact") == (["5+7=12, carry 1.", "8+4+1=13."], 132)


def test_dropped_carry_is_the_systematic_flaw():
    task = addition_task(37, 45)
    assert task.answer == "82" and task.solution.final == "\\boxed{82}"
    assert task.flawed_solution.final == "\\boxed{72}" and task.flawed_solution.flawed
    assert "carry" not in task.flawed_solution.reasoning
    assert addition_task(32, 45).flawed_solution is None  # nothing to drop
    assert addition_steps(199, 1, drop_carry=True)[1] == 190  # 9+1 -> 0, 9+0 -> 9, 1 -> 1


def test_carry_means_a_carry_into_another_column():
    assert has_carry(37, 45) and has_carry(95, 5)
    assert not has_carry(5, 5)  # one column: 10 is written down whole
    assert not has_carry(92, 73)  # 9+7 is the leading column: written as 16, nothing to drop


def test_subtraction_and_multiplication_by_hand():
    sub = subtraction_task(52, 17)
    assert sub.answer == "35"
    assert sub.solution.steps[0] == "Subtract the ones: 2 < 7, borrow 1 from the tens: 12 - 7 = 5."
    assert sub.solution.steps[1] == "Subtract the tens: 4 - 1 = 3."
    mul = multiplication_task(37, 4)
    assert mul.answer == "148"
    assert mul.solution.steps[:2] == ["Multiply the ones: 7 x 4 = 28, write 8 and carry 2.",
                                      "Multiply the tens: 3 x 4 + 2 = 14."]


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_same_seed_same_task(name):
    a, b = make_task(name, random.Random(5)), make_task(name, random.Random(5))
    assert (a.prompt, a.answer, a.solution.steps) == (b.prompt, b.answer, b.solution.steps)
    assert [np.asarray(i).tobytes() for i in a.images] == [np.asarray(i).tobytes() for i in b.images]
    draws = {seed: [(t.prompt, t.answer) for t in (make_task(name, rng) for rng in [random.Random(seed)] * 5)]
             for seed in (5, 6)}
    assert draws[5] != draws[6]


def _mask(pixels: np.ndarray, colour: str) -> np.ndarray:
    return (np.abs(pixels.astype(int) - np.array(COLOURS[colour])).sum(-1) < 30)


def test_grounding_boxes_hold_the_target_and_only_it():
    for seed in range(10):
        task = SOURCES["grounding"](random.Random(seed))
        pixels = np.asarray(task.images[0])
        colour = task.meta["target"].split()[0]
        boxes = parse_boxes(task.answer)
        assert len(boxes) == task.meta["objects"]
        covered = np.zeros(pixels.shape[:2], bool)
        for box in boxes:
            x1, y1, x2, y2 = (round(v) for v in denormalize_box(box, SIZE, SIZE))
            region = _mask(pixels[y1:y2 + 1, x1:x2 + 1], colour)
            assert region.mean() > 0.3  # a filled shape of the target colour fills much of its box
            covered[y1:y2 + 1, x1:x2 + 1] = True
        # other shapes of that colour are other kinds, so we can only check the target is inside the boxes
        assert _mask(pixels, colour)[covered].sum() > 0


def test_counting_answer_matches_the_listed_objects():
    task = SOURCES["counting"](random.Random(1))
    listed = [s for s in task.solution.steps if s[0].isdigit()]
    assert len(listed) == int(task.answer)
    assert task.solution.final == f"\\boxed{{{task.answer}}}"


def _ball_positions(frames, colour):
    out = []
    for frame in frames:
        ys, xs = np.nonzero(_mask(frame, colour))
        out.append((xs.mean(), ys.mean()))
    return out


def test_video_order_answer_recovers_the_motion_from_pixels():
    for seed in range(5):
        task = SOURCES["video_order"](random.Random(seed))
        colour, direction = task.prompt.split("The ")[2].split()[0], task.meta["direction"]
        positions = _ball_positions(task.video, colour)
        order = [int(k) - 1 for k in task.answer.split(",")]
        axis = 0 if direction in ("left", "right") else 1
        along = [positions[k][axis] for k in order]
        sign = 1 if direction in ("right", "down") else -1
        assert all(sign * (b - a) > 0 for a, b in zip(along, along[1:]))
        assert len(task.video) == 6 and task.video[0].shape == (VIDEO_SIZE, VIDEO_SIZE, 3)


def test_video_motion_direction_from_pixels():
    task = SOURCES["video_motion"](random.Random(2))
    colour = task.prompt.split("the ")[1].split()[0]
    (x0, y0), (x1, y1) = _ball_positions([task.video[0], task.video[-1]], colour)
    expected = ("right" if x1 > x0 else "left") if abs(x1 - x0) > abs(y1 - y0) else ("down" if y1 > y0 else "up")
    assert task.answer == expected


def test_small_detail_code_plans_read_their_output():
    colour = colour_task(random.Random(0))
    assert "image.crop" in colour.tool.code and "zoom.save" in colour.tool.code
    assert colour.tool.read_output("centre colour: (40, 70, 220)\n") == "blue"
    dots = dots_task(random.Random(0))
    assert dots.tool.read_output("red pixels: 27 -> 3 dots\n") == "3"
    assert dots.tool.read_output("Traceback ...") is None
    # the dots really are there: 9 red pixels per dot inside the frame
    x1, y1, x2, y2 = dots.meta["frame"]
    crop = np.asarray(dots.images[0])[y1:y2, x1:x2]
    assert _mask(crop, "red").sum() == 9 * int(dots.answer)
