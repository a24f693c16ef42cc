"""`traces show` prints model text as inert text (see posttrain/viewer/terminal.py)."""

from __future__ import annotations

import io

from rich.console import Console

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
