"""The dev server's FrameSocket: a flushing close delivers every byte already accepted by send()."""
from __future__ import annotations

import gevent
from gevent import socket as gsocket

from topgun.server.frames import FrameSocket

FRAME_HEADER = 14  # an unmasked (server) frame header with a 64-bit length is 10 bytes; masked (client) 14


def test_a_flushing_close_finishes_a_frame_the_kernel_took_only_in_part() -> None:
    # A big frame (a partition snapshot) to a peer that is not reading yet: the writer greenlet is
    # still in sendall() when the link is replaced and closed with flush=True.
    ours, theirs = gsocket.socketpair()
    fs = FrameSocket(ours.makefile("rb").read1, ours, spawn=gevent.spawn, client=True)
    payload = b"x" * (8 * 1024 * 1024)
    assert fs.send(payload)
    deadline = 50
    while fs.pending_bytes == 0 or not fs._busy:      # the writer holds the rest, in sendall()
        gevent.sleep(0.01)
        deadline -= 1
        assert deadline, "the writer never got to block in sendall()"
    fs.close(flush=True)
    theirs.settimeout(5.0)
    got = 0
    while True:
        data = theirs.recv(1 << 20)
        if not data:
            break
        got += len(data)
    assert got == len(payload) + FRAME_HEADER
