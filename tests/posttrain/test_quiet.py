"""A run's output is the toolkit's: the libraries' notices that mean nothing to a user are silenced."""

import logging

from posttrain.quiet import RAY_TOKEN_NOTICE, quiet_libraries


def test_library_notices_are_silenced_and_errors_are_not(monkeypatch):
    from transformers.utils import logging as transformers_logging

    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    monkeypatch.setattr(logging.getLogger(RAY_TOKEN_NOTICE), "level", logging.NOTSET)
    transformers_logging.enable_progress_bar()
    quiet_libraries()
    import os

    assert os.environ["DS_ACCELERATOR"] == "cpu"  # no CUDA here: DeepSpeed's detection would say cpu, with a warning
    assert not transformers_logging.is_progress_bar_enabled()
    notice = logging.getLogger(RAY_TOKEN_NOTICE)
    assert not notice.isEnabledFor(logging.WARNING) and notice.isEnabledFor(logging.ERROR)
    transformers_logging.enable_progress_bar()
