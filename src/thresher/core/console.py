"""The terminal of a ``thresher`` command.

By default everything Ray, Ray Data, Ray Train and the libraries print (their loggers, the Ray workers' output
forwarded to the driver, C++ log lines) goes to the command's log file: the process's stdout and stderr are
redirected there for the command's duration, what Python writes to them (the workers' forwarded output, warnings,
tracebacks) with passwords hidden. The terminal keeps what thresher shows on purpose: the log file's
path, one progress display per phase (``rich`` on a TTY, a plain line every ``PLAIN_EVERY_S`` otherwise),
thresher's own warnings, and the final summary. ``--verbose`` leaves stdout and stderr alone.

Code that reports progress calls :func:`phase` (a no-op display when no console is active, e.g. in a notebook).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from thresher.core.secrets import redact_text

LOG_DIR_ENV = "THRESHER_LOG_DIR"
DEFAULT_LOG_DIR = Path.home() / ".cache" / "thresher" / "logs"
PLAIN_EVERY_S = 10.0
POLL_S = 0.5
OWN_LOGGERS = ("thresher",)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_active: Console | None = None


class RedactingFormatter(logging.Formatter):
    """A log formatter whose lines, tracebacks included, have passwords in URLs hidden (:func:`redact_text`)."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


class RedactingStream:
    """A text stream that passes what it is written with passwords hidden (:func:`redact_text`): Ray prints its
    workers' forwarded output to ``sys.stdout`` and ``sys.stderr`` as they are when it prints."""

    def __init__(self, stream: IO[str]):
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(redact_text(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


class Shown:
    """What a phase's last line shows: ``done``, when its block sets it, else the last poll's figure."""

    done: float | None = None


def log_path(command: str) -> Path:
    folder = Path(os.environ.get(LOG_DIR_ENV) or DEFAULT_LOG_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{command}-{datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}.log"


class Console:
    """Owns the terminal for one command (see the module docstring)."""

    shows_progress = True

    def __init__(self, command: str, verbose: bool = False):
        self.command, self.verbose = command, verbose
        self.log_file: Path | None = None
        self.terminal: IO[str] = sys.stdout
        self.errors: IO[str] = sys.stderr
        self._saved: list[int] = []
        self._streams: tuple[IO[str], IO[str]] = (sys.stdout, sys.stderr)
        self._handlers: list[logging.Handler] = []

    def __enter__(self) -> Console:
        global _active
        root = logging.getLogger()
        if self.verbose:
            self._handle(root, logging.StreamHandler(sys.stderr), logging.DEBUG)
        else:
            self.log_file = log_path(self.command)
            sys.stdout.flush()
            sys.stderr.flush()
            self._saved = [os.dup(1), os.dup(2)]
            self.terminal = os.fdopen(os.dup(self._saved[0]), "w", buffering=1)
            self.errors = os.fdopen(os.dup(self._saved[1]), "w", buffering=1)
            fd = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.close(fd)
            self._handle(root, logging.StreamHandler(sys.stderr), logging.INFO)
            warnings = logging.StreamHandler(self.errors)
            warnings.setFormatter(RedactingFormatter("thresher: %(levelname)s: %(message)s"))
            warnings.setLevel(logging.WARNING)
            for name in OWN_LOGGERS:
                logging.getLogger(name).addHandler(warnings)
            self._handlers.append(warnings)
            self._streams = (sys.stdout, sys.stderr)
            sys.stdout, sys.stderr = RedactingStream(sys.stdout), RedactingStream(sys.stderr)
            self.print(f"log: {self.log_file}")
        _active = self
        return self

    def _handle(self, logger: logging.Logger, handler: logging.Handler, level: int) -> None:
        handler.setFormatter(RedactingFormatter(LOG_FORMAT))
        logger.addHandler(handler)
        logger.setLevel(level)
        self._handlers.append(handler)

    def __exit__(self, *exc: object) -> None:
        global _active
        _active = None
        for handler in self._handlers:
            for name in ("", *OWN_LOGGERS):
                logging.getLogger(name).removeHandler(handler)
        if self._saved:
            sys.stdout, sys.stderr = self._streams
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(self._saved[0], 1)
            os.dup2(self._saved[1], 2)
            for fd in self._saved:
                os.close(fd)
            self.terminal.close()
            self.errors.close()
            self._saved = []

    def print(self, text: str = "") -> None:
        print(text, file=self.terminal, flush=True)

    def error(self, text: str) -> None:
        logging.getLogger("thresher").info(text)
        print(f"thresher: {text}", file=self.errors, flush=True)

    @contextlib.contextmanager
    def phase(
        self,
        name: str,
        poll: Callable[[], tuple[float, float | None]] | None = None,
        unit: str = "records",
        starting: str = "starting workers",
    ) -> Iterator[Shown]:
        """Show ``name`` while the block runs. ``poll()`` returns (done, total) in ``unit`` (total None: unknown);
        it is called from a background thread every ``POLL_S``; until it counts something the line says what is
        happening (``starting``). The block may set the yielded :class:`Shown`'s ``done`` to the exact figure, which
        the last line shows instead of the last poll (progress sent by tasks without waiting can arrive after it)."""
        kind = _RichPhase if self.terminal.isatty() else _PlainPhase
        display = kind(self.terminal, name, unit, starting)
        stop = _poller(display, poll) if poll else None
        t0 = time.perf_counter()
        shown = Shown()
        ended = False  # by a signal (Ctrl-C, SIGTERM): no last poll, which could wait on a cluster being stopped
        try:
            yield shown
        except BaseException as e:
            ended = not isinstance(e, Exception)
            raise
        finally:
            if stop:
                stop(wait=not ended)
            done = shown.done if shown.done is not None else _best_effort(poll)[0] if poll and not ended else None
            display.finish(done, time.perf_counter() - t0)


def _best_effort(poll: Callable[[], tuple[float, float | None]]) -> tuple[float | None, float | None]:
    """``poll()``, or (None, None) when it fails: progress never fails a run (its counter may be gone with a node)."""
    try:
        return poll()
    except Exception:
        logging.getLogger(__name__).info("progress poll failed", exc_info=True)
        return None, None


def _poller(display: _PlainPhase | _RichPhase, poll: Callable[[], tuple[float, float | None]]) -> Callable[..., None]:
    import threading

    stopped = threading.Event()

    def loop() -> None:
        while not stopped.wait(POLL_S):
            done, total = _best_effort(poll)
            if done is not None:
                display.update(done, total)

    thread = threading.Thread(target=loop, name="thresher-progress", daemon=True)
    thread.start()

    def stop(wait: bool = True) -> None:
        stopped.set()
        if wait:
            thread.join()

    return stop


class Estimate(float):
    """A phase's total that is estimated while it runs (shown as "of about N")."""


def _rate(done: float, seconds: float, total: float | None, unit: str) -> str:
    text = f"{done:,.0f} {unit}" + (
        f" of {'about ' if isinstance(total, Estimate) else ''}{total:,.0f}" if total else ""
    )
    if seconds > 0 and done:
        rate = done / seconds
        text += f", {rate:,.0f}/s" if rate >= 10 else f", {rate:.2g}/s" if rate >= 0.1 else f", {1 / rate:,.0f} s each"
        if total and done < total:
            text += f", ETA {(total - done) * seconds / done:,.0f} s"
    return text


class _PlainPhase:
    """A line at most every ``PLAIN_EVERY_S`` while the phase runs, and one when it ends."""

    def __init__(self, out: IO[str], name: str, unit: str, starting: str):
        self.out, self.name, self.unit, self.starting = out, name, unit, starting
        self.t0 = self.last = time.perf_counter()

    def update(self, done: float, total: float | None) -> None:
        now = time.perf_counter()
        if now - self.last >= PLAIN_EVERY_S:
            self.last = now
            what = _rate(done, now - self.t0, total, self.unit) if done else f"{self.starting} ({now - self.t0:.0f} s)"
            print(f"{self.name}: {what}", file=self.out, flush=True)

    def finish(self, done: float | None, seconds: float) -> None:
        what = f"{done:,.0f} {self.unit} " if done is not None else ""
        print(f"{self.name}: {what}in {seconds:.1f} s", file=self.out, flush=True)


class _RichPhase:
    """A live ``rich`` progress bar (a spinner when the total is unknown)."""

    def __init__(self, out: IO[str], name: str, unit: str, starting: str):
        from rich.console import Console as RichConsole
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.unit = unit
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=RichConsole(file=out),
            transient=True,
        )
        self.task = self.progress.add_task(name, total=None, detail=starting)
        self.name, self.t0 = name, time.perf_counter()
        self.out = out
        self.progress.start()

    def update(self, done: float, total: float | None) -> None:
        if not done:
            return  # the line still says what is starting
        detail = _rate(done, time.perf_counter() - self.t0, total, self.unit)
        self.progress.update(self.task, completed=done, total=total, detail=detail)

    def finish(self, done: float | None, seconds: float) -> None:
        self.progress.stop()
        what = f"{done:,.0f} {self.unit} " if done is not None else ""
        print(f"{self.name}: {what}in {seconds:.1f} s", file=self.out, flush=True)


class _Silent:
    shows_progress = False

    @contextlib.contextmanager
    def phase(
        self,
        name: str,
        poll: Callable[[], tuple[float, float | None]] | None = None,
        unit: str = "records",
        starting: str = "",
    ) -> Iterator[Shown]:
        yield Shown()

    def print(self, text: str = "") -> None:
        print(text, flush=True)

    def error(self, text: str) -> None:
        print(f"thresher: {text}", file=sys.stderr, flush=True)


WRAPPERS = {"RayTaskError", "RayActorError", "UserCodeException", "FirstStepError", "WorkerGroupError"}


def root_cause(error: BaseException) -> str:
    """The line of ``error``'s text that names the exception at its root: the last ``Name: message`` line of an
    exception other than Ray's wrappers (a task's error carries its traceback, is wrapped by each actor it passed
    through, and Ray Data appends its advice on retries); else the error's type and last line."""
    lines = str(error).strip().splitlines()
    for line in reversed(lines):
        name, colon, _ = line.strip().partition(": ")
        name = name.split("(")[0].rsplit(".", 1)[-1]
        if colon and name.endswith(("Error", "Exception")) and name.isidentifier() and name not in WRAPPERS:
            return line.strip()
    return f"{type(error).__name__}: {lines[-1].strip()}" if lines else type(error).__name__


def current() -> Console | _Silent:
    """The active console, or one that shows nothing (library use)."""
    return _active or _Silent()
