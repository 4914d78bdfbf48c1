"""Progress bars and end-of-stage summary tables (tqdm and rich), shared by every stage."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any


@contextmanager
def progress(total: int, desc: str, initial: int = 0, enabled: bool = True, unit: str = "problem"):
    from tqdm.auto import tqdm

    bar = tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        disable=not enabled,
        dynamic_ncols=True,
        file=sys.stderr,
        mininterval=1.0,
    )
    try:
        yield bar
    finally:
        bar.close()


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
