"""The console is the user's; every other line is kept in the stage's log file.

A user reads our progress bars, summary tables, one line per finished stage, warnings that ask something
of them, and errors; everything else (vLLM's engine start, torch and DeepSpeed notices, C++ warnings,
third-party progress bars) goes to `<run>/<stage>/stage.log`, untouched. Inside a stage the process's
stderr (fd 2, which C++ code, child processes and libraries' own handlers write to) is pointed at that
file, and our own console output goes to a copy of the original stderr: that is the one place that
catches output no logger config reaches. `log.level=debug` (`python -m distill -v`) changes nothing of
this and leaves every line on the console, as it was before this module existed.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

STAGE_LOG = "stage.log"
FORMAT = "%(asctime)s %(levelname)s %(name)s | %(message)s"
# A line our file handler wrote: a record's first line, or a continuation line (traceback) of one.
_OURS = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \S+ )?\| ")
LEVELS = ("debug", "info", "warning")


@dataclass
class LogConfig:
    """Console verbosity (`log.level`); the stage log always keeps every line."""

    level: str = "info"  # info: ours + warnings to act on | warning: less of ours | debug: everything
    # Third-party warnings (logged, or written to stderr) that ask something of the user: shown on the
    # console with the stage's name; every ERROR/CRITICAL record is shown anyway.
    actionable: list[str] = field(
        default_factory=lambda: [
            r"(?i)out of memory|\bOOM\b|cannot allocate memory",
            r"(?i)no space left on device|disk quota exceeded",
            r"(?i)\bnan\b.*\bloss\b|\bloss\b.*\bnan\b",
            r"(?i)timed out|deadlock",
            r"^\S*(?:Error|Exception)\b|\bERROR\b|\bCRITICAL\b|^Traceback",
        ]
    )


class _State:
    """The process's logging setup: one console stream and the level the driver was started with."""

    level = "debug"  # until setup(): tests and plain imports keep the library defaults
    actionable: list[re.Pattern] = []
    console: IO[str] | None = None  # a copy of the original stderr while a stage redirects fd 2


def verbose() -> bool:
    return _State.level == "debug"


def console() -> IO[str]:
    """Where our progress bars and console records go: the terminal, also while fd 2 is redirected."""
    return _State.console or sys.stderr


def is_ours(name: str) -> bool:
    return name == "__main__" or name == "distill" or name.startswith("distill.")


def actionable(text: str) -> bool:
    return any(p.search(text) for p in _State.actionable)


class ConsoleFilter(logging.Filter):
    """Ours at the configured level; a third-party record when it is an error or asks for action."""

    def filter(self, record: logging.LogRecord) -> bool:
        if verbose():
            return record.levelno >= (logging.DEBUG if is_ours(record.name) else logging.INFO)
        if is_ours(record.name):
            return record.levelno >= (logging.WARNING if _State.level == "warning" else logging.INFO)
        if record.levelno >= logging.ERROR:
            return True
        return record.levelno >= logging.WARNING and actionable(record.getMessage())


class _FileFormatter(logging.Formatter):
    """Continuation lines (tracebacks) marked as ours, so the stage-log watcher does not echo them."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", "\n| ")


class ConsoleHandler(logging.Handler):
    """Writes through tqdm, so a record never tears a progress bar apart."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=console())
        except Exception:  # noqa: BLE001 (logging must never raise into the caller)
            self.handleError(record)


def setup(cfg: Any = None) -> None:
    """Installs the console handler (once per process) from the `log` config section.

    Hydra's job logging is off (conf/config.yaml) and the console handler its own logging set on the root
    logger is removed here, so every record reaches the console through ConsoleFilter. vLLM writes its log
    to stdout by default: it is pointed at stderr, which a stage sends to its log file."""
    level = str(getattr(cfg, "level", "info")).lower()
    if level not in LEVELS:
        raise ValueError(f"log.level={level!r}; valid: {', '.join(LEVELS)}")
    _State.level = level
    _State.actionable = [re.compile(p) for p in getattr(cfg, "actionable", LogConfig().actionable)]
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, ConsoleHandler) or _to_console(h)]:
        root.removeHandler(h)  # ours from an earlier setup(), or Hydra's own (hydra_logging) console handler
    handler = ConsoleHandler()
    handler.addFilter(ConsoleFilter())
    handler.setFormatter(logging.Formatter("[distill] %(message)s" if level != "debug" else FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("distill").setLevel(logging.DEBUG if level == "debug" else logging.INFO)
    logging.captureWarnings(True)  # warnings.warn(...) -> the "py.warnings" logger: a third-party record
    if level != "debug":
        os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")


def _to_console(h: logging.Handler) -> bool:
    return type(h) is logging.StreamHandler and h.stream in (sys.stdout, sys.stderr)


@contextmanager
def stage_log(stage_dir: Path, name: str, filename: str = STAGE_LOG) -> Iterator[Path]:
    """Every record and every stderr line of one stage into `<stage_dir>/stage.log` (appended: a rerun
    keeps the earlier attempt's lines). On a failure the console says which file holds the details."""
    path = Path(stage_dir) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = logging.FileHandler(path, encoding="utf-8")
    fh.setFormatter(_FileFormatter(FORMAT))
    root = logging.getLogger()
    root.addHandler(fh)
    fh.stream.write(f"\n===== {name} (pid {os.getpid()}) =====\n")
    fh.flush()
    try:
        with _stderr_to(path, name):
            yield path
    except BaseException as e:
        # the traceback goes to the file only: the console gets the error once, from Python, in full
        fh.handle(
            logging.LogRecord(__name__, logging.ERROR, __file__, 0, "%s failed", (name,), sys.exc_info())
        )
        if not isinstance(e, KeyboardInterrupt):
            print(
                f"[distill] {name} failed: {type(e).__name__}; details in {path}", file=console(), flush=True
            )
        raise
    finally:
        root.removeHandler(fh)
        fh.close()


@contextmanager
def _stderr_to(path: Path, name: str) -> Iterator[None]:
    """fd 2 -> the log file for the block (not with log.level=debug, nor where stderr has no fd 2)."""
    if verbose() or _State.console is not None or not _has_fd2():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    log_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    _State.console = os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8", errors="replace")
    os.dup2(log_fd, 2)
    os.close(log_fd)
    watcher = _Watcher(path, name)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        watcher.stop()
        _State.console.close()
        _State.console = None


def _has_fd2() -> bool:
    try:
        os.fstat(2)
        return True
    except OSError:
        return False


class _Watcher:
    """Follows the stage log for raw lines (not our records) that ask for action, and shows them."""

    def __init__(self, path: Path, name: str, interval: float = 0.5) -> None:
        self.name, self.interval = name, interval
        self.f = open(path, "rb")  # noqa: SIM115 (closed in stop)
        self.f.seek(0, os.SEEK_END)
        self.buf = b""
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="distill-stage-log", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(self.interval):
            self._scan()

    def _scan(self) -> None:
        self.buf += self.f.read()
        *lines, self.buf = re.split(rb"[\r\n]", self.buf)
        for raw in lines:
            text = raw.decode("utf-8", "replace").strip()
            if text and not _OURS.match(text) and actionable(text):
                from tqdm import tqdm

                tqdm.write(f"[distill] {self.name} (stage.log): {text}", file=console())

    def stop(self) -> None:
        self.done.set()
        self.thread.join()
        self.buf += b"\n"
        self._scan()
        self.f.close()
