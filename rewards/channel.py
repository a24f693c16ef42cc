"""Framed messages between `RewardProcess` and its child, so that a reward's own writes never pass for a reply.

The reward runs in the child, in the process that holds the channel's end: it can always find the socket (in
``/proc/self/fd``) and write into it. So each request carries a fresh random 16-byte id and the reply must echo
it in its header. A reply with another id, a body over ``MAX_REPLY_BYTES``, one cut short, one that does not
unpickle, or bytes beyond the reply is a `ChannelError`: the parent marks the call ``channel`` and replaces the
process, so no later sample is ever paired with a stale or forged reply. A reward that digs the id out of its
caller's frames can forge its own sample's reply (which gains it nothing over returning that value); its real
reply then arrives as bytes beyond the forged one and the process is replaced before the next call.

Departure from ``multiprocessing.connection``: a reply is read within a deadline, so a forged header that
announces a gigabyte cannot leave the parent blocked in ``recv``. This module knows nothing about rewards: it
moves pickles.
"""

from __future__ import annotations

import os
import pickle
import select
import socket
import struct
import time

HEADER = struct.Struct("!16sQ")  # request id, body length
MAX_REPLY_BYTES = 256 * 2**20  # a call's results are small; a forged length must not make the parent allocate


class ChannelError(RuntimeError):
    """The bytes on the channel are not the reply to this request: something else wrote into it."""


def new_id() -> bytes:
    return os.urandom(16)


def send(sock: socket.socket, request_id: bytes, message) -> None:
    """Pickle first (a message that cannot pickle raises before any byte is sent), then one framed write."""
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(HEADER.pack(request_id, len(body)) + body)


def receive(sock: socket.socket) -> tuple[bytes, object]:
    """The child's side: (request id, message), blocking until the parent sends; EOFError once it closed."""
    request_id, size = HEADER.unpack(_read_exact(sock, HEADER.size, None))
    return request_id, pickle.loads(_read_exact(sock, size, None))


def receive_reply(sock: socket.socket, request_id: bytes, deadline: float):
    """The parent's side: the reply to `request_id`, read by `deadline` (time.monotonic()), with nothing after
    it; `ChannelError` saying what was wrong otherwise, EOFError if the child closed its end."""
    got, size = HEADER.unpack(_read_exact(sock, HEADER.size, deadline))
    if got != request_id:
        raise ChannelError("a reply that does not answer this call (wrong request id)")
    if size > MAX_REPLY_BYTES:
        raise ChannelError(f"a reply announcing {size} bytes (limit {MAX_REPLY_BYTES})")
    body = _read_exact(sock, size, deadline)
    if has_bytes(sock):
        raise ChannelError("bytes beyond its reply")
    try:
        return pickle.loads(body)
    except Exception as error:  # noqa: BLE001 (whatever the bytes were, they are not our reply)
        raise ChannelError(f"a reply that does not unpickle ({type(error).__name__})") from None


def readable(sock: socket.socket, timeout: float = 0.0) -> bool:
    """Whether a read would not block: bytes are waiting, or the other end closed."""
    return bool(select.select([sock], [], [], timeout)[0])


def has_bytes(sock: socket.socket) -> bool:
    """Bytes are waiting right now (not merely the other end closed)."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except (BlockingIOError, InterruptedError):
        return False


def _read_exact(sock: socket.socket, size: int, deadline: float | None) -> bytes:
    data = bytearray()
    try:
        while len(data) < size:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ChannelError(f"a message cut short ({len(data)} of {size} bytes)")
                sock.settimeout(left)
            try:
                chunk = sock.recv(min(size - len(data), 1 << 20))
            except TimeoutError:
                raise ChannelError(f"a message cut short ({len(data)} of {size} bytes)") from None
            if not chunk:
                raise EOFError("the other end closed the channel")
            data += chunk
    finally:
        sock.settimeout(None)
    return bytes(data)
