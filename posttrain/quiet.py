"""Library messages that mean nothing to someone running a recipe, silenced before the libraries print them.

- DeepSpeed warns "Setting accelerator to CPU. If you have GPU ..." the first time anything imports it
  (transformers does, for its model loading) on a machine without CUDA; naming the CPU accelerator, which its own
  detection picks there anyway, skips the warning. With CUDA nothing is set: DeepSpeed finds it.
- transformers draws a "Loading weights" / "Writing model shards" bar per model file on every load and save.
- Ray warns that token authentication is on, on every local start; it stays on (a loopback cluster with a token).
Errors and the toolkit's own output are untouched.
"""

from __future__ import annotations

import logging
import os

RAY_TOKEN_NOTICE = "ray._private.authentication.authentication_token_setup"


def quiet_libraries() -> None:
    import torch
    from transformers.utils import logging as transformers_logging

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    transformers_logging.disable_progress_bar()
    logging.getLogger(RAY_TOKEN_NOTICE).setLevel(logging.ERROR)
