"""One small mixture, built once for the build tests (agentic samples run in the real sandbox)."""

import pytest

from cold_start_data.build import build
from cold_start_data.config import BuildConfig

SMALL = dict(size=40, seed=7, eval_size=2)


@pytest.fixture(scope="session")
def small():
    """The settings of the `built` mixture (a copy: tests may extend it)."""
    return dict(SMALL)


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("mixture")
    report = build(BuildConfig(**SMALL), out)
    return out, report
