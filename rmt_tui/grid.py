"""The grid view: layers × checkpoints, each cell the layer's ŝ per method in that checkpoint."""
from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Static

from core.rmt.methods import short_label
from core.scan import LayerResult

from .render import rank_cell, shown
from .session import LayerKey, Session
from .tables import short_labels
from .widgets import LeanFooter


def cell(session: Session, key: LayerKey | None) -> Text:
    """'97/185' (⚠ on a poor fit), '·' not analysed yet, '–' no matrix, 'missing' no such layer."""
    if key is None:
        return Text("missing", style="dim")
    r: LayerResult | None = session.result(key)
    if not session.layer(key).analysable or (r is not None and r.reason is not None):
        return Text("–", style="dim")
    if r is None:
        return Text("·", style="dim")
    return rank_cell({m: x.to_dict() for m, x in r.analysis.methods.items()})


class GridScreen(Screen):
    """Navigable with the tree's keys (j/k, h/l, arrows); enter opens the layer under the cursor."""

    BINDINGS = [Binding("escape,g", "dismiss(None)", "Back"), Binding("enter", "open_cell", "Open layer"),
                Binding("a", "analyse_all", "Analyse all"),
                Binding("j", "move(1, 0)", show=False), Binding("k", "move(-1, 0)", show=False),
                Binding("l", "move(0, 1)", show=False), Binding("h", "move(0, -1)", show=False)]
    DEFAULT_CSS = "GridScreen DataTable { height: 1fr; } GridScreen #grid-title { padding: 0 1; }"

    def __init__(self, session: Session, methods: tuple[str, ...], on_analyse_all: Callable[[], None]):
        super().__init__()
        self.session = session
        self.methods = methods
        self.on_analyse_all = on_analyse_all
        self.rows = [row for row in session.match.rows if any(e.layer is not None and e.layer.analysable
                                                              for e in row.entries)]
        self._where: dict[LayerKey, tuple[int, int]] = {}

    def compose(self) -> ComposeResult:
        heads, pattern = short_labels(list(self.session.labels))
        title = f"ŝ {'/'.join(short_label(m) for m in self.methods)} per layer and checkpoint" + \
            (f" ({pattern})" if pattern else "") + " · ⚠ poor MP fit · · not analysed (a) · enter opens"
        yield Static(shown(title), id="grid-title")
        yield DataTable(cursor_type="cell", zebra_stripes=True, id="grid")
        yield LeanFooter(compact=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        heads, _ = short_labels(list(self.session.labels))
        table.add_column("layer", key="layer")
        for i, head in enumerate(heads):
            table.add_column(shown(head), key=str(i))
        for r, row in enumerate(self.rows):
            keys = [LayerKey(i, e.layer.name) if e.layer is not None else None for i, e in enumerate(row.entries)]
            for i, k in enumerate(keys):
                if k is not None:
                    self._where[k] = (r, i + 1)
            table.add_row(shown(row.key), *(cell(self.session, k) for k in keys), key=str(r))
        table.move_cursor(row=0, column=1)
        table.focus()

    def refresh_key(self, key: LayerKey) -> None:
        """A layer was analysed meanwhile: update its cell."""
        if key in self._where:
            r, c = self._where[key]
            self.query_one(DataTable).update_cell(str(r), str(c - 1), cell(self.session, key), update_width=True)

    def key_under_cursor(self) -> LayerKey | None:
        table = self.query_one(DataTable)
        r, c = table.cursor_coordinate
        if not self.rows:
            return None
        entries = self.rows[r].entries
        if c == 0:  # the name column: the first checkpoint that holds the layer
            c = next(i for i, e in enumerate(entries) if e.layer is not None) + 1
        e = entries[c - 1]
        return LayerKey(c - 1, e.layer.name) if e.layer is not None else None

    def action_open_cell(self) -> None:
        key = self.key_under_cursor()
        if key is None:
            self.notify("this checkpoint has no such layer", severity="warning")
            return
        self.dismiss(key)

    def on_data_table_cell_selected(self, event: DataTable.CellSelected) -> None:
        self.action_open_cell()

    def action_move(self, rows: int, columns: int) -> None:
        table = self.query_one(DataTable)
        r, c = table.cursor_coordinate
        table.move_cursor(row=max(0, r + rows), column=max(0, c + columns))

    def action_analyse_all(self) -> None:
        self.on_analyse_all()
