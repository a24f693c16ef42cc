"""Data hygiene for pre-training shards: near-duplicate images removed, evaluation sets kept out of training.

As the paper does it: a 64-bit pHash per image (`imagehash`), MinHash over those hashes (128 permutations) and
LSH to find candidate pairs with Jaccard > 0.95 (`datasketch`). A row's tokens are (image slot, bit, value) for
each of its images' hash bits (a video's first, middle and last frames), so two one-image rows whose hashes
differ in d bits have Jaccard (64 - d) / (64 + d): 0.95 admits d <= 1. The LSH banding is chosen so a pair at the
threshold becomes a candidate with probability >= 99% (`choose_bands`), and every candidate is confirmed with
its exact Jaccard, so LSH's false positives never remove a row. Duplicates count within a task (the same picture
asked two different questions is two examples); contamination counts across all tasks: a training row showing a
near-duplicate of any evaluation image is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import imagehash
from datasketch import MinHash, MinHashLSH
from PIL import Image

from pretrain_data.shards import image_paths

THRESHOLD = 0.95
NUM_PERM = 128


def choose_bands(threshold: float = THRESHOLD, num_perm: int = NUM_PERM, recall: float = 0.99) -> tuple[int, int]:
    """(bands, rows per band) with bands x rows <= num_perm: the most rows per band (fewest false candidates)
    such that a pair at `threshold` is a candidate with probability >= `recall`.

    >>> choose_bands()
    (8, 16)
    >>> b, r = choose_bands(); round(1 - (1 - THRESHOLD ** r) ** b, 3)
    0.99
    """
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if 1 - (1 - threshold**rows) ** bands >= recall:
            return bands, rows
    raise ValueError(f"no banding of {num_perm} permutations reaches recall {recall} at Jaccard {threshold}")


def candidate_recall(jaccard: float, bands: int, rows: int) -> float:
    """Probability that LSH with this banding proposes a pair of this Jaccard similarity."""
    return 1 - (1 - jaccard**rows) ** bands


def key_frames(paths: list[str], row: dict) -> list[str]:
    """A video's first, middle and last frames stand for it; images count one by one."""
    videos = [item["video"] for m in row["messages"] if isinstance(m["content"], list)
              for item in m["content"] if item.get("type") == "video"]
    frames = {f for video in videos for f in video}
    keys = {f for video in videos for f in (video[0], video[len(video) // 2], video[-1])}
    return [p for p in paths if p not in frames or p in keys]


def row_tokens(row: dict, hash_of) -> frozenset[str]:
    tokens = set()
    for slot, path in enumerate(key_frames(image_paths(row), row)):
        bits = hash_of(path).hash.flatten()
        tokens.update(f"{slot}:{i}:{int(b)}" for i, b in enumerate(bits))
    return frozenset(tokens)


def jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


@dataclass
class HygieneReport:
    threshold: float
    bands: int
    rows_per_band: int
    recall_at_threshold: float
    per_task: dict[str, dict[str, int]] = field(default_factory=dict)
    examples: list[dict] = field(default_factory=list)  # a few removed pairs, for the report

    def count(self, task: str, what: str) -> None:
        counts = self.per_task.setdefault(task, {"drawn": 0, "duplicate": 0, "contaminated": 0, "kept": 0})
        counts[what] += 1


class Hygiene:
    """Filters training rows against each other (per task) and against evaluation rows (all tasks)."""

    def __init__(self, threshold: float = THRESHOLD, num_perm: int = NUM_PERM):
        self.threshold, self.num_perm = threshold, num_perm
        self.bands, self.rows = choose_bands(threshold, num_perm)
        self._hashes: dict[str, imagehash.ImageHash] = {}
        self.report = HygieneReport(threshold, self.bands, self.rows,
                                    candidate_recall(threshold, self.bands, self.rows))

    def hash_of(self, path: str) -> imagehash.ImageHash:
        if path not in self._hashes:
            with Image.open(path) as image:
                self._hashes[path] = imagehash.phash(image)
        return self._hashes[path]

    def _index(self) -> MinHashLSH:
        return MinHashLSH(threshold=self.threshold, num_perm=self.num_perm, params=(self.bands, self.rows))

    def _minhash(self, tokens: frozenset[str]) -> MinHash:
        m = MinHash(num_perm=self.num_perm, seed=1)
        m.update_batch([t.encode() for t in tokens])
        return m

    def clean(self, train: list[dict], evaluation: list[dict]) -> list[dict]:
        """The training rows to keep, in order: first of each near-duplicate group, none near an eval image."""
        eval_index, eval_tokens = self._index(), {}
        for i, row in enumerate(evaluation):
            tokens = row_tokens(row, self.hash_of)
            if tokens:
                eval_tokens[f"e{i}"] = tokens
                eval_index.insert(f"e{i}", self._minhash(tokens))
        seen: dict[str, tuple[MinHashLSH, dict]] = {}
        kept = []
        for i, row in enumerate(train):
            task = row["task"]
            self.report.count(task, "drawn")
            tokens = row_tokens(row, self.hash_of)
            if not tokens:  # text-only rows have no image to compare
                kept.append(row)
                self.report.count(task, "kept")
                continue
            signature = self._minhash(tokens)
            if self._confirmed(eval_index, eval_tokens, signature, tokens):
                self._note(task, "contaminated", row)
                continue
            index, members = seen.setdefault(task, (self._index(), {}))
            if self._confirmed(index, members, signature, tokens):
                self._note(task, "duplicate", row)
                continue
            index.insert(f"t{i}", signature)
            members[f"t{i}"] = tokens
            kept.append(row)
            self.report.count(task, "kept")
        return kept

    def _confirmed(self, index: MinHashLSH, members: dict, signature: MinHash, tokens: frozenset) -> bool:
        return any(jaccard(tokens, members[key]) > self.threshold for key in index.query(signature))

    def _note(self, task: str, what: str, row: dict) -> None:
        self.report.count(task, what)
        if len(self.report.examples) < 20:
            self.report.examples.append({"task": task, "why": what, "id": row.get("id")})
