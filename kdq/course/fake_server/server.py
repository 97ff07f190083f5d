"""``FakeServer``: the stand-in course server on a real loopback port, in a background thread.

    with FakeServer(data_dir=..., teams={"team": token}, submit_interval_s=2, status_interval_s=0) as srv:
        client = CourseClient(srv.url, token, "team")
        srv.inject("error", count=2, status=502)       # the next two requests fail
        srv.go_down(3)                                  # refused for 3 s, then back on the same port
        srv.restart()                                   # back without its state: attempts from #1
        srv.course.wait_graded()                        # every upload graded

The state (teams, submissions, clocks) lives in ``srv.course`` and survives going down and up.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from kdq.course.fake_server.app import build_app
from kdq.course.fake_server.course import FakeCourse
from kdq.course.fake_server.faults import Fault, FaultQueue
from kdq.log import add_secret, get_logger

log = get_logger("kdq.fake_server")


class FakeServer:
    def __init__(
        self,
        teams: dict[str, str],
        data_dir: str | Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: list[Fault] = (),
        paths: dict[str, str] | None = None,
        **course_options: Any,
    ) -> None:
        add_secret(*teams.values())
        self.host = host
        self.port = port
        self.course = FakeCourse(
            teams=dict(teams), data_dir=Path(data_dir) if data_dir else None, **course_options
        )
        self.faults = FaultQueue(list(faults))
        self.app = build_app(self.course, self.faults, on_down=self._down_from_request, paths=paths)
        self._lock = threading.RLock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def up(self) -> bool:
        """Accepting connections. Waits for a start or a stop under way: a connection can be accepted
        (the socket listens) a moment before a start has finished."""
        with self._lock:
            return self._server is not None

    # ---------------------------------------------------------------- life cycle

    def start(self, timeout: float = 10.0) -> FakeServer:
        with self._lock:
            if self._server is not None:
                return self
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            self.port = sock.getsockname()[1]
            config = uvicorn.Config(
                self.app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=1
            )
            server = uvicorn.Server(config)
            thread = threading.Thread(
                target=server.run, kwargs={"sockets": [sock]}, name="fake-course-server", daemon=True
            )
            thread.start()
            deadline = time.monotonic() + timeout
            while not server.started:
                if not thread.is_alive() or time.monotonic() > deadline:
                    sock.close()
                    raise RuntimeError(f"the stand-in server did not start on {self.url}")
                time.sleep(0.01)
            self._server, self._thread, self._sock = server, thread, sock
            log.info("fake_server.up", url=self.url)
            return self

    def _halt(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.should_exit = True
        thread.join(timeout=10)
        self._sock.close()  # uvicorn closes it too; make sure nothing listens any more

    def stop(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._halt()
        self.course.close()

    def go_down(self, seconds: float | None = None) -> None:
        """Stop accepting connections (refused); come back on the same port after ``seconds`` if given."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._halt()
            log.info("fake_server.down", seconds=seconds)
            if seconds is not None:
                self._timer = threading.Timer(seconds, self.come_up)
                self._timer.daemon = True
                self._timer.start()

    def restart(self, down_s: float = 0.5) -> None:
        """Restart without state: down for ``down_s``, then back with no submissions (attempts from #1)."""
        self.course.forget()
        self.go_down(down_s)

    def come_up(self) -> None:
        with self._lock:
            self._timer = None
            self.start()

    def _down_from_request(self, seconds: float) -> None:
        # Called on the server's own loop: stopping it from there would wait on itself.
        threading.Thread(target=self.go_down, args=(seconds,), daemon=True).start()

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- faults

    def inject(self, kind: str, count: int = 1, **options: Any) -> Fault:
        """Spoil the next ``count`` requests: ``inject("rate_limit", wait_s=120, route="submit")``."""
        fault = Fault(kind=kind, count=count, **options)
        self.faults.add(fault)
        return fault

    def clear_faults(self) -> None:
        self.faults.clear()

    def serve_forever(self) -> None:
        """Run until Ctrl-C or SIGTERM (the CLI; call from the main thread)."""
        import signal

        def _interrupt(signum, frame):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, _interrupt)
        self.start()
        try:
            while True:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()
