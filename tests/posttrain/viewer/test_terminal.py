"""`traces show` prints model text as inert text (see posttrain/viewer/terminal.py)."""

from __future__ import annotations

import io

from rich.console import Console

from posttrain.cli import main
from posttrain.viewer import terminal
from posttrain.viewer.records import view_record

RLO, PDI = "\u202e", "\u2069"  # right-to-left override; pop directional isolate


def test_bidi_controls_are_shown_escaped_not_obeyed(rows):
    record = {**rows[0], "prompt_id": f"p{RLO}0", "completion": f"<answer>\\boxed{{7{RLO}7}}</answer>{PDI}",
              "reward_error": "exception", "reward_message": f"x{chr(0x061c)}y{chr(0x200f)}"}
    out = io.StringIO()
    terminal.show([view_record(record, "01-rl", 0, lambda stage, path: path)], 1,
                  Console(file=out, width=200, color_system=None), notes=[f"01-rl: line 3, {RLO}x"])
    printed = out.getvalue()
    assert not any(c in printed for c in (RLO, PDI, "\u061c", "\u200f"))
    assert "01-rl: line 3, \\u202ex" in printed  # the note
    assert "p\\u202e0" in printed  # the title
    assert "7\\u202e7}</answer>\\u2069" in printed  # the completion
    assert "boxed='7\\u202e7'" in printed  # the parsed answer
    assert "x\\u061cy\\u200f" in printed  # the reward message


def test_show_draws_a_gap_strip_and_skips_one_of_the_wrong_length(make_run, rows, distill_record, capsys,
                                                                   monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # the legend on one line
    short = {**distill_record, "teacher_gaps": distill_record["teacher_gaps"][:-1]}  # one gap missing
    assert main(["traces", "show", str(make_run([distill_record, short, *rows[1:]])), "--limit", "1"]) == 0
    out = capsys.readouterr().out
    assert ("01-rl: 1 unreadable line skipped (first: line 2, Value error, teacher_gaps: 5 values for 6 "
            "token_texts (completion_tokens 6))") in out
    assert "teacher thinker: log p_student − log p_teacher, mean +0.358  -2  -1  -0.5  -0.1  0  +0.1  +0.5  +1  " \
           "+2  red: student surer" in out
    assert "<think>2+2</think><answer><b>4</b></answer>" in out  # the strip, after the completion
    assert "1 of 12 matching samples shown" in out


def test_each_token_of_the_strip_has_the_background_of_its_gap(distill_record):
    out = io.StringIO()
    view = view_record(distill_record, "01-rl", 0, lambda stage, path: path)
    terminal.show([view], 1, Console(file=out, width=200, force_terminal=True, color_system="truecolor"))
    printed = out.getvalue()
    assert "\x1b[30;48;2;222;45;38m<b>4</b>" in printed  # gap +3: the deepest red (#de2d26)
    assert "\x1b[30;48;2;107;174;214m</think>" in printed  # gap -1.2: the third blue (#6baed6)
