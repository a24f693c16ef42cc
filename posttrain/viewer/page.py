"""The single-page viewer (`static/index.html`) filled in for one use: served live (it fetches `/api/...`) or
exported (the samples ride inside the page as JSON and the same script filters them offline).

Two defences against model text running as code: the page only ever inserts text with `textContent`, and a
Content-Security-Policy allows exactly the page's own inline script (by hash), so even an escaping bug could
not run a `<script>` from a completion. Knows nothing about where the samples come from.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from importlib import resources

_SCRIPT_RE = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def template() -> str:
    return resources.files("posttrain.viewer").joinpath("static/index.html").read_text(encoding="utf-8")


def finite(value):
    """`value` with every non-finite float as the string "Infinity", "-Infinity" or "NaN": trace records may
    hold them (Python writes them into JSON), but a browser's JSON.parse rejects the whole reply.

    >>> finite({"reward": float("inf"), "parts": [float("nan"), 1.0]})
    {'reward': 'Infinity', 'parts': ['NaN', 1.0]}
    """
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def browser_json(value) -> str:
    """Strict JSON (no NaN/Infinity literals) that any browser parses."""
    return json.dumps(finite(value), ensure_ascii=False, allow_nan=False)


def embed_json(value) -> str:
    """JSON safe inside a `<script type="application/json">`: no `<`, `>` or `&` can end the element.

    >>> embed_json({"completion": "</script><script>alert(1)</script>"})
    '{"completion": "\\\\u003c/script\\\\u003e\\\\u003cscript\\\\u003ealert(1)\\\\u003c/script\\\\u003e"}'
    """
    text = browser_json(value)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def content_security_policy(html: str, live: bool) -> str:
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
                      for s in _SCRIPT_RE.findall(html))
    connect = "'self'" if live else "'none'"
    return (f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; img-src 'self' data:; "
            f"connect-src {connect}; base-uri 'none'; form-action 'none'")


def live_page(title: str) -> tuple[str, str]:
    """The live page and its policy for the server to send as a header too: a header also covers what a <meta>
    policy cannot (frame-ancestors: no other site may frame the viewer)."""
    html = render(title=title)
    return html, content_security_policy(html, live=True) + "; frame-ancestors 'none'"


def render(data=None, title: str = "traces") -> str:
    """The page; `data` (run overview and view records) makes it an offline page, None a live one."""
    html = template()
    html = html.replace("__TITLE__", _escape_attr(title))
    html = html.replace("__DATA__", "null" if data is None else embed_json(data))
    return html.replace("__CSP__", content_security_policy(html, live=data is None))


def _escape_attr(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;"))
