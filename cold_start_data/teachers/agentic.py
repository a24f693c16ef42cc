"""The agentic teacher: the solver's image code, run for real in the sandbox, kept only if it yields the answer.

For a task with a `ToolPlan`, the code runs in `rewards.sandbox` with the task's images (pre-loaded there as
`image` / `images`). A sample is kept only when the code exits cleanly and the answer read from what it
printed equals the gold answer; the recorded ``<sandbox_output>`` is exactly that stdout, and the images the
code wrote (the zoomed crop) go into the assistant turn inside it, where the rollout's agentic loop puts them.
This module knows nothing about how the sandbox confines code; `run_tool` can be replaced (tests, other
sandboxes) by any `(code, images) -> ToolOutput`.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from cold_start_data.formatting import format_agentic
from cold_start_data.judge import Judgement
from cold_start_data.tasks import Task
from cold_start_data.teachers.base import Candidate, TeacherResult
from rewards.task_answer import normalise_text
from keye_protocol.chat import Mode, parse_response


@dataclass
class ToolOutput:
    stdout: str
    exit_code: int | None
    stderr: str = ""
    images: list[Any] = field(default_factory=list)  # PIL images the code wrote
    status: str = "ok"


def sandbox_runner(**limits: Any) -> Callable[[str, list[Any]], ToolOutput]:
    """`rewards.sandbox.run_python` as a tool runner (`limits`: its SandboxLimits fields)."""

    def run(code: str, images: list[Any]) -> ToolOutput:
        from rewards.sandbox import run_python

        result = run_python(code, images=images, **limits)
        written = [getattr(image, "to_pil", lambda im=image: im)() for image in result.images]  # PIL (or encoded)
        return ToolOutput(result.stdout, result.exit_code, result.stderr,
                          [image.convert("RGB") for image in written], result.status)

    return run


class AgenticTeacher:
    name = "solver+sandbox"

    def __init__(self, run_tool: Callable[[str, list[Any]], ToolOutput] | None = None, workers: int = 2):
        self.run_tool = run_tool or sandbox_runner()
        self.workers = workers

    def write(self, items: list[tuple[Task, Mode, Judgement | None]]) -> list[TeacherResult]:
        # Each run is a subprocess, so threads overlap them; `map` keeps the order (and the build deterministic).
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(self.write_one, [task for task, _, _ in items]))

    def write_one(self, task: Task) -> TeacherResult:
        plan = task.tool
        if plan is None:
            return TeacherResult(None, f"source {task.source} has no tool plan: it cannot make agentic samples")
        out = self.run_tool(plan.code, list(task.images))
        if out.status != "ok" or out.exit_code != 0:
            tail = (out.stderr.strip().splitlines() or [""])[-1]
            return TeacherResult(None, f"sandbox: {out.status} (exit {out.exit_code}) {tail}".strip(), sampled=1)
        answer = plan.read_output(out.stdout)
        if answer is None or normalise_text(answer) != normalise_text(task.answer):
            return TeacherResult(None, f"sandbox output gives {answer!r}, expected {task.answer!r}", sampled=1)
        # stdout exactly as the rollout's agentic loop would insert it (trailing newline included)
        response = format_agentic(plan.intro, plan.code, out.stdout, plan.explain(out.stdout, answer),
                                  task.solution.final)
        return TeacherResult(Candidate(response, self.name, sandbox_images=[list(out.images)]), sampled=1,
                             verified=1)


def replay_problem(response: str, images: list[Any], run_tool: Callable[[str, list[Any]], ToolOutput]) -> str | None:
    """Re-run every code block of a recorded agentic response in order (later blocks also see the images
    earlier ones wrote, as in the rollout loop); the problem, or None when each one exits cleanly and prints
    exactly its recorded ``<sandbox_output>`` text."""
    parsed = parse_response(response)
    if not parsed.code_blocks:
        return "agentic: the response runs no code"
    if len(parsed.sandbox_outputs) != len(parsed.code_blocks):
        return (f"agentic: {len(parsed.code_blocks)} code blocks but {len(parsed.sandbox_outputs)} sandbox "
                f"outputs")
    context = list(images)
    for k, (code, recorded) in enumerate(zip(parsed.code_blocks, parsed.sandbox_outputs), start=1):
        out = run_tool(code, context)
        if out.status != "ok" or out.exit_code != 0:
            return f"sandbox: code block {k} fails ({out.status}, exit {out.exit_code})"
        if out.stdout.rstrip() != recorded.rstrip():
            return f"sandbox: code block {k} prints {out.stdout.strip()[:80]!r}, the response records " \
                   f"{recorded.strip()[:80]!r}"
        context += out.images
    return None
