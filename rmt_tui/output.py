"""What the commands write: stdout carries data only (JSON, CSV or a Rich table), progress goes to
stderr as a transient bar, and only when stderr is a terminal."""
from __future__ import annotations

import csv
import json
import sys
from contextlib import contextmanager


@contextmanager
def progress_bar(label: str):
    """A transient Rich progress bar on stderr (layer i/n, ETA); nothing when stderr is not a terminal."""
    if not sys.stderr.isatty():
        yield lambda done, total, what: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), TextColumn("{task.fields[what]}"),
                  console=Console(stderr=True), transient=True) as prog:
        task = prog.add_task(label, total=None, what="")

        def update(done, total, what):
            prog.update(task, completed=done, total=total, what=what)

        yield update


def write_json(doc) -> None:
    """The whole document, built before anything is printed: stdout never holds half of one."""
    sys.stdout.write(json.dumps(doc, indent=2, allow_nan=False) + "\n")


def write_csv(header, rows) -> None:
    w = csv.writer(sys.stdout, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)  # the csv module writes None as an empty field


def emit(fmt: str, doc, table, csv_rows=None) -> None:
    """A command's document on stdout: JSON, CSV (``csv_rows(doc)`` → header, rows) or a Rich
    table (``table(tables_module, doc)``; the tables module, and Rich, load only for this)."""
    if fmt == "json":
        write_json(doc)
    elif fmt == "csv":
        write_csv(*csv_rows(doc))
    else:
        from . import tables

        print_table(table(tables, doc))


def print_table(table) -> None:
    from rich.console import Console

    Console(width=None if sys.stdout.isatty() else 80).print(table)
