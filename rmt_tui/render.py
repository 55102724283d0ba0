"""One renderer per fact, shared by the CLI's tables, the app's panel, tree and grid: terminal-safe
names, numbers that may not apply, ŝ cells, metric values with their collapsed / lower-bound marks,
and rank lists. Each reads the plain report dicts (a record's ``to_dict()`` in the app)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.text import Text

from core.evaluate.outcomes import MetricSpec
from core.rmt.methods import METHODS
from core.text import printable


def shown(text: str, style: str = "") -> Text:
    """A name or message from a checkpoint as terminal text: control characters escaped, and
    never read as Rich markup (a tensor may be called "[red]x")."""
    return Text(printable(text), style=style)


def tree_mark(method: str) -> str:
    return METHODS[method].tree_mark() if method in METHODS else method[:1]


def fmt(x, spec=".3g") -> str:
    """A number, or – when it does not apply."""
    return "–" if x is None else format(x, spec)


def rank_cell(methods_doc: Mapping[str, Mapping], methods: Sequence[str] | None = None,
              labelled: bool = False) -> Text:
    """ŝ per method: '97/185⚠' (⚠: some fit is poor), or labelled for the tree, ' B97 G185⚠'
    (⚠ after each poor fit, bold where the method applied)."""
    methods = list(methods_doc) if methods is None else methods
    t = Text()
    if not labelled:
        t.append("/".join(fmt(methods_doc[m]["rank"], "d") for m in methods))
        if any(methods_doc[m]["poor_fit"] for m in methods):
            t.append("⚠", style="yellow")
        return t
    for m in methods:
        r = methods_doc[m]
        t.append(f" {tree_mark(m)}{fmt(r['rank'], 'd')}", style="bold" if r["reason"] is None else "dim")
        if r["poor_fit"]:
            t.append("⚠", style="yellow")
    return t


# How the noise models are shown: tables and panel, and one letter in the tree.
NOISE_SHORT = {"mp": "MP", "heteroscedastic": "hetero", "correlated": "corr", "heavy-tailed": "heavy"}
NOISE_LETTER = {"mp": "m", "heteroscedastic": "h", "correlated": "c", "heavy-tailed": "t"}


def noise_cell(noise: Mapping | None, letter: bool = False) -> Text:
    """A layer's noise model ('hetero'; for the tree ' h'); '–' when undecided."""
    model = noise.get("model") if noise else None
    if model is None:
        return Text("" if letter else "–", style="dim")
    return Text(f" {NOISE_LETTER[model]}" if letter else NOISE_SHORT[model], style="" if model == "mp" else "yellow")


def metric_value(spec: MetricSpec, metrics: Mapping[str, float], value: float | None = None) -> str:
    """The primary metric of one outcome as shown: "collapsed" when the evaluator says its numbers
    no longer order (SPEC §11), "≥ x" when the value is a lower bound (KL from a top-k reference)."""
    if metrics.get("collapsed"):
        return "collapsed"
    return ("≥ " if metrics.get("kl_lower_bound") else "") + spec.show(metrics[spec.key] if value is None else value)


def ranks_summary(ranks: Mapping[str, int], wide: bool = True) -> Text:
    """Up to three layers' ranks listed ('fc1:97 fc2:40' wide, '97,40' narrow), else a count
    ('12 layers, ŝ 3–97 (median 40)' wide, '12 layers' narrow)."""
    ks = list(ranks.values())
    if len(ks) <= 3:
        return shown(" ".join(f"{k.rsplit('.', 1)[0]}:{v}" for k, v in ranks.items())) if wide else \
            Text(",".join(map(str, ks)))
    if not wide:
        return Text(f"{len(ks)} layers")
    return Text(f"{len(ks)} layers, ŝ {min(ks)}–{max(ks)} (median {sorted(ks)[len(ks) // 2]})")
