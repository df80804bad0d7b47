"""Several server processes on one port: `imagegen serve --workers N`.

The supervisor binds N listening sockets on the one port with SO_REUSEPORT and starts a worker
process for each (spawned, so each builds its own app, onnxruntime sessions and batchers).
The kernel spreads new connections evenly over the sockets (one shared socket let one busy
worker accept nearly all of them). A worker that dies is replaced on the same socket, which
the supervisor keeps open meanwhile, so connections that arrive for it wait and are served.
SIGTERM or SIGINT is passed to every worker, which stops accepting and finishes what it
accepted within `shutdown_grace_s` (as a single server does); the supervisor exits 0 when
all of them did.

Metrics use prometheus-client's multiprocess mode: every worker writes its samples to files
in PROMETHEUS_MULTIPROC_DIR, and whichever worker answers /metrics adds them all up. The
supervisor removes a dead worker's live gauges (`mark_process_dead`).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

from service.cli import USAGE_EXIT_CODE
from service.settings import Settings

logger = logging.getLogger("imagegen.supervisor")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
POLL_S = 0.2
RESTART_BACKOFF_S = 1.0  # a worker that keeps dying is restarted at most this often


def bind_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` listening sockets on one host and port (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]  # with port 0, the rest join the first one's port
            sock.listen(2048)
            sock.set_inheritable(True)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _worker_main(settings: Settings, sock: socket.socket) -> None:  # pragma: no cover
    """In a worker process: the app and uvicorn on the supervisor's socket."""
    from service.cli import configure_logging, serve_on_socket

    configure_logging(settings.log_level)
    raise SystemExit(serve_on_socket(settings, sock))


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.context = multiprocessing.get_context("spawn")
        self.workers: list[BaseProcess] = []
        self.stopping = False
        self.last_restart = 0.0
        self.metrics_dir: Path | None = None
        self.sockets: list[socket.socket] = []

    def _spawn(self, index: int) -> BaseProcess:
        sock = self.sockets[index]
        process = self.context.Process(
            target=_worker_main,
            args=(self.settings, sock),  # pickled whole: the API key travels as itself
            name="imagegen-worker",
            daemon=False,
        )
        process.start()
        logger.info("worker %d started (pid %s)", index, process.pid)
        return process

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopping:
            logger.info("%s: stopping %d worker(s)", signal.Signals(signum).name, len(self.workers))
        self._stop_workers()

    def _stop_workers(self) -> None:
        """Stop taking connections and send every live worker SIGTERM."""
        self.stopping = True
        # The workers stop accepting on their copies; ours must close too, or new connections
        # would wait in a backlog instead of being refused.
        for sock in self.sockets:
            sock.close()
        for process in self.workers:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)

    def run(self) -> int:
        settings = self.settings
        own_dir = MULTIPROC_ENV not in os.environ
        if own_dir:
            self.metrics_dir = Path(tempfile.mkdtemp(prefix="imagegen-metrics-"))
            os.environ[MULTIPROC_ENV] = str(self.metrics_dir)
        from prometheus_client import multiprocess

        self.sockets = bind_sockets(settings.host, settings.port, settings.workers)
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.workers = [self._spawn(index) for index in range(len(self.sockets))]
            logger.info(
                "serving on http://%s:%d with %d workers",
                settings.host,
                settings.port,
                settings.workers,
            )
            while not self.stopping:
                for index, process in enumerate(self.workers):
                    if process.is_alive() or self.stopping:
                        continue
                    if process.exitcode == USAGE_EXIT_CODE:
                        # It could not start (an invalid model, an unusable provider: its
                        # error is logged above); a new one would fail the same way.
                        logger.error("worker %d could not start; stopping all workers", index)
                        self._stop_workers()
                        self._stop_all()
                        return USAGE_EXIT_CODE
                    logger.error(
                        "worker %d (pid %s) exited with %s; starting a new one",
                        index,
                        process.pid,
                        process.exitcode,
                    )
                    if process.pid is not None:
                        multiprocess.mark_process_dead(process.pid)  # type: ignore[no-untyped-call]
                    wait_s = self.last_restart + RESTART_BACKOFF_S - time.monotonic()
                    if wait_s > 0:
                        time.sleep(wait_s)
                    self.last_restart = time.monotonic()
                    if not self.stopping:
                        self.workers[index] = self._spawn(index)
                time.sleep(POLL_S)
            return self._stop_all()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            for sock in self.sockets:
                sock.close()
            if own_dir and self.metrics_dir is not None:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)
                os.environ.pop(MULTIPROC_ENV, None)

    def _stop_all(self) -> int:
        deadline = time.monotonic() + self.settings.shutdown_grace_s + 10.0
        status = 0
        for process in self.workers:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                logger.error("worker pid %s did not stop in time; killing it", process.pid)
                process.kill()
                process.join(5.0)
                status = 1
            elif process.exitcode not in (0, None):
                logger.error("worker pid %s exited with %s", process.pid, process.exitcode)
                status = 1
        logger.info("all workers stopped")
        return status


def run_workers(settings: Settings) -> int:
    """Serve with `settings.workers` processes until SIGTERM or SIGINT; the exit status."""
    return Supervisor(settings).run()
