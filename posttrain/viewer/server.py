"""`posttrain traces serve`: a small local HTTP server for the viewer page and its JSON API.

Bound to 127.0.0.1 only (traces hold prompts and model output; they are not for the network), read-only, and
stdlib-only (`http.server`). Requests whose ``Host`` header is not a loopback name (localhost, 127.0.0.1, [::1],
with any port) are refused with 421, so a web page that rebinds its own DNS name to 127.0.0.1 cannot read
the traces through the visitor's browser. JSON replies are strict (a trace's Infinity/NaN become strings) and
bounded (text clipped by `records.view_records`; a bad trace line is skipped with a note in /api/run). Every reply
carries a Content-Security-Policy: the page's own (its inline script by hash), `STRICT_POLICY` for the rest, so a
file under /files that a browser renders can run nothing. Endpoints, all GET:

    /                   the page (static/index.html, live mode)
    /api/run            stages with sample counts, step ranges, modes, torn/bad lines and a note on lines left out
    /api/samples        a filtered page: TraceFilter fields as query parameters, plus offset and limit
    /api/group          stage, step, group: the G samples of one prompt at one step
    /api/prompt         prompt_id (and stage): one prompt's samples across steps
    /files/STAGE/PATH   a trace image from inside that stage's directory (anything but an image or plain text
                        comes as a download, never rendered as a page)

Knows nothing about rendering: the page draws whatever the API returns.
"""

from __future__ import annotations

import mimetypes
import os
import shutil
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

from posttrain.viewer import page
from posttrain.viewer.filters import TraceFilter
from posttrain.viewer.records import view_records
from posttrain.viewer.run import RunTraces

HOST = "127.0.0.1"
MAX_LIMIT = 500
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
# replies other than the page load nothing, run nothing, and cannot be framed or reach this origin's storage
STRICT_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'; sandbox"
# what /files lets a browser show inline; anything else (.html, .svg, .js) is sent as an attachment
INLINE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "text/plain")


def loopback_host(header: str | None) -> bool:
    """Whether a Host header names this machine's loopback (with or without a port).

    >>> [loopback_host(h) for h in ("127.0.0.1:8765", "localhost", "[::1]:80", "evil.example:8765", None)]
    [True, True, True, False, False]
    """
    if not header:
        return False
    name = header.strip().lower()
    if name.startswith("["):
        name = name[:name.find("]") + 1]
    else:
        name = name.rsplit(":", 1)[0] if name.count(":") == 1 else name
    return name in LOOPBACK_NAMES


def image_url(stage: str, relative: str) -> str:
    return f"/files/{quote(stage)}/{quote(relative)}"


def views(rows) -> list[dict]:
    return view_records(rows, image_url)


class ViewerHandler(BaseHTTPRequestHandler):
    run: RunTraces  # set on the subclass that `make_server` builds
    quiet = True

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if not loopback_host(self.headers.get("Host")):
            self._json(HTTPStatus.MISDIRECTED_REQUEST, {"error": "this viewer answers only requests for localhost "
                                                                 "or 127.0.0.1"})
            return
        url = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            if url.path in ("/", "/index.html"):
                html, policy = page.live_page(title=f"traces · {self.run.name}")
                self._send(HTTPStatus.OK, html.encode(), "text/html", policy=policy)
            elif url.path.startswith("/api/"):
                self._json(HTTPStatus.OK, self._api(url.path[len("/api/"):], params))
            elif url.path.startswith("/files/"):
                self._file(unquote(url.path[len("/files/"):]))
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page {url.path}"})
        except ValueError as error:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(error)})
        except Exception as error:  # noqa: BLE001  a bug answers 500 with its name, never a dropped connection
            if not self.quiet:
                traceback.print_exc()
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(error).__name__}: {error}"})

    def _api(self, endpoint: str, params: dict) -> dict:
        if endpoint == "run":
            return self.run.overview()
        if endpoint == "samples":
            offset, limit = int(params.get("offset", 0)), min(int(params.get("limit", 50)), MAX_LIMIT)
            total, rows = self.run.query(TraceFilter.from_mapping(params), offset, limit)
            return {"total": total, "offset": offset, "samples": views(rows)}
        if endpoint == "group":
            rows = self.run.group(_required(params, "stage"), int(_required(params, "step")),
                                  int(_required(params, "group")))
            return {"total": len(rows), "samples": views(rows)}
        if endpoint == "prompt":
            total, rows = self.run.prompt_history(_required(params, "prompt_id"), params.get("stage") or None)
            return {"total": total, "samples": views(rows)}
        raise ValueError(f"unknown endpoint /api/{endpoint}")

    def _file(self, path: str) -> None:
        stage, _, relative = path.partition("/")
        found = self.run.image_path(stage, relative)
        if found is None:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no image {path}"})
            return
        kind = mimetypes.guess_type(found.name)[0]
        download = kind not in INLINE_TYPES
        with open(found, "rb") as source:  # streamed: a large file is never held whole
            self._head(HTTPStatus.OK, "application/octet-stream" if download else kind,
                       os.fstat(source.fileno()).st_size, attachment=found.name if download else None)
            shutil.copyfileobj(source, self.wfile)

    def _json(self, status: HTTPStatus, body: dict) -> None:
        self._send(status, page.browser_json(body).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, kind: str, policy: str = STRICT_POLICY) -> None:
        self._head(status, kind, len(body), policy=policy)
        self.wfile.write(body)

    def _head(self, status: HTTPStatus, kind: str, length: int, policy: str = STRICT_POLICY,
              attachment: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", f"{kind}; charset=utf-8" if kind.startswith(("text/", "application/json"))
                         else kind)
        self.send_header("Content-Length", str(length))
        self.send_header("Content-Security-Policy", policy)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-store")
        if attachment is not None:
            self.send_header("Content-Disposition", f"attachment; filename*=UTF-8''{quote(attachment)}")
        self.end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's signature)
        if not self.quiet:
            super().log_message(format, *args)


def _required(params: dict, name: str) -> str:
    if not params.get(name):
        raise ValueError(f"missing query parameter {name!r}")
    return params[name]


def make_server(run: RunTraces, port: int = 0, quiet: bool = True) -> ThreadingHTTPServer:
    """A server on 127.0.0.1:`port` (0 picks a free port: read `server.server_address`)."""
    handler = type("BoundViewerHandler", (ViewerHandler,), {"run": run, "quiet": quiet})
    server = ThreadingHTTPServer((HOST, port), handler)
    server.daemon_threads = True
    return server
