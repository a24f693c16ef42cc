"""Which groups of a step train: the baseline needs two scored samples per group; DAPO's dynamic sampling drops
groups with no spread. Knows nothing about generation, scoring or the learners: it sorts results it is given."""

from __future__ import annotations


def is_scored(result) -> bool:
    """The sample trains on its reward: it has a total and was not skipped (`on_error: skip`, not applicable)."""
    return result.total is not None and not result.skipped


class Groups:
    """The groups a step trains on, in order. A group needs two scored samples for a baseline: with fewer it is
    counted (`rl/groups_unscored`) and carries no loss (advantage 0, unscored rows masked); with `drop_constant`
    (DAPO's dynamic sampling, which refills) it is dropped, as is a group whose scored rewards are all equal
    (`rl/zero_variance_fraction`, of the groups seen). Without it nothing is dropped: the batch keeps the size the
    learners were sized for (a multiple of their number)."""

    def __init__(self, group_size: int, drop_constant: bool):
        self.g, self.drop_constant = group_size, drop_constant
        self.rows, self.completions, self.results = [], [], []
        self.seen = self.unscored = self.constant = 0

    def add(self, rows, completions, results) -> None:
        g = self.g
        for k, row in enumerate(rows):
            group = results[k * g:(k + 1) * g]
            values = [r.total for r in group if is_scored(r)]
            self.seen += 1
            if len(values) < 2:
                self.unscored += 1
                if self.drop_constant:
                    continue
            elif self.drop_constant and len(set(values)) < 2:
                self.constant += 1
                continue
            self.rows.append(row)
            self.completions.extend(completions[k * g:(k + 1) * g])
            self.results.extend(group)

    def first(self, count: int) -> tuple[list, list, list]:
        """The first `count` kept groups: rows, completions, results."""
        n = min(count, len(self.rows)) * self.g
        return self.rows[:count], self.completions[:n], self.results[:n]

    def metrics(self) -> dict[str, float]:
        return {"rl/groups_unscored": self.unscored, "rl/zero_variance_fraction": self.constant / max(1, self.seen)}
