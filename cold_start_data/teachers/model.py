"""The model teacher: rejection sampling of reasoning paths through a rollout engine.

For each task the engine samples `samples` responses in the generation mode (think, or no_think; auto_think
samples think when the judge calls the task complex and no_think when it does not, then wraps the kept path
in the judge's analysis). Each path is checked with the rewards' verifiers (`cold_start_data.verify`); only
verified paths survive. With `step_frequency`, the kept path is the one whose reasoning steps recur most
across the verified paths (steps many independent paths agree on are less likely to be lucky guesses), else
the first verified one. Departure from the paper: its checker also judges the steps; here only the
answer and format are checked, step frequency being the cheap proxy.

The engine is anything with `generate(requests, sampling) -> list[Completion]` (`rollout.hf_engine`'s
`TransformersEngine`, the vLLM engine, or a stub in tests), loaded by the caller
(`posttrain.stages.cold_start.teacher_engine`); this module knows nothing about models.
"""

from __future__ import annotations

from collections import Counter

from cold_start_data.formatting import analysis_text
from cold_start_data.judge import Judgement
from cold_start_data.tasks import Task
from cold_start_data.teachers.base import Candidate, TeacherResult
from cold_start_data.verify import verify
from keye_protocol.chat import Mode, format_response, parse_mode, parse_response


def reasoning_steps(response: str) -> list[str]:
    """The normalised non-empty lines of a response's reasoning (its "steps")."""
    think = parse_response(response).think or ""
    return [" ".join(line.split()).casefold() for line in think.splitlines() if line.strip()]


def most_agreed(paths: list[str]) -> int:
    """Index of the path whose steps are shared by the most paths on average (first on ties).

    >>> most_agreed(["<think>a\\nb</think>", "<think>a\\nc</think>", "<think>a\\nb</think>"])
    0
    """
    counts = Counter(step for path in paths for step in set(reasoning_steps(path)))

    def score(path: str) -> float:
        steps = reasoning_steps(path)
        return sum(counts[s] for s in steps) / len(steps) if steps else 0.0

    scores = [score(p) for p in paths]
    return scores.index(max(scores))


class ModelTeacher:
    name = "model"

    def __init__(self, engine, samples: int = 4, temperature: float = 0.6, top_p: float = 0.95, top_k: int = 20,
                 max_tokens: int = 256, step_frequency: bool = False, seed: int = 0, iou_threshold: float = 0.5):
        self.engine, self.samples, self.step_frequency = engine, samples, step_frequency
        self.sampling = dict(temperature=temperature, top_p=top_p, top_k=top_k, max_tokens=max_tokens)
        self.seed, self.calls, self.iou_threshold = seed, 0, iou_threshold

    def sample(self, tasks: list[Task], mode: Mode, n: int) -> list[list[str]]:
        """`n` response texts per task (failed generations come back as empty strings)."""
        from rollout.types import GenerationRequest, SamplingParams

        self.calls += 1  # a fresh, reproducible seed per call
        requests = [GenerationRequest(f"task-{i}", task.messages(), mode.value) for i, task in enumerate(tasks)]
        sampling = SamplingParams(n=n, seed=self.seed * 100003 + self.calls, **self.sampling)
        completions = self.engine.generate(requests, sampling)
        texts = [c.text if c.finish_reason != "error" else "" for c in completions]
        return [texts[i * n:(i + 1) * n] for i in range(len(tasks))]

    def _verified(self, task: Task, mode: Mode, paths: list[str]) -> list[str]:
        return [p for p in paths if p and verify(p, mode, task.kind, task.answer, task.messages(),
                                                  self.iou_threshold).ok]

    def pass_rates(self, tasks: list[Task], mode: str = "no_think", n: int = 4) -> list[float]:
        mode = parse_mode(mode)
        return [len(self._verified(t, mode, paths)) / n for t, paths in zip(tasks, self.sample(tasks, mode, n))]

    def write(self, items: list[tuple[Task, Mode, Judgement | None]]) -> list[TeacherResult]:
        results: list[TeacherResult | None] = [None] * len(items)
        by_mode: dict[Mode, list[int]] = {}
        for i, (_, mode, judgement) in enumerate(items):
            if mode is Mode.AGENTIC:
                results[i] = TeacherResult(None, "the model teacher does not write agentic samples", sampled=0)
                continue
            by_mode.setdefault(self._generation_mode(mode, judgement), []).append(i)
        for gen_mode, indices in by_mode.items():
            all_paths = self.sample([items[i][0] for i in indices], gen_mode, self.samples)
            for i, paths in zip(indices, all_paths):
                results[i] = self._keep(items[i], gen_mode, paths)
        return results  # type: ignore[return-value]

    @staticmethod
    def _generation_mode(mode: Mode, judgement: Judgement | None) -> Mode:
        if mode is not Mode.AUTO_THINK:
            return mode
        if judgement is None:
            raise ValueError("auto_think needs the complexity judge's verdict")
        return Mode.THINK if judgement.complex else Mode.NO_THINK

    def _keep(self, item: tuple[Task, Mode, Judgement | None], gen_mode: Mode, paths: list[str]) -> TeacherResult:
        task, mode, judgement = item
        good = self._verified(task, gen_mode, paths)
        if not good:
            return TeacherResult(None, f"no verified path among {len(paths)}", sampled=len(paths))
        chosen = good[most_agreed(good)] if self.step_frequency else good[0]
        if mode is Mode.AUTO_THINK:
            parsed = parse_response(chosen)
            answer = (parsed.answer or "").strip()
            chosen = format_response(mode, answer, think=parsed.think if judgement.complex else None,
                                     analysis=analysis_text(judgement.complex, judgement.reason))
        return TeacherResult(Candidate(chosen, self.name), sampled=len(paths), verified=len(good))
