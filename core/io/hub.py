"""Models where users keep them: ``org/name[@revision]`` found in the local Hugging Face hub cache.

The cache's documented layout is read directly (``<cache>/models--org--name/refs/<ref>`` holds a
commit hash; ``snapshots/<hash>/`` holds the files, as links into ``blobs/``), so nothing here can
reach the network whatever ``HF_HUB_OFFLINE`` says, and the base install needs no
``huggingface_hub`` (it is only a dependency of the [hf] extra). The cache folder is
``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub`` — the library's own rule.
"""
from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from core.errors import CheckpointError

# org/name with Hugging Face's allowed characters, and an optional @revision (a ref or a commit).
REPO_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<rev>[\w./-]+))?$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")


def hub_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def repo_folder_name(repo: str) -> str:
    return "models--" + repo.replace("/", "--")


@dataclass(frozen=True)
class CachedModel:
    repo: str  # org/name
    revision: str  # the ref it is known by (main), or the commit when no ref points at it
    commit: str
    path: Path  # the snapshot folder
    size: int  # bytes on disk of the repository's blobs

    @property
    def label(self) -> str:
        return f"{self.repo}@{self.revision}" if self.revision != "main" else self.repo


def _refs(folder: Path) -> dict[str, str]:
    """ref name → commit, from ``refs/`` (refs may be nested: refs/pr/1)."""
    out = {}
    refs = folder / "refs"
    for f in sorted(refs.rglob("*")) if refs.is_dir() else ():
        if f.is_file():
            try:
                out[f.relative_to(refs).as_posix()] = f.read_text().strip()
            except OSError:
                continue
    return out


def _size(folder: Path) -> int:
    total = 0
    for f in (folder / "blobs").iterdir() if (folder / "blobs").is_dir() else ():
        try:
            total += f.stat().st_size
        except OSError:
            continue
    return total


def cached_models(cache: Path | None = None) -> list[CachedModel]:
    """Every model snapshot in the cache (one per ref, and snapshots no ref names), by name."""
    cache = hub_cache_dir() if cache is None else cache
    out = []
    try:
        folders = sorted(p for p in cache.iterdir() if p.name.startswith("models--") and p.is_dir())
    except OSError:
        return []
    for folder in folders:
        repo = folder.name.removeprefix("models--").replace("--", "/", 1)
        refs, size = _refs(folder), _size(folder)
        named = set()
        for ref, commit in refs.items():
            if (folder / "snapshots" / commit).is_dir():
                out.append(CachedModel(repo, ref, commit, folder / "snapshots" / commit, size))
                named.add(commit)
        snaps = folder / "snapshots"
        for snap in sorted(snaps.iterdir()) if snaps.is_dir() else ():
            if snap.name not in named and snap.is_dir():
                out.append(CachedModel(repo, snap.name, snap.name, snap, size))
    return out


def resolve(text: str, cache: Path | None = None) -> Path:
    """The snapshot folder of ``org/name[@revision]`` in the local cache; CheckpointError (exit 3)
    naming the closest cached repositories, or the cached revisions, when it is not there."""
    m = REPO_ID.match(text)
    if m is None:
        raise ValueError(f"{text!r} is not a repository id")
    repo, rev = m.group("repo"), m.group("rev") or "main"
    cache = hub_cache_dir() if cache is None else cache
    folder = cache / repo_folder_name(repo)
    what = f"{repo} (Hugging Face cache {cache})"
    if not folder.is_dir():
        try:
            names = [p.name.removeprefix("models--").replace("--", "/", 1) for p in cache.iterdir()
                     if p.name.startswith("models--")]
        except PermissionError:
            raise CheckpointError(cache, "permission denied reading the Hugging Face cache",
                                  "check the folder's permissions, or set HF_HUB_CACHE to a cache you can "
                                  "read") from None
        except OSError:
            names = []
        close = difflib.get_close_matches(repo, names, n=3, cutoff=0.4)
        hint = f"closest cached: {', '.join(close)}" if close else \
            "nothing close is cached" if names else "the cache is empty or missing"
        raise CheckpointError(Path(text), f"no such file or folder, and {repo} is not in the Hugging Face cache "
                              f"{cache} ({hint})", "download it first (e.g. `hf download " + repo + "`), or give "
                              "its path; rmt-tui never downloads")
    refs = _refs(folder)
    commit = refs.get(rev)
    if commit is None and COMMIT.match(rev):
        commit = rev
    snapshot = folder / "snapshots" / commit if commit else None
    if snapshot is None or not snapshot.is_dir():
        snaps = folder / "snapshots"
        cached = sorted(set(refs) | ({p.name for p in snaps.iterdir()} if snaps.is_dir() else set()))
        raise CheckpointError(Path(text), f"revision {rev!r} of {what} is not cached "
                              f"(cached: {', '.join(cached) or 'none'})",
                              "use one of the cached revisions, or download this one first")
    dangling = [f.name for f in snapshot.iterdir() if f.is_symlink() and not f.exists()]
    if dangling:
        raise CheckpointError(snapshot, f"the cached snapshot's {dangling[0]} links to a file that is not there "
                              f"(in {folder / 'blobs'})", "the download was interrupted or the cache was pruned: "
                              "download the model again")
    return snapshot


def locate(path: str | Path) -> Path:
    """``path`` itself when it exists, or does not read as a repository id (no single slash, or a
    weight file's suffix: ``models/m.safetensors`` is a missing file, not a repository); else the
    snapshot folder of the cached repository it names."""
    from core.io.detect import WEIGHT_SUFFIXES

    p = Path(path).expanduser()
    if p.exists() or REPO_ID.match(str(path)) is None or str(path).split("@")[0].endswith(WEIGHT_SUFFIXES):
        return p
    return resolve(str(path))
