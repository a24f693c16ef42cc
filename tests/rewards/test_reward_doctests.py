"""Every built-in reward carries a doctest (STYLE.md rule 6); run them all."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["rewards.math_answer", "rewards.grounding", "rewards.counting", "rewards.choice", "rewards.format",
           "rewards.repetition", "rewards.overlong", "rewards.reward_model", "rewards.judge", "rewards.combine",
           "rewards.result", "rewards.registry", "rewards.sandbox", "rewards.served", "rewards.adapters",
           "rewards.model_server"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = importlib.import_module(name)
    failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert tried > 0, f"{name} has no doctest"
    assert failures == 0
