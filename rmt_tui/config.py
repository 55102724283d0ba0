"""Settings from config files, below the command line: the system file(s) ($XDG_CONFIG_DIRS, else
/etc/xdg: rmt-tui/config.toml), then the user's ($XDG_CONFIG_HOME, else ~/.config:
rmt-tui/config.toml), then ``--config FILE``; a later one wins, and flags win over all.

    [defaults]          # any option the commands take, under its flag's name
    methods = ["bema", "screenot"]
    device = "cuda"
    screenot-k = 20
    [keymap]            # binding ids (as the help lists them) → keys, through Textual's keymap
    quit = "ctrl+q"
    [app]
    theme = "nord"      # a theme chosen in the app is written back here

A key no command takes, a value of the wrong type, an unknown binding id or theme is a usage error
(exit 2) naming the file, the key and what is allowed.
"""
from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import UsageError

SECTIONS = ("defaults", "keymap", "app")


def system_files() -> list[Path]:
    dirs = os.environ.get("XDG_CONFIG_DIRS") or "/etc/xdg"
    # XDG lists the most important first; it is read last so that it wins.
    return [Path(d) / "rmt-tui" / "config.toml" for d in reversed(dirs.split(":")) if d]


def user_file() -> Path:
    home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(home) / "rmt-tui" / "config.toml"


@dataclass
class Settings:
    """What the files say, and where each setting came from."""

    defaults: dict[str, Any] = field(default_factory=dict)  # argparse dest → value
    keymap: dict[str, str] = field(default_factory=dict)
    theme: str | None = None
    braille: bool = False  # MP curves drawn in braille dots
    sources: dict[str, str] = field(default_factory=dict)  # "defaults.methods" → the file it came from
    write_to: Path | None = None  # where a theme chosen in the app is written (--config, else the user file)


def _read(path: Path) -> dict:
    import tomllib

    try:
        doc = tomllib.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the config file ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not valid TOML ({exc})") from None
    unknown = [k for k in doc if k not in SECTIONS]
    if unknown:
        raise UsageError(f"{path}: unknown section [{unknown[0]}]; allowed: {', '.join(f'[{s}]' for s in SECTIONS)}")
    for s in SECTIONS:
        if s in doc and not isinstance(doc[s], dict):
            raise UsageError(f"{path}: {s} must be a table ([{s}])")
    return doc


