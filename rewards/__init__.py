"""Rewards: the plug-in API, built-in rewards, the worker pool and the code sandbox.

Public entry: `load_reward(spec)` turns a registered name, ``module.path:func`` or ``path/to/file.py:func``
(or ``{spec: weight}``) into a callable `reward(samples) -> list[raw value]`; `@reward("name")` registers a
function. This package knows Keye's chat protocol and grounding format (`keye_protocol`, no torch), and
nothing about training.
"""

from rewards.registry import RewardSpecError, load_reward, registered, reward, validate_reward
from rewards.result import RewardResult
from rewards.sample import Sample

__all__ = ["RewardResult", "RewardSpecError", "Sample", "load_reward", "registered", "reward", "validate_reward"]
