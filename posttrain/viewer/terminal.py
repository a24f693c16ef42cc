"""The terminal view of trace samples (`posttrain traces show`): one rich panel per sample with the prompt, the
completion with its parts coloured, the reward components and errors, the advantage and the weight version, and
for a distill sample its teacher-gap heat strip (`posttrain.viewer.gaps`) under a one-line legend.

Model text is appended as `rich.text.Text` pieces, never as console markup, so a completion containing
`[bold]` or escape-like text prints as written; control characters (ESC sequences) are shown as `\x1b`, and
bidirectional-text controls as `\u202e`, so text cannot reorder what the reader sees (Trojan Source).
Knows nothing about where the samples came from.
"""

from __future__ import annotations

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from posttrain.viewer.gaps import THRESHOLDS
from rewards.reward_process import printable as escape_controls

STYLES = {"text": "", "tag": "dim", "special": "dim italic", "analysis": "magenta", "think": "cyan",
          "answer": "bold green", "boxed": "bold black on yellow", "code": "blue", "sandbox": "yellow"}
# gap shade (posttrain.viewer.gaps.shade) -> background; None is the marker where tokens were cut
RED = ("#fee0d2", "#fcae91", "#fb6a4a", "#de2d26")  # shades 1..4: the student surer than its teacher
BLUE = ("#deebf7", "#9ecae1", "#6baed6", "#3182bd")  # shades -1..-4: the student less sure
GAP_STYLES = {None: "dim", 0: "", **{k: f"black on {c}" for k, c in enumerate(RED, 1)},
              **{-k: f"black on {c}" for k, c in enumerate(BLUE, 1)}}


def printable(value) -> str:
    """`value` as text with control characters written out (``\\x1b``, ``\\u202e``): the rule for what a reward
    prints (`rewards.reward_process.printable`), so a completion cannot clear the screen, recolour what follows or
    show text in another order than it has (Trojan Source).

    >>> printable("ok\\x1b[2J \\u202eevil\\u202c")
    'ok\\\\x1b[2J \\\\u202eevil\\\\u202c'
    """
    return escape_controls(str(value))


def completion_text(view: dict) -> Text:
    text = Text()
    for segment in view["segments"]:
        text.append(printable(segment["text"]), style=STYLES.get(segment["kind"], ""))
    return text


def gap_strip(view: dict) -> Text:
    """The completion's tokens, each on the background of its gap's shade."""
    text = Text()
    for piece in view["teacher_strip"]:
        text.append(printable(piece["text"]), style=GAP_STYLES[piece["shade"]])
    return text


def gap_legend(view: dict) -> Text:
    """One line: the teacher, what the gap is and its mean, and each shade with the gap it starts at."""
    line = Text()
    line.append(printable(f"teacher {view.get('teacher')}: log p_student − log p_teacher, mean "
                          f"{_number(view.get('teacher_gap'))} "), style="dim")
    for level in range(-len(THRESHOLDS), len(THRESHOLDS) + 1):
        label = f"{'+' if level > 0 else '-'}{THRESHOLDS[abs(level) - 1]:g}" if level else "0"
        line.append(f" {label} ", style=GAP_STYLES[level])
    line.append(" red: student surer", style="dim")
    return line


def reward_line(view: dict) -> Text:
    line = Text()
    reward = view.get("reward")
    line.append("reward ", style="bold")
    line.append("—" if reward is None else f"{reward:.3f}", style="bold red" if reward is None else "bold")
    for name, value in (view.get("reward_components") or {}).items():
        line.append(f"  {printable(name)} ", style="dim")
        line.append(_number(value))
    advantage = view.get("advantage")
    line.append("   advantage ", style="dim")
    line.append(_number(advantage), style="green" if (advantage or 0) > 0 else "red" if (advantage or 0) < 0 else "")
    line.append(f"   weights v{view.get('weight_version')}", style="dim")
    line.append(printable(f"   {view.get('finish_reason')}  {view.get('completion_tokens')} tokens"), style="dim")
    return line


def error_line(view: dict) -> Text | None:
    if not view.get("reward_error"):
        return None
    line = Text(printable(f"reward error: {view['reward_error']}"), style="bold red")
    if view.get("reward_message"):
        line.append(printable(f"  {view['reward_message']}"), style="red")
    return line


def parsed_line(view: dict) -> Text:
    parsed = view["parsed"]
    line = Text("parsed: ", style="dim")
    line.append(printable(f"boxed={parsed['boxed']!r}") if parsed["boxed"] is not None else "no boxed answer")
    if view.get("answer") is not None:
        line.append(printable(f"   reference={view['answer']!r}"), style="dim")
    if parsed["problems"]:
        line.append(printable("   " + "; ".join(parsed["problems"])), style="yellow")
    return line


def sample_panel(view: dict) -> Panel:
    title = Text(printable(f"{view['stage']} · step {view['step']} · group {view['group']} · sample "
                           f"{view['sample_index']} · {view['mode']} · {view['prompt_id']}"))
    parts = [Text(printable(view["prompt_text"]), style="dim"), Text(""), completion_text(view), Text(""), parsed_line(view),
             reward_line(view)]
    if view.get("teacher_strip") is not None:
        parts += [Text(""), gap_legend(view), gap_strip(view)]
    error = error_line(view)
    if error is not None:
        parts.append(error)
    if view.get("images"):
        parts.append(Text(printable("images: " + ", ".join(map(str, view["images"]))), style="dim"))
    border = "red" if view.get("reward_error") else "green" if (view.get("reward") or 0) > 0 else "grey50"
    return Panel(Group(*parts), title=title, title_align="left", border_style=border)


def legend() -> Table:
    table = Table.grid(padding=(0, 1))
    table.add_row(*[Text(kind, style=style or "default") for kind, style in STYLES.items() if kind != "text"])
    return table


def show(views: list[dict], total: int, console: Console | None = None, notes: list[str] = ()) -> None:
    """`notes`: what the trace files left out (`RunTraces.notes`), printed first so no skipped line goes unseen."""
    console = console or Console()
    for note in notes:
        console.print(Text(printable(note), style="yellow"), soft_wrap=True)  # one line, to grep and copy
    console.print(legend())
    for view in views:
        console.print(sample_panel(view))
    shown = len(views)
    console.print(Text(f"{shown} of {total} matching samples shown" + (" (use --limit/--offset for more)"
                                                                       if shown < total else ""), style="dim"))


def _number(value) -> str:
    return "—" if value is None else f"{value:+.3f}" if isinstance(value, float) else str(value)
