"""Progress bars and end-of-stage summary tables (tqdm and rich), shared by every stage.

Bars go to `distill.core.logs.console()`: the terminal, also while a stage's stderr is in its log file."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Any

from distill.core.logs import console, verbose


def progress_bar(
    total: int | None, desc: str, initial: int = 0, enabled: bool = True, unit: str = "problem"
) -> Any:
    """A tqdm bar on the console (the caller closes it)."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        disable=not enabled,
        dynamic_ncols=True,
        file=console(),
        mininterval=1.0,
    )


@contextmanager
def progress(total: int, desc: str, initial: int = 0, enabled: bool = True, unit: str = "problem"):
    bar = progress_bar(total, desc, initial, enabled, unit)
    try:
        yield bar
    finally:
        bar.close()


PROGRESS = "[distill:progress] "  # a child process's progress, as one JSON line (see progress_line)


def progress_line(bar: str, n: int, total: int | None, unit: str = "step", **postfix: Any) -> str:
    """One progress update of a child process (a train rank) for its parent's console."""
    return PROGRESS + json.dumps({"bar": bar, "n": n, "total": total, "unit": unit, "postfix": postfix})


class RankConsole:
    """What the console shows of a child's output (train ranks): its progress lines as one bar each and
    its `[distill]` lines; everything else only goes to the child's log file (everything with -v)."""

    def __init__(self) -> None:
        self.bars: dict[str, Any] = {}

    def __call__(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace")
        if verbose():
            console().write(text)
            console().flush()
        elif (i := text.find(PROGRESS)) >= 0:
            self._progress(text[i + len(PROGRESS) :])
        elif (i := text.find("[distill]")) >= 0:
            from tqdm import tqdm

            tqdm.write(text[i:].rstrip(), file=console())

    def _progress(self, payload: str) -> None:
        try:
            p = json.loads(payload)
        except json.JSONDecodeError:
            return
        bar = self.bars.get(p["bar"])
        if bar is None:
            bar = self.bars[p["bar"]] = progress_bar(p.get("total"), p["bar"], unit=p.get("unit", "step"))
        if p.get("total") and bar.total != p["total"]:
            bar.total = p["total"]
        if p.get("postfix"):
            bar.set_postfix({k: _short(v) for k, v in p["postfix"].items()}, refresh=False)
        bar.update(p["n"] - bar.n)  # redrawn at most once a second, like the stages' own bars

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


def _short(v: Any) -> Any:
    return f"{v:.4g}" if isinstance(v, float) else v


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def summary_table(title: str, values: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in values.items():
        if not isinstance(v, (dict, list)):
            table.add_row(k, _fmt(v))
    Console(file=sys.stdout, width=100).print(table)


def rows_table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    """One row per item (a phase, a model): a stage with several of them stays a few lines on the console."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=True, header_style="bold")
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*(_fmt(v) for v in r))
    Console(file=sys.stdout, width=120).print(table)
