"""The package's doctests (pytest collects doctests from `tests/` and `keye_vl/` only)."""

import doctest
import importlib
import pkgutil

import pytest

import cold_start_data

MODULES = sorted(m.name for m in pkgutil.walk_packages(cold_start_data.__path__, "cold_start_data."))


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
