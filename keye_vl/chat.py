"""Moved to `keye_protocol.chat` (torch-free, so reward workers need not import the model). This alias remains
only for `posttrain/stages/evaluate.py`, which still imports it; it goes once that import is updated."""

import sys

from keye_protocol import chat

sys.modules[__name__] = chat
