"""Pair the layers of several checkpoints by name (SPEC §10), before any number is computed.

Never by position: names are normalised (wrapper prefixes stripped), paired exactly, then by a
unique dotted suffix; an output layer a checkpoint does not store because it is tied to the
embedding is paired with that embedding. Every row says how it was paired and what differs, so
that nothing is ever compared with a stand-in without the user being told.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from core.io.checkpoint import Checkpoint
from core.io.layers import Layer

# Prefixes that wrappers put in front of a model's own names: DataParallel/DDP, torch.compile,
# PEFT, and the top-level "model." of HF and Lightning. Stripped repeatedly, in any order.
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "base_model.model.", "model.")
WRAPPER_INFIXES = (".base_layer.",)  # PEFT keeps the wrapped layer's weight under base_layer
OUTPUT_LAYERS = ("lm_head.weight", "output.weight")  # an LM's output layer, often tied to its embedding
EMBEDDINGS = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "tok_embeddings.weight",
              "tok_emb.weight", "token_embd.weight")

# Per-checkpoint states of a matched row, relative to the row's reference (its first entry).
SAME = "same"
TRANSPOSED = "transposed"  # the shape is the reference's transposed: compared as Wᵀ (said so)
SHAPE_MISMATCH = "shape_mismatch"
MISSING = "missing"
TIED = "tied"  # stored as another tensor's alias, or the output layer tied to the embedding


def normalise(name: str) -> str:
    """The name without wrapper prefixes (and PEFT's ``.base_layer``)."""
    changed = True
    while changed:
        changed = False
        for p in WRAPPER_PREFIXES:
            if name.startswith(p) and len(name) > len(p):
                name, changed = name[len(p):], True
    for infix in WRAPPER_INFIXES:
        name = name.replace(infix, ".")
    return name


@dataclass(frozen=True)
class Entry:
    """One checkpoint's side of a row."""

    layer: Layer | None  # None when the checkpoint has no such layer
    state: str  # SAME, TRANSPOSED, SHAPE_MISMATCH, MISSING or TIED
    note: str = ""

    @property
    def name(self) -> str | None:
        return self.layer.name if self.layer is not None else None


@dataclass(frozen=True)
class MatchRow:
    key: str  # the normalised name
    entries: tuple[Entry, ...]  # one per checkpoint, in the checkpoints' order
    rule: str  # "name", "suffix" or "tied-alias": how the names were paired
    warnings: tuple[str, ...] = ()

    @property
    def status(self) -> str:
        """The row as a whole: the most important difference among its entries."""
        states = {e.state for e in self.entries}
        for s in (MISSING, SHAPE_MISMATCH, TIED, TRANSPOSED):
            if s in states:
                return "only_in" if s == MISSING else s
        return "matched"

    @property
    def comparable(self) -> bool:
        """Every entry is present with a matrix of the same shape (or transposed): a delta can be
        taken. Rows where every entry is a tied alias repeat another row, and are not."""
        return (all(e.layer is not None and e.layer.analysable and e.state in (SAME, TRANSPOSED, TIED)
                    for e in self.entries) and any(e.state != TIED for e in self.entries))


@dataclass(frozen=True)
class MatchTable:
    labels: tuple[str, ...]
    rows: tuple[MatchRow, ...]

    def summary(self) -> dict:
        """Counts and keys per status (the JSON's "match" object and the CLI's first lines)."""
        missing = {label: [r.key for r in self.rows if r.entries[i].state == MISSING]
                   for i, label in enumerate(self.labels)}
        return {
            "rules": dict(Counter(r.rule for r in self.rows)),
            "rows": len(self.rows),
            "matched": sum(r.status == "matched" for r in self.rows),
            "transposed": [r.key for r in self.rows if r.status == TRANSPOSED],
            "tied": [r.key for r in self.rows if r.status == TIED],
            "shape_mismatch": [r.key for r in self.rows if r.status == SHAPE_MISMATCH],
            "missing_from": {label: keys for label, keys in missing.items() if keys},
            "dtype_differs": [r.key for r in self.rows if any(w.startswith("dtype") for w in r.warnings)],
        }

    def summary_lines(self) -> list[str]:
        s = self.summary()
        lines = [f"{s['rows']} layers: {s['matched']} matched in all {len(self.labels)} checkpoints"]
        for what in ("transposed", "tied", "shape_mismatch", "dtype_differs"):
            if s[what]:
                lines.append(f"{what.replace('_', ' ')}: {len(s[what])} ({_few(s[what])})")
        for label, keys in s["missing_from"].items():
            lines.append(f"not in {label}: {len(keys)} ({_few(keys)})")
        if s["rules"].get("suffix"):
            lines.append(f"paired by a unique name suffix: {s['rules']['suffix']}")
        return lines


def _few(names: Sequence[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f", … {len(names) - n} more" if len(names) > n else "")


def labels_for(ckpts: Sequence[Checkpoint]) -> tuple[str, ...]:
    """Short, distinct labels: the file or folder names, made unique with their parents."""
    labels = [c.path.name for c in ckpts]
    for depth in range(2, 6):
        if len(set(labels)) == len(labels):
            break
        labels = ["/".join(c.path.resolve().parts[-depth:]) for c in ckpts]
    if len(set(labels)) != len(labels):
        labels = [f"{i}:{label}" for i, label in enumerate(labels)]
    return tuple(labels)


def _normalised_names(ckpt: Checkpoint) -> dict[str, Layer]:
    """Normalised name → layer. Where stripping would merge two names, both keep their full name."""
    norm = [(normalise(l.name), l) for l in ckpt.layers]
    counts = Counter(n for n, _ in norm)
    return {(n if counts[n] == 1 else l.name): l for n, l in norm}


def _suffix_pairs(left: list[str], right: list[str]) -> dict[str, str]:
    """Pairs (a, b) where one is the other with extra leading components, unique both ways."""
    def candidates(name: str, pool: list[str]) -> list[str]:
        return [o for o in pool if o.endswith("." + name) or name.endswith("." + o)]

    pairs = {}
    for a in left:
        found = candidates(a, right)
        if len(found) == 1 and candidates(found[0], left) == [a]:
            pairs[a] = found[0]
    return pairs


TIED_REASON = "tied: the same tensor as "


def _entry(ckpt: Checkpoint, ref: Layer, layer: Layer | None, how: str = "") -> Entry:
    if layer is None:
        return Entry(None, MISSING)
    if layer.reason and layer.reason.startswith(TIED_REASON):  # stands for the tensor it aliases
        target = layer.reason[len(TIED_REASON):]
        return Entry(ckpt.layer(target) if target in ckpt.tensors else layer, TIED, layer.reason)
    if how == "alias":
        return Entry(layer, TIED, f"not stored: the output layer is tied to {layer.name}")
    if layer.shape == ref.shape:
        return Entry(layer, SAME)
    if len(layer.shape) == 2 and layer.shape == ref.shape[::-1] and layer.shape[0] != layer.shape[1]:
        return Entry(layer, TRANSPOSED, f"stored transposed ({'×'.join(map(str, layer.shape))}); compared as Wᵀ")
    diff = ""
    if len(layer.shape) == len(ref.shape) == 2:
        dr, dc = layer.shape[0] - ref.shape[0], layer.shape[1] - ref.shape[1]
        diff = " (" + ", ".join(f"{what} {d:+d}" for what, d in (("rows", dr), ("columns", dc)) if d) + ")"
    return Entry(layer, SHAPE_MISMATCH, f"shape {'×'.join(map(str, layer.shape))} vs "
                                        f"{'×'.join(map(str, ref.shape))}{diff}")


def match_layers(ckpts: Sequence[Checkpoint], labels: Sequence[str] | None = None) -> MatchTable:
    """Rows in the first checkpoint's order (then the names only later checkpoints hold)."""
    labels = tuple(labels) if labels is not None else labels_for(ckpts)
    names = [_normalised_names(c) for c in ckpts]
    keys: list[str] = []
    for table in names:
        keys += [k for k in table if k not in set(keys)]
    # Key → per-checkpoint (layer, how it was found); exact names first.
    found: dict[str, list[tuple[Layer | None, str]]] = {
        k: [(table.get(k), "name" if k in table else "") for table in names] for k in keys}
    # Then unique suffixes: a name only checkpoint i holds, against one that i lacks. Last
    # checkpoint first, so that a row keeps the name the earliest checkpoint gives it.
    for i in reversed(range(len(ckpts))):
        loose = [k for k in keys if found[k][i][0] is None and any(l is not None for l, _ in found[k])]
        orphans = [k for k in keys if found[k][i][0] is not None
                   and all(l is None for j, (l, _) in enumerate(found[k]) if j != i)]
        for k, other in _suffix_pairs(loose, orphans).items():
            found[k][i] = (found[other][i][0], "suffix")
            found[other][i] = (None, "")
    # Then an untied output layer against a checkpoint that stores only the tied embedding.
    for i, table in enumerate(names):
        emb = [k for k in table if any(k == e or k.endswith("." + e) for e in EMBEDDINGS)]
        for k in keys:
            if k in OUTPUT_LAYERS and found[k][i][0] is None and len(emb) == 1:
                found[k][i] = (table[emb[0]], "alias")
    rows = []
    for k in keys:
        got = found[k]
        first = next((i for i, (l, _) in enumerate(got) if l is not None), None)
        if first is None:
            continue  # paired away by suffix into another row
        ref = _entry(ckpts[first], got[first][0], got[first][0]).layer  # a tied alias stands for its target
        entries = tuple(_entry(c, ref, l, how) for c, (l, how) in zip(ckpts, got))
        hows = {how for _, how in got}
        rule = "tied-alias" if "alias" in hows else "suffix" if "suffix" in hows else "name"
        dtypes = sorted({e.layer.dtype for e in entries if e.layer is not None})
        warnings = (f"dtype differs ({' vs '.join(dtypes)}): part of any difference is rounding",) \
            if len(dtypes) > 1 else ()
        rows.append(MatchRow(k, entries, rule, warnings))
    return MatchTable(labels, tuple(rows))
