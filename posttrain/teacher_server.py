"""Teacher servers for on-policy distillation: a frozen model on its own Ray actors, returning the log-prob of
every given completion token.

`TeacherServer` is the actor's logic (a plain class, testable without Ray): it loads the teacher once, on the GPU
its actor reserved or on its CPUs, and scores (prompt ids, completion ids) pairs in batches. `TeacherReplicas` is
the driver's handle on N of them, supervised as reward-model servers are (`runtime.supervised`): a step's pairs are
cut into batches of `batch_size`, each taken by whichever replica is free; a replica that dies, or gives no answer
within `timeout_s`, is replaced and its batch sent again, once. A second failure of one batch, or
`max_replacements` replacements in one step, fails the step with an error saying which. `same_tokenizer` is the
check that a teacher can score the student's tokens at all.

Boundary: token ids in, log-probs out; this module knows nothing of prompts, routing or losses. Departure: text
only (a vision prompt's pixels are not sent, so VL teachers see placeholders; refused, not silently wrong).
"""

from __future__ import annotations

import math
from collections import deque
from pathlib import Path

import torch

from runtime.devices import torch_device
from runtime.supervised import Outcome, Supervised, error_line

Pair = tuple[list[int], list[int]]  # (prompt ids, completion ids)


class TeacherServer:
    def __init__(self, model_dir: str, temperature: float = 1.0, gpus: float = 0.0, cpus: float | None = None):
        """`cpus`: the actor's Ray CPUs, its torch threads (rounded up); None (not an actor): threads as they are."""
        from transformers import AutoModelForCausalLM

        import keye_vl  # noqa: F401  (registers the Keye architecture with transformers' Auto classes)

        self.device = torch_device(gpus, f"teacher {model_dir}")
        if cpus is not None:
            torch.set_num_threads(max(1, math.ceil(cpus)))
        self.model = AutoModelForCausalLM.from_pretrained(model_dir).to(self.device).eval()
        self.temperature = temperature  # the student's logprob temperature: both sides score the same distribution

    def ready(self) -> str:
        return self.device

    def logprobs(self, pairs: list[Pair]) -> list[list[float]]:
        """log p_teacher(completion[t] | prompt, completion[<t]) for every pair, one list per completion: one
        forward for the batch, right-padded (a causal model's real tokens never see the padding after them)."""
        if not pairs:
            return []
        rows = [prompt + completion for prompt, completion in pairs]
        ids = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for b, row in enumerate(rows):
            ids[b, :len(row)], mask[b, :len(row)] = torch.tensor(row), 1
        with torch.no_grad():
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
        logprobs = torch.log_softmax(logits.float() / self.temperature, -1).cpu()
        out = []
        for b, (prompt, completion) in enumerate(pairs):
            at = torch.arange(len(prompt) - 1, len(prompt) + len(completion) - 1)
            out.append(logprobs[b, at, torch.tensor(completion, dtype=torch.long)].tolist())
        return out


class TeacherReplicas:
    """N supervised `TeacherServer` actors for one teacher; `logprobs` fans a step's pairs out over them."""

    def __init__(self, model_dir: str, replicas: int = 1, gpus_per_replica: float = 0.0, cpus_per_replica: float = 1,
                 batch_size: int = 16, temperature: float = 1.0, timeout_s: float = 600.0,
                 startup_timeout_s: float = 600.0, max_replacements: int = 4):
        import ray

        remote = ray.remote(TeacherServer).options(num_cpus=cpus_per_replica, num_gpus=gpus_per_replica,
                                                   max_restarts=0)
        self.model_dir, self.batch_size, self.timeout_s = model_dir, batch_size, timeout_s
        try:
            self.actors = Supervised(remote, (model_dir, temperature, gpus_per_replica, cpus_per_replica), replicas,
                                     startup_timeout_s=startup_timeout_s, max_replacements=max_replacements)
        except Exception as error:
            raise RuntimeError(f"teacher {model_dir} failed to start: {error_line(error, -1)}") from error

    def logprobs(self, pairs: list[Pair]) -> list[list[float]]:
        batches = [pairs[i:i + self.batch_size] for i in range(0, len(pairs), self.batch_size)]
        answers, queue, resent = [None] * len(batches), deque(range(len(batches))), set()
        self.actors.new_round()
        while queue or self.actors.busy():
            if self.actors.exhausted:
                raise RuntimeError(f"teacher {self.model_dir}: {self.actors.strikes} replicas were replaced in this "
                                   f"step (max_replacements); it keeps dying, hanging or failing to start")
            for slot in self.actors.free()[:len(queue)]:
                k = queue.popleft()
                self.actors.send(slot, k, self.timeout_s, lambda actor: actor.logprobs.remote(batches[k]))
            for outcome in self.actors.wait():
                k = outcome.item
                if outcome.kind == "answered":
                    answers[k] = outcome.reply
                elif outcome.kind == "failed" or k in resent:
                    raise RuntimeError(self._failure(outcome)) from outcome.error
                else:  # its replica died or hung, and was replaced: send it again, once
                    resent.add(k)
                    queue.appendleft(k)
        return [lp for answer in answers for lp in answer]

    def _failure(self, outcome: Outcome) -> str:
        what = {"failed": f"failed ({error_line(outcome.error)})", "died": "died, the second time for this batch",
                "hung": f"gave no answer within {self.timeout_s:g}s, the second time for this batch"}[outcome.kind]
        return f"teacher {self.model_dir}: a replica scoring a batch {what}"

    def close(self) -> None:
        self.actors.close()


def same_tokenizer(student, teacher_dir: str | Path) -> str | None:
    """None when the teacher's tokenizer files give the student's vocabulary and special tokens; else what differs.
    `student` is a tokenizer or a directory holding one."""
    from transformers import AutoTokenizer

    if isinstance(student, (str, Path)):
        student = AutoTokenizer.from_pretrained(str(student))
    teacher = AutoTokenizer.from_pretrained(str(teacher_dir))
    ours, theirs = student.get_vocab(), teacher.get_vocab()
    if ours != theirs:
        differ = sorted(set(ours.items()) ^ set(theirs.items()), key=lambda kv: kv[1])[:3]
        return (f"its vocabulary differs from the student's ({len(theirs)} vs {len(ours)} tokens; e.g. "
                f"{[k for k, _ in differ]})")
    specials = [(name, getattr(student, name, None), getattr(teacher, name, None))
                for name in ("eos_token", "pad_token", "bos_token", "unk_token")]
    specials = [s for s in specials if s[1] != s[2]]
    if specials or student.all_special_tokens != teacher.all_special_tokens:
        return f"its special tokens differ from the student's ({specials or 'additional special tokens'})"
    return None
