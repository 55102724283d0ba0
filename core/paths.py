"""Where the project's files live (the bundled demo models, the on-disk cache) and how outputs
are written (atomically, never half a file, never over an existing file unless asked)."""
from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.errors import OutputExistsError, OutputWriteError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = Path(os.environ.get("RMT_TUI_DEMO_DIR", REPO_ROOT / "demo_models"))
DEFAULT_DEMO_MODEL = DEMO_DIR / "mlp_bs16.safetensors"

TMP_SUFFIX = ".tmp"


def cache_dir() -> Path:
    """$RMT_TUI_CACHE_DIR, else $XDG_CACHE_HOME/rmt-tui, else ~/.cache/rmt-tui."""
    if env := os.environ.get("RMT_TUI_CACHE_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rmt-tui"


def _temp_name(stem: str) -> str:
    # The writer's PID is in the name, so a later run can tell the leftovers of a killed writer
    # (SIGKILL runs no cleanup) from the files of a writer that is still at work.
    return f".{stem}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temps(folder: Path, stem: str | None = None) -> int:
    """Remove the temporary files that writers which no longer run left in ``folder`` (all of
    them, or those for outputs named ``stem``). Returns how many were removed."""
    removed = 0
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    for name in names:
        if not (name.startswith(".") and name.endswith(TMP_SUFFIX)):
            continue
        parts = name[1:-len(TMP_SUFFIX)].rsplit(".", 2)
        if len(parts) != 3 or not parts[1].isdigit() or (stem is not None and parts[0] != stem):
            continue
        if int(parts[1]) != os.getpid() and not _pid_alive(int(parts[1])):
            try:
                os.unlink(folder / name)
                removed += 1
            except OSError:
                pass
    return removed


@contextmanager
def atomic_output(path: Path, overwrite: bool = True, tmp_dir: Path | None = None) -> Iterator[Path]:
    """A temporary path to write to (beside ``path``, or in ``tmp_dir`` on the same file system).
    When the block ends without an error it becomes ``path`` in one step; otherwise it is removed,
    so no reader ever sees half a file. With ``overwrite=False`` an existing ``path`` is never
    replaced, even one created by someone else while this was being written (FileExistsError)."""
    folder = tmp_dir or path.parent
    folder.mkdir(parents=True, exist_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder / _temp_name(path.name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.close(fd)
    try:
        yield tmp
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails when path exists: no window in which it could be clobbered
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):  # no hard links here
                    raise
                if path.exists():
                    raise FileExistsError(errno.EEXIST, "File exists", str(path)) from None
                os.replace(tmp, path)
            tmp.unlink(missing_ok=True)
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise


def refuse_existing(path: Path, overwrite: bool, sources=(), folder: bool = False) -> None:
    """Before any work, every reason an output cannot be written there: a parent that is a file; an
    existing output without ``overwrite``; with it, anything but a regular file (or a folder, for a
    folder output) — a device, a FIFO — is never replaced; and an output that is one of ``sources``
    under another name (a hard or symbolic link) is refused."""
    import stat

    from core.errors import UsageError

    path = Path(path)
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputWriteError(f"{path}: cannot be written — {parent} is a file, not a folder; nothing was "
                                       "written")
            break
    if not (path.exists() or path.is_symlink()):
        return
    for src in sources:
        try:
            same = os.path.samefile(path, src)
        except OSError:
            same = False
        if same:
            raise UsageError(f"{path}: is the source {src} (under another name: a hard or symbolic link) — "
                             "refusing to write over a source checkpoint; choose another path")
    if not overwrite:
        raise OutputExistsError(f"{path}: already exists — choose another output path or pass --force to replace it")
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise OutputWriteError(f"{path}: cannot be checked ({exc.strerror or exc}) — nothing was written") from None
    if not (stat.S_ISREG(mode) or (folder and stat.S_ISDIR(mode))):
        kind = "a folder" if stat.S_ISDIR(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else \
            "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file"
        raise OutputWriteError(f"{path}: is {kind} — only a regular file is ever replaced, --force included; "
                               "nothing was written; choose another path")


@contextmanager
def output_errors(path: Path, also: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Around an ``atomic_output`` write: the failures, as the typed errors every output reports —
    someone created the file meanwhile (OutputExistsError), or it cannot be written (disk full,
    read-only, permissions: OutputWriteError; ``also``: a writer library's own error types)."""
    try:
        yield
    except FileExistsError:
        raise OutputExistsError(f"{path}: was created while this was being written — nothing was replaced; "
                                "choose another output path or pass --force") from None
    except (OSError, *also) as exc:
        why = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[-1]
        raise OutputWriteError(f"{path}: cannot be written ({why}) — nothing was written; free some space, or "
                               "choose a folder you can write to") from None


def write_text_output(path: str | Path, text: str, overwrite: bool = False) -> Path:
    """A small output file (JSON), written atomically; never over an existing file unless asked.
    Failures end in OutputExistsError / OutputWriteError with nothing left behind."""
    path = Path(path)
    refuse_existing(path, overwrite)
    with output_errors(path), atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text(text)
    return path
