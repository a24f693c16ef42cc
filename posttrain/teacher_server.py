"""Teacher servers for on-policy distillation: a frozen model on its own Ray actors, returning the log-prob of
every given completion token.

`TeacherServer` is the actor's logic (a plain class, testable without Ray): it loads the teacher once, on the GPU
its actor reserved or on its CPUs, and scores (prompt ids, completion ids) pairs in batches. `TeacherReplicas` is
the driver's handle on N of them: a step's pairs are cut into batches of `batch_size` dealt round-robin over the
replicas; a replica that dies is replaced and its batch sent again (once; a second death fails the step).
`same_tokenizer` is the check that a teacher can score the student's tokens at all.

Boundary: token ids in, log-probs out; this module knows nothing of prompts, routing or losses. Departures: text
only (a vision prompt's pixels are not sent, so VL teachers see placeholders; refused, not silently wrong), and
it does not yet share `rewards.model_server.ModelReplicas`'s supervision (deadlines, memory limits, blame): that
pool scores `Sample`s into `RewardResult`s, and serving any function from it is the one-mechanism follow-up.
"""

from __future__ import annotations

from pathlib import Path

import torch

Pair = tuple[list[int], list[int]]  # (prompt ids, completion ids)


class TeacherServer:
    def __init__(self, model_dir: str, temperature: float = 1.0, gpus: float = 0.0):
        from transformers import AutoModelForCausalLM

        import keye_vl  # noqa: F401  (registers the Keye architecture with transformers' Auto classes)

        self.device = "cuda" if gpus > 0 else "cpu"
        if gpus > 0 and not torch.cuda.is_available():
            raise RuntimeError(f"teacher {model_dir}: asked for {gpus} GPUs but torch sees no CUDA device")
        self.model = AutoModelForCausalLM.from_pretrained(model_dir).to(self.device).eval()
        self.temperature = temperature  # the student's logprob temperature: both sides score the same distribution

    def ready(self) -> str:
        return self.device

    def logprobs(self, pairs: list[Pair]) -> list[list[float]]:
        """log p_teacher(completion[t] | prompt, completion[<t]) for every pair, one list per completion."""
        out = []
        with torch.no_grad():
            for prompt, completion in pairs:  # one at a time: no padding question, and teachers are small here
                if not completion:
                    out.append([])
                    continue
                ids = torch.tensor([prompt + completion], device=self.device)
                logits = self.model(input_ids=ids).logits[0, len(prompt) - 1:-1].float() / self.temperature
                target = ids[0, len(prompt):, None]
                out.append(torch.log_softmax(logits, -1).gather(1, target)[:, 0].cpu().tolist())
        return out


class TeacherReplicas:
    """N `TeacherServer` actors for one teacher; `logprobs` fans a step's pairs out over them."""

    def __init__(self, model_dir: str, replicas: int = 1, gpus_per_replica: float = 0.0, cpus_per_replica: float = 1,
                 batch_size: int = 16, temperature: float = 1.0):
        import ray

        self.remote = ray.remote(TeacherServer).options(num_cpus=cpus_per_replica, num_gpus=gpus_per_replica)
        self.args = (model_dir, temperature, gpus_per_replica)
        self.batch_size, self.replaced = batch_size, 0
        self.actors = [self._launch() for _ in range(replicas)]

    def _launch(self):
        import ray

        actor = self.remote.remote(*self.args)
        ray.get(actor.ready.remote())
        return actor

    def logprobs(self, pairs: list[Pair]) -> list[list[float]]:
        import ray
        from ray.exceptions import RayActorError

        batches = [pairs[i:i + self.batch_size] for i in range(0, len(pairs), self.batch_size)]
        refs = [(k % len(self.actors), self.actors[k % len(self.actors)].logprobs.remote(b))
                for k, b in enumerate(batches)]
        out = []
        for (slot, ref), batch in zip(refs, batches):
            try:
                out += ray.get(ref)
            except RayActorError:  # the replica died: replace it and send its batch again, once
                self.replaced += 1
                self.actors[slot] = self._launch()
                out += ray.get(self.actors[slot].logprobs.remote(batch))
        return out

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)


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
