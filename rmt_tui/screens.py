"""Modal screens: help, find a layer, open a checkpoint, confirm quit."""
from __future__ import annotations

from fnmatch import fnmatchcase

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from .render import shown


class Dialog(ModalScreen):
    """A centred, bordered box over the app. Unscoped CSS so the rules reach every dialog subclass."""

    SCOPED_CSS = False
    DEFAULT_CSS = """
    Dialog { align: center middle; }
    Dialog > Vertical { width: 80%; max-width: 100; height: auto; max-height: 90%;
                        border: round $accent; padding: 0 1; background: $surface; }
    Dialog OptionList { height: auto; max-height: 14; }
    Dialog VerticalScroll { height: auto; max-height: 20; }
    Dialog .error { color: $error; }
    """


class HelpScreen(Dialog):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def __init__(self, rows: list[tuple[str, str]]):
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        t = Table(box=None, show_header=False, pad_edge=False)
        t.add_column(style="bold")
        t.add_column()
        for keys, what in self.rows:
            t.add_row(keys, what)
        with Vertical():
            yield Static(Text("rmt-tui keys", style="bold"))
            with VerticalScroll():
                yield Static(t)
            yield Static(Text("tree: B97 G185 = ŝ kept by BEMA / broadening · ⚠ poor MP fit (KS > 0.10) · "
                              "– not analysed (select it for the reason)"))
            yield Static(Text("esc closes · mouse optional · NO_COLOR respected", style="dim"))


class FindScreen(Dialog):
    """Type part of a layer name (or a glob); enter jumps to the highlighted match."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel"), Binding("down", "down", show=False),
                Binding("up", "up", show=False)]
    LIMIT = 200

    def __init__(self, names: list[str]):
        super().__init__()
        self.names = names

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("find a layer (substring or glob, enter to jump)")
            yield Input(placeholder="e.g. fc1 or *.weight", id="query")
            yield OptionList(id="matches")

    def on_mount(self) -> None:
        self.query_one(Input).cursor_blink = False
        self._fill("")

    def matches(self, q: str) -> list[str]:
        q = q.strip().lower()
        if not q:
            return self.names[: self.LIMIT]
        glob = any(ch in q for ch in "*?[")
        return [n for n in self.names if (fnmatchcase(n.lower(), q) if glob else q in n.lower())][: self.LIMIT]

    def _fill(self, q: str) -> None:
        ol = self.query_one(OptionList)
        ol.clear_options()
        ol.add_options([Option(shown(n), id=n) for n in self.matches(q)])
        if ol.option_count:
            ol.highlighted = 0

    def on_input_changed(self, event: Input.Changed) -> None:
        self._fill(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        ol = self.query_one(OptionList)
        if ol.highlighted is not None and ol.option_count:
            self.dismiss(ol.get_option_at_index(ol.highlighted).id)
        else:
            self.notify(f"no layer matches {event.value!r}", severity="warning", markup=False)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_down(self) -> None:
        self.query_one(OptionList).action_cursor_down()

    def action_up(self) -> None:
        self.query_one(OptionList).action_cursor_up()


class OpenScreen(Dialog):
    """Ask for a checkpoint: a path, or org/name[@revision] from the local Hugging Face cache, whose
    models are listed to pick from. The app validates it and shows any error here."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel"), Binding("down", "down", show=False),
                Binding("up", "up", show=False)]

    def __init__(self, error: str | None = None, value: str = ""):
        super().__init__()
        self.error, self.value = error, value

    def compose(self) -> ComposeResult:
        from core.io.detect import WEIGHT_SUFFIXES  # the formats the readers take, in one place
        from core.io.hub import cached_models, hub_cache_dir
        from core.memory import human_bytes

        with Vertical():
            yield Static(f"open a checkpoint: file ({' '.join(WEIGHT_SUFFIXES)}), model folder, or org/name"
                         "[@revision] from the Hugging Face cache")
            yield Input(value=self.value, placeholder="path or org/name", id="path")
            yield Static(shown(self.error or ""), classes="error", id="open-error")
            models = cached_models()
            if models:
                yield Static(shown(f"cached models ({hub_cache_dir()}): ↓ to pick, enter to open"))
                yield OptionList(*(Option(shown(f"{m.label}  {human_bytes(m.size)}"), id=m.label) for m in models),
                                 id="cached")

    def on_mount(self) -> None:
        self.query_one(Input).cursor_blink = False

    def show_error(self, message: str) -> None:
        self.query_one("#open-error", Static).update(shown(message))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.app.open_from_screen(self, event.value.strip())

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.app.open_from_screen(self, event.option.id)

    def action_down(self) -> None:
        """From the path field into the list (its first model), then down the list."""
        if self.query("#cached"):
            listed = self.query_one("#cached", OptionList)
            if listed.has_focus:
                listed.action_cursor_down()
            else:
                listed.focus()
                listed.highlighted = 0

    def action_up(self) -> None:
        if self.query("#cached"):
            self.query_one("#cached", OptionList).action_cursor_up()


class ConfirmQuit(Dialog):
    BINDINGS = [Binding("y,q", "dismiss(True)", "Quit"), Binding("n,escape", "dismiss(False)", "Stay")]

    def __init__(self, running: list[str]):
        super().__init__()
        self.running = running

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(shown("Work is running: " + ", ".join(self.running), "bold"))
            yield Static("Quit anyway? It is cancelled and nothing partial is saved.  [y]es / [n]o")


class SensitivityScreen(Dialog):
    """The per-layer sensitivity table (each layer alone at ŝ, least damaging first)."""

    BINDINGS = [Binding("escape,q,S", "dismiss", "Close")]

    def __init__(self, title: str, table):
        super().__init__()
        self.title_text, self.table = title, table

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(shown(self.title_text, "bold"))
            with VerticalScroll():
                yield Static(self.table)
            yield Static(Text("esc closes · `rmt-tui eval PATH --each --budget kl=0.05 --plan-out plan.json` plans "
                              "within a budget", style="dim"))