def options_of(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Every optional flag of every command, by its name without dashes (help and version aside)."""
    out: dict[str, argparse.Action] = {}
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for sub in subs:
        for p in sub.choices.values():
            for a in p._actions:
                for flag in a.option_strings:
                    if flag.startswith("--") and a.dest not in ("help", "config"):
                        out.setdefault(flag[2:], a)
    return out


def _convert(path: Path, key: str, value: Any, action: argparse.Action) -> Any:
    """The config value as argparse would have produced it from the flag."""
    def bad(what: str) -> UsageError:
        return UsageError(f"{path}: [defaults] {key} = {value!r}: {what}")

    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise bad("must be true or false")
        return value
    if isinstance(action, argparse._AppendAction):
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) for v in items):
            raise bad("must be a string or a list of strings")
        return items
    if action.dest == "methods" and isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise bad("must be a list of method names")
        value = ",".join(value)
    kind = action.type or str
    if kind in (int, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (
            kind is float or isinstance(value, int))
        if not ok:
            raise bad(f"must be {'an integer' if kind is int else 'a number'}")
        value = kind(value)
    elif kind is Path:
        if not isinstance(value, str):
            raise bad("must be a path (a string)")
        value = Path(value).expanduser()
    elif kind is not str:  # the parser's own converter (--mode, --calibration-tokens): the flag's rules
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise bad("must be a string or an integer")
        try:
            value = kind(str(value))
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise bad(str(exc)) from None
    elif not isinstance(value, str):
        raise bad("must be a string")
    if action.choices is not None and value not in action.choices:
        raise bad(f"must be one of {', '.join(map(str, action.choices))}")
    return value


def load(parser: argparse.ArgumentParser, explicit: Path | None = None) -> Settings:
    """The settings of every file that exists (``explicit`` must), in precedence order."""
    options = options_of(parser)
    s = Settings(write_to=explicit or user_file())
    files = [p for p in system_files() + [user_file()] if p.is_file()]
    if explicit is not None:
        if not explicit.is_file():
            raise UsageError(f"{explicit}: no such config file (--config)")
        files.append(explicit)
    for path in files:
        doc = _read(path)
        for key, value in doc.get("defaults", {}).items():
            name = key.replace("_", "-")
            action = options.get(name)
            if action is None:
                close = [o for o in options if o.startswith(name[:3])][:6] or sorted(options)[:6]
                raise UsageError(f"{path}: [defaults] {key} is not an option of any command (e.g. "
                                 f"{', '.join(close)}; `rmt-tui COMMAND --help` lists them)")
            s.defaults[action.dest] = _convert(path, key, value, action)
            s.sources[f"defaults.{name}"] = str(path)
        keymap = doc.get("keymap", {})
        if keymap:  # the bindings live with the app: Textual is imported only when a file remaps keys
            from .keys import APP_BINDINGS

            binding_ids = {b.id for b in APP_BINDINGS if b.id}
        for key, value in keymap.items():
            if key not in binding_ids:
                raise UsageError(f"{path}: [keymap] {key} is not a binding id; allowed: "
                                 f"{', '.join(sorted(binding_ids))}")
            if not isinstance(value, str) or not value.strip():
                raise UsageError(f"{path}: [keymap] {key} = {value!r}: must be a key name such as \"ctrl+q\" or "
                                 "\"z\" (several: \"z,ctrl+z\")")
            s.keymap[key] = value
            s.sources[f"keymap.{key}"] = str(path)
        for key, value in doc.get("app", {}).items():
            if key == "braille":
                if not isinstance(value, bool):
                    raise UsageError(f"{path}: [app] braille = {value!r}: must be true or false")
                s.braille = value
                s.sources["app.braille"] = str(path)
                continue
            if key != "theme":
                raise UsageError(f"{path}: [app] {key} is not a setting; allowed: theme, braille")
            from textual.theme import BUILTIN_THEMES

            if value not in BUILTIN_THEMES:
                raise UsageError(f"{path}: [app] theme = {value!r}: allowed: {', '.join(BUILTIN_THEMES)}")
            s.theme = value
            s.sources["app.theme"] = str(path)
    return s


def apply(parser: argparse.ArgumentParser, settings: Settings) -> None:
    """Make the files' defaults the parsers' defaults, so that flags still win."""
    for sub in (a for a in parser._actions if isinstance(a, argparse._SubParsersAction)):
        for p in sub.choices.values():
            actions = {a.dest: a for a in p._actions}
            # Only where this command takes the value (report takes --format csv, eval does not).
            p.set_defaults(**{k: v for k, v in settings.defaults.items() if k in actions
                              and (actions[k].choices is None or v in actions[k].choices)})


def write_theme(path: Path, theme: str) -> None:
    """Set [app] theme in ``path``, keeping every other line (comments, keys) as it was; atomic."""
    from core.paths import atomic_output

    text = path.read_text() if path.is_file() else ""
    lines = text.splitlines()
    start = next((i for i, l in enumerate(lines) if re.match(r"\s*\[app\]\s*(#.*)?$", l)), None)
    line = f'theme = "{theme}"'
    if start is None:
        lines += ([""] if lines and lines[-1].strip() else []) + ["[app]", line]
    else:
        end = next((i for i in range(start + 1, len(lines)) if re.match(r"\s*\[", lines[i])), len(lines))
        at = next((i for i in range(start + 1, end) if re.match(r"\s*theme\s*=", lines[i])), None)
        if at is None:
            lines.insert(start + 1, line)
        else:
            comment = re.search(r"\s+#.*$", lines[at])
            lines[at] = line + (comment.group(0) if comment else "")
    with atomic_output(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def describe(parser: argparse.ArgumentParser, settings: Settings, args: argparse.Namespace) -> list[str]:
    """``rmt-tui config``: each setting with its value and where it came from."""
    out = [f"# files read, lowest precedence first: {', '.join(str(p) for p in system_files() + [user_file()])}"
           + (f", {args.config}" if getattr(args, "config", None) else "")]
    options = options_of(parser)
    for name, action in sorted(options.items()):
        if action.dest in ("paths", "path"):
            continue
        value = settings.defaults.get(action.dest, action.default)
        source = settings.sources.get(f"defaults.{name}", "default")
        out.append(f"defaults.{name} = {value!r}  # {source}")
    from .keys import APP_BINDINGS

    for b in APP_BINDINGS:
        if b.id:
            out.append(f"keymap.{b.id} = {settings.keymap.get(b.id, b.key)!r}  # "
                       f"{settings.sources.get(f'keymap.{b.id}', 'default')}")
    out.append(f"app.theme = {settings.theme or 'textual-dark'!r}  # {settings.sources.get('app.theme', 'default')}")
    out.append(f"app.braille = {settings.braille!r}  # {settings.sources.get('app.braille', 'default')}")
    return out
