from posttrain.prompts import request_of
from posttrain.stages.rl.curriculum import Curriculum

ROW = {"id": "p1", "prompt": "What is 37 + 45?", "answer": "82", "mode": "think",
       "hints": ["carry!", "7+5=12, carry 1.", "3+4+1=8."]}


def asked_text(row) -> str:
    content = request_of(row).messages[-1]["content"]
    return "".join(i["text"] for i in content) if isinstance(content, list) else content


def test_a_prompt_that_always_fails_climbs_the_hint_levels():
    curriculum = Curriculum(hints=True, max_hint_level=5)
    assert curriculum.prepare(ROW) is ROW  # never seen: asked as is
    assert curriculum.update(ROW, [0.0, 0.1, None, 0.0]) == 0.0
    assert asked_text(curriculum.prepare(ROW)).endswith("What is 37 + 45?\nHint: carry!")
    for _ in range(5):
        curriculum.update(ROW, [0.0] * 4)
    prepared = curriculum.prepare(ROW)
    assert prepared["hint_level"] == 3 and asked_text(prepared).endswith("Hint: 3+4+1=8.")  # capped at the hints


def test_a_solved_hint_level_is_kept_and_pass_rate_recorded():
    curriculum = Curriculum(hints=True)
    curriculum.update(ROW, [0.0, 0.0])
    assert curriculum.update(ROW, [1.1, 0.1]) == 0.5
    assert curriculum.records["p1"].hint_level == 1


def test_filter_skips_solved_prompts_only_when_asked():
    assert Curriculum(filter_solved=False).wants(ROW)
    curriculum = Curriculum(filter_solved=True)
    assert curriculum.wants(ROW)
    curriculum.update(ROW, [1.0, 1.1, 1.0])
    assert not curriculum.wants(ROW)
    assert curriculum.metrics()["curriculum/solved_fraction"] == 1.0


def test_state_round_trips():
    curriculum = Curriculum(hints=True)
    curriculum.update(ROW, [0.0])
    again = Curriculum(hints=True)
    again.load_state_dict(curriculum.state_dict())
    assert again.prepare(ROW) == curriculum.prepare(ROW)


def test_rows_without_hints_are_never_hinted():
    curriculum = Curriculum(hints=True)
    row = {k: v for k, v in ROW.items() if k != "hints"}
    curriculum.update(row, [0.0])
    assert curriculum.prepare(row) is row
