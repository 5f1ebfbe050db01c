"""Wake-ups across the processes of one machine on SQLite: a datagram to every listening worker.

Role: ``Store.notify_work``/``listen_work`` on SQLite (PostgreSQL has LISTEN/NOTIFY). Each
listener (a worker process) binds a Unix datagram socket in a folder beside the database
file (``gateway.db.wake/``; a folder of its own under the temporary directory when that
path is too long for a socket address); a process that committed new work sends one byte
to every socket in the folder, and each listener's thread calls its ``wake``. The
outbox itself is the truth: a wake-up only says "look now" instead of on the next tick.

May import: nothing of ours (the standard library only).

Invariants: best effort, never failing the caller: a send that cannot be made is dropped
(the worker's poll tick finds the work); a socket file whose listener is gone (a killed
process) is removed by the next sender; a listener's queue that is full is a listener
already awake. Only the database file's owner can reach the folder (mode 0700).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import socket
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("gateway.store")

#: The longest path a Unix socket address may have (108 bytes on Linux, with its NUL),
#: less the socket's own file name.
_MAX_FOLDER = 107 - len("4194304-abcdef.sock") - 1
_SUFFIX = ".sock"


def folder_for(database: Path) -> Path:
    """The folder of ``database``'s wake sockets: ``<file>.wake`` beside it, or (a path too
    long for a socket address) ``gateway-wake-<uid>-<hash of its path>`` in the temporary
    directory."""
    beside = database.with_name(database.name + ".wake")
    if len(os.fsencode(beside)) <= _MAX_FOLDER:
        return beside
    digest = hashlib.sha256(os.fsencode(database.resolve())).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"gateway-wake-{os.getuid()}-{digest}"


class Bell:
    """The wake sockets of one database: ``ring`` them all, or ``listen`` on one's own."""

    def __init__(self, database: Path):
        self.folder = folder_for(database)
        self._sender: socket.socket | None = None
        self._lock = threading.Lock()

    def ring(self) -> None:
        """Send one byte to every listener's socket; never raises."""
        try:
            names = [entry.name for entry in os.scandir(self.folder) if entry.name.endswith(_SUFFIX)]
        except OSError:  # no folder: nobody has listened yet
            return
        if not names:
            return
        sender = self._sender or self._open_sender()
        if sender is None:
            return
        for name in names:
            path = os.path.join(self.folder, name)
            try:
                sender.sendto(b"!", path)
            except BlockingIOError:  # its queue is full: it is awake already
                pass
            except (ConnectionRefusedError, FileNotFoundError):  # its listener is gone (killed): clean up
                with contextlib.suppress(OSError):
                    os.unlink(path)
            except OSError:
                pass

    def _open_sender(self) -> socket.socket | None:
        with self._lock:
            if self._sender is None:
                try:
                    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    sender.setblocking(False)
                except OSError:
                    return None
                self._sender = sender
            return self._sender

    def listen(self, wake: Callable[[], None]) -> Callable[[], None] | None:
        """Call ``wake`` (in a thread of its own) whenever a process rings; returns ``stop``,
        or None (logged) when no socket can be made here: the worker then polls."""
        try:
            self.folder.mkdir(mode=0o700, exist_ok=True)
            info = self.folder.stat()
            if info.st_uid != os.getuid() or info.st_mode & 0o077:
                raise PermissionError(f"{self.folder} is not this user's alone (owner and mode 0700)")
            path = self.folder / f"{os.getpid()}-{secrets.token_hex(3)}{_SUFFIX}"
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sock.bind(os.fspath(path))
            except OSError:
                sock.close()
                raise
        except OSError as exc:
            log.warning("no wake socket: new work is found on the poll tick (worker.poll_s)",
                        extra={"folder": str(self.folder), "detail": str(exc)[:200]})
            return None
        stopping = threading.Event()

        def loop() -> None:
            while True:
                try:
                    sock.recv(16)
                    with contextlib.suppress(BlockingIOError):
                        while sock.recv(16, socket.MSG_DONTWAIT):  # wake once for everything queued
                            pass
                except OSError:
                    return
                if stopping.is_set():
                    return
                try:
                    wake()
                except Exception:  # a wake that fails must not end the listening
                    log.exception("wake failed")

        thread = threading.Thread(target=loop, name="wake-listener", daemon=True)
        thread.start()

        def stop() -> None:
            if stopping.is_set():
                return
            stopping.set()
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as poke:
                poke.sendto(b"!", os.fspath(path))
            thread.join(timeout=5)
            sock.close()
            with contextlib.suppress(OSError):
                path.unlink()

        return stop

    def close(self) -> None:
        with self._lock:
            if self._sender is not None:
                self._sender.close()
                self._sender = None
