"""TCP relays on loopback in front of a server (the S3 server in tests and benchmarks): the endpoint going away
(:class:`CuttableLink`), and connections reset in the middle of an answer (:class:`FlakyLink`)."""

from __future__ import annotations

import contextlib
import socket
import threading

from testkit.ray_cluster import free_port


class CuttableLink:
    """A TCP relay on loopback in front of the S3 server: ``cut()`` drops every connection and stops listening (the
    endpoint goes away; the server and its buckets stay), ``restore()`` listens on the same port again."""

    def __init__(self, target_port: int):
        self.target_port, self.port, self.conns = target_port, free_port(), []
        self.restore()

    def restore(self) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.listener.listen(64)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client = listener.accept()[0]
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                return
            self.conns += [client, upstream]
            for a, b, limit in ((client, upstream, None), (upstream, client, self._answer_limit())):
                threading.Thread(target=self._pipe, args=(a, b, limit), daemon=True).start()

    def _answer_limit(self) -> int | None:
        """The bytes of the server's answer a new connection passes on before it is reset (None: all)."""
        return None

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, limit: int | None = None) -> None:
        sent = 0
        try:
            while data := src.recv(65536):
                if limit is not None and sent + len(data) > limit:
                    dst.sendall(data[: limit - sent])
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with contextlib.suppress(OSError):  # wakes the accepting thread: a closed socket alone still accepts once
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self.conns = []


class FlakyLink(CuttableLink):
    """A :class:`CuttableLink` that, once ``arm(n)`` is called, resets its next ``n`` connections after passing on
    ``after`` bytes of the server's answer: a connection lost in the middle of an object's body."""

    def __init__(self, target_port: int, after: int = 16384):
        self.after, self.failures = after, 0
        super().__init__(target_port)

    def arm(self, failures: int) -> None:
        self.failures = failures

    def _answer_limit(self) -> int | None:
        if self.failures <= 0:
            return None
        self.failures -= 1
        return self.after
