"""The RL stage (GRPO family): the loop (`loop.py`, its narrated step) and the helpers only it uses, beside it:
the group filter (`groups.py`), the curriculum (`curriculum.py`), scored rollouts to a train batch (`batch.py`)
and the weight sync from the learners to the rollout workers (`weight_sync.py`).

Prompts (`posttrain.prompts`) stay outside: evaluation, rejection sampling and `posttrain generate` read them too.
"""

from posttrain.stages.rl.batch import rl_batch
from posttrain.stages.rl.groups import Groups, is_scored
from posttrain.stages.rl.loop import AdvantageResult, RlLoop, Submitted, run_rl, timed

__all__ = ["AdvantageResult", "Groups", "RlLoop", "Submitted", "is_scored", "rl_batch", "run_rl", "timed"]
