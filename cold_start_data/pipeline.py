"""Filling the mixture: draw tasks, screen them, have a teacher write, verify, keep.

For each batch of offers (a task, the mode wanted, where it goes):
1. screen: reject prompts that match an evaluation prompt (decontamination) or one already kept in the same
   mode (exact text + near-duplicate images);
2. write: the agentic teacher for agentic tasks, the row's own response for user rows that have one, else the
   configured teacher (auto_think first asks the complexity judge);
3. verify with the rewards' checkers (format for the mode + answer); a deliberately flawed response must
   still be well-formed;
4. keep: the record gets the next id, its prompt joins the duplicate index.
This module knows nothing about files, plans or reports.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from cold_start_data.dedup import PromptIndex
from cold_start_data.formatting import assistant_content, prompt_messages
from cold_start_data.judge import Judge
from cold_start_data.mixer import Slot
from cold_start_data.phash import visual_hashes
from cold_start_data.records import BuildStats, Record
from cold_start_data.sources import make_task
from cold_start_data.tasks import Task
from cold_start_data.teachers import AgenticTeacher, Candidate, TeacherResult
from cold_start_data.teachers.agentic import replay_problem
from cold_start_data.verify import verify
from keye_protocol.chat import Mode, parse_response, vision_inputs


class BuildError(RuntimeError):
    pass


@dataclass
class Offer:
    task: Task
    mode: Mode
    bucket: str
    response: str | None = None  # a user row's own response
    where: str | None = None  # a user row's file:line

    @property
    def scope(self) -> str:
        return f"{self.bucket}/{self.mode.value}"


def task_hashes(task: Task) -> tuple[int, ...]:
    images, videos = vision_inputs(task.messages())
    return visual_hashes(images, videos[0]["video"] if videos else None)


class Collector:
    def __init__(self, teacher, agentic: AgenticTeacher, judge: Judge, eval_index: PromptIndex,
                 phash_distance: int = 4, iou_threshold: float = 0.5, progress: Callable[[int], None] | None = None):
        self.teacher, self.agentic, self.judge = teacher, agentic, judge
        self.eval_index, self.seen = eval_index, PromptIndex(phash_distance)
        self.iou_threshold, self.progress = iou_threshold, progress or (lambda n: None)
        self.records: list[Record] = []
        self.stats = BuildStats()

    # ------------------------------------------------------------------------------------------ slots
    def fill(self, slot: Slot, seed: int, batch_size: int, max_attempts: int) -> None:
        """Keep exactly `slot.count` records from `slot.source`, or fail after `max_attempts` tries each."""
        rng = random.Random(f"{seed}:train:{slot.bucket}:{slot.mode}:{slot.source}")
        kept = tried = 0
        while kept < slot.count:
            if tried >= max_attempts * slot.count:
                raise BuildError(self._shortfall(slot, kept, tried))
            n = min(batch_size, slot.count - kept)
            tried += n
            kept += self.offer([Offer(make_task(slot.source, rng), Mode(slot.mode), slot.bucket) for _ in range(n)])

    def _shortfall(self, slot: Slot, kept: int, tried: int) -> str:
        reasons = {c: n for (b, s, c), n in self.stats.rejected.items() if (b, s) == (slot.bucket, slot.source)}
        top = ", ".join(f"{c} ({n})" for c, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:3])
        return (f"{slot.bucket}/{slot.mode}/{slot.source}: only {kept} of {slot.count} samples kept after {tried} "
                f"tasks; main rejections: {top or 'none'}. Raise max_attempts, change the teacher or drop the "
                f"source from sources.{slot.bucket}")

    # ------------------------------------------------------------------------------------------ offers
    def offer(self, offers: list[Offer]) -> int:
        """Screen, write, verify and keep a batch; returns how many were kept."""
        screened = []
        for offer in offers:
            self.stats.attempted[(offer.bucket, offer.task.source)] += 1
            hashes = task_hashes(offer.task)
            if self.eval_index.contains(offer.task.prompt, hashes):
                self.stats.reject(offer.bucket, offer.task.source, "contaminated: matches an evaluation prompt",
                                  offer.where)
            elif self.seen.contains(offer.task.prompt, hashes, offer.scope):
                self.stats.reject(offer.bucket, offer.task.source, "duplicate: prompt already in this mode",
                                  offer.where)
            else:
                screened.append((offer, hashes))
        results = self._write([o for o, _ in screened])
        kept = 0
        for (offer, hashes), result in zip(screened, results):
            kept += self._keep(offer, hashes, result)
        self.progress(kept)
        return kept

    def _write(self, offers: list[Offer]) -> list[TeacherResult]:
        results: list[TeacherResult | None] = [None] * len(offers)
        routes: dict[str, list[int]] = {"agentic": [], "given": [], "teacher": []}
        for i, offer in enumerate(offers):
            if offer.response is not None:
                routes["given"].append(i)
            elif offer.mode is Mode.AGENTIC:
                routes["agentic"].append(i)
            elif offer.where is not None and offer.mode is not Mode.NO_THINK and self.teacher.name == "solver":
                results[i] = TeacherResult(None, "no response: the row has no assistant turn and the solver "
                                                 "teacher has no reasoning for user rows (use a model teacher)")
            else:
                routes["teacher"].append(i)
        for i in routes["given"]:
            results[i] = self._given(offers[i])
        for route, teacher in (("agentic", self.agentic), ("teacher", self.teacher)):
            if routes[route]:
                batch = [offers[i] for i in routes[route]]
                items = [(o.task, o.mode, j) for o, j in zip(batch, self._judge(batch))]
                for i, result in zip(routes[route], teacher.write(items)):
                    results[i] = result
        return results  # type: ignore[return-value]

    def _judge(self, offers: list[Offer]):
        auto = [i for i, o in enumerate(offers) if o.mode is Mode.AUTO_THINK]
        verdicts = [None] * len(offers)
        for i, judgement in zip(auto, self.judge.judge([offers[i].task for i in auto]) if auto else []):
            verdicts[i] = judgement
        return verdicts

    def _given(self, offer: Offer) -> TeacherResult:
        if offer.mode is Mode.AGENTIC:
            problem = replay_problem(offer.response, offer.task.images, self.agentic.run_tool)
            if problem:
                return TeacherResult(None, problem)
        return TeacherResult(Candidate(offer.response, "user"))

    def _keep(self, offer: Offer, hashes: tuple[int, ...], result: TeacherResult) -> int:
        task, source = offer.task, offer.task.source
        self.stats.sampled[source] += result.sampled
        self.stats.verified_paths[source] += result.verified
        candidate = result.candidate
        if candidate is None:
            self.stats.reject(offer.bucket, source, result.reason, offer.where)
            return 0
        messages = prompt_messages(task, offer.mode)
        verdict = verify(candidate.response, offer.mode, task.kind, task.answer, messages, self.iou_threshold)
        problem = "; ".join(verdict.format_problems) if candidate.flawed else verdict.reason
        if problem:
            self.stats.reject(offer.bucket, source, problem if ":" in problem else f"{problem}: {candidate.teacher}",
                              offer.where)
            return 0
        if self.seen.contains(task.prompt, hashes, offer.scope):  # twin drawn in the same batch
            self.stats.reject(offer.bucket, source, "duplicate: prompt already in this mode", offer.where)
            return 0
        self.seen.add(task.prompt, hashes, offer.scope)
        assistant = {"role": "assistant", "content": assistant_content(candidate.response, candidate.sandbox_images)}
        self.records.append(Record(
            f"cs-{len(self.records):06d}", offer.bucket, offer.mode.value, source, candidate.teacher,
            messages + [assistant], candidate.response, task.answer, task.kind, verdict.correct, candidate.flawed,
            parse_response(candidate.response).reasoned))
        self.stats.kept[(offer.bucket, offer.mode.value, source)] += 1
        self.stats.flawed[source] += int(candidate.flawed)
        return 1
