"""Models from the local Hugging Face cache by name (org/name[@revision]): found by the documented
layout, never downloaded (a socket guard proves no connection is tried), and every miss is exit 3
naming what is cached."""
import json
import os
import shutil
import socket

import pytest

from core.io.checkpoint import open_checkpoint
from core.io.hub import cached_models, hub_cache_dir, locate
from core.paths import DEMO_DIR

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OLDER = "fedcba9876543210fedcba9876543210fedcba98"


def cache_with_tiny_lm(root):
    """A hub cache holding the tiny demo LM as test-org/tiny-llama, as huggingface_hub lays it out:
    blobs by hash, snapshot files as relative links to them, refs/main naming the commit; and an
    older snapshot no ref names."""
    repo = root / "models--test-org--tiny-llama"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    for commit in (COMMIT, OLDER):
        snap = repo / "snapshots" / commit
        snap.mkdir(parents=True)
        for f in sorted((DEMO_DIR / "tiny-llama").iterdir()):
            blob = repo / "blobs" / f"{f.name}-blob"
            if not blob.exists():
                (repo / "blobs").mkdir(exist_ok=True)
                shutil.copyfile(f, blob)
            (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    (root / "models--other-org--bert-base").mkdir()
    return repo


@pytest.fixture
def hub(tmp_path, monkeypatch):
    root = tmp_path / "hub"
    cache_with_tiny_lm(root)
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # whatever it says, nothing is downloaded
    monkeypatch.chdir(tmp_path)

    def no_network(*a, **k):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    return root


def test_the_cache_folder_follows_the_library_rule(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert hub_cache_dir() == tmp_path / "hf" / "hub"
    monkeypatch.delenv("HF_HOME")
    assert hub_cache_dir().parts[-3:] == (".cache", "huggingface", "hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "c"))
    assert hub_cache_dir() == tmp_path / "c"


@pytest.mark.parametrize("name, commit", [("test-org/tiny-llama", COMMIT), ("test-org/tiny-llama@main", COMMIT),
                                          (f"test-org/tiny-llama@{OLDER}", OLDER)])
def test_a_cached_model_opens_by_name_and_revision(hub, name, commit):
    ck = open_checkpoint(name)
    assert ck.path == hub / "models--test-org--tiny-llama" / "snapshots" / commit
    assert [l.name for l in ck.layers] == [l.name for l in open_checkpoint(DEMO_DIR / "tiny-llama").layers]


def test_every_command_takes_a_repo_id(hub, cli):
    code, out, err = cli("report", "test-org/tiny-llama", "--format", "json", "--no-cache")
    assert code == 0, err
    assert json.loads(out)["checkpoint"].endswith(f"snapshots/{COMMIT}")
    code, out, err = cli("eval", "test-org/tiny-llama", "--layers", "model.layers.0.mlp.up_proj.weight",
                         "--format", "json", "--no-cache")
    assert code == 0 and json.loads(out)["evaluator"] == "hf-causal-lm", err
    code, out, err = cli("compare", "test-org/tiny-llama", f"test-org/tiny-llama@{OLDER}", "--format", "json",
                         "--no-cache")
    assert code == 0, err


@pytest.mark.parametrize("name, message", [
    ("test-org/tiny-lama", "not in the Hugging Face cache"),
    ("test-org/tiny-lama", "closest cached: test-org/tiny-llama"),
    ("test-org/tiny-lama", "rmt-tui never downloads"),
    ("nobody/nothing", "nothing close is cached"),
    ("test-org/tiny-llama@v2", "revision 'v2' of test-org/tiny-llama"),
    ("test-org/tiny-llama@v2", f"cached: {COMMIT}, {OLDER}, main"),
])
def test_a_miss_is_exit_3_naming_what_is_cached(hub, cli, name, message):
    code, out, err = cli("report", name)
    assert code == 3 and out == "" and message in err


def test_a_snapshot_link_that_points_nowhere_is_named(hub, cli):
    blob = hub / "models--test-org--tiny-llama" / "blobs" / "config.json-blob"
    blob.unlink()
    code, _, err = cli("report", "test-org/tiny-llama")
    assert code == 3 and "config.json links to a file that is not there" in err and "download the model again" in err


def test_an_unreadable_cache_is_exit_3_with_the_path(hub, cli, monkeypatch):
    """As root every folder is readable, so the refusal a user without permission gets is simulated
    where the cache is listed."""
    from pathlib import Path

    real = Path.iterdir

    def iterdir(self):
        if self == hub:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    code, _, err = cli("report", "test-org/other")
    assert code == 3 and "permission denied reading the Hugging Face cache" in err and str(hub) in err


def test_a_path_stays_a_path(hub, tmp_path, cli):
    (tmp_path / "test-org").mkdir()
    shutil.copytree(DEMO_DIR / "tiny-llama", tmp_path / "test-org" / "tiny-llama")
    assert locate("test-org/tiny-llama").resolve() == tmp_path / "test-org" / "tiny-llama"  # a folder here wins
    code, _, err = cli("report", "models/missing.safetensors")  # a weight file's name is never a repo id
    assert code == 3 and "no such file or folder" in err and "Hugging Face cache" not in err


def test_cached_models_are_listed_with_revision_and_size(hub):
    models = cached_models()
    assert [(m.repo, m.revision) for m in models] == [("test-org/tiny-llama", "main"), ("test-org/tiny-llama", OLDER)]
    assert models[0].size == sum(f.stat().st_size for f in (DEMO_DIR / "tiny-llama").iterdir())
    assert models[0].label == "test-org/tiny-llama" and models[1].label.endswith(f"@{OLDER}")


async def test_the_open_dialog_lists_cached_models_and_opens_one(hub):
    from helpers import settle
    from textual.widgets import OptionList

    from rmt_tui.app import RmtApp
    from rmt_tui.engine import InlineEngine
    from rmt_tui.screens import OpenScreen

    app = RmtApp([DEMO_DIR / "mlp_bs16.safetensors"], engine=InlineEngine())
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("o")
        await pilot.pause()
        assert isinstance(app.screen, OpenScreen)
        listed = app.screen.query_one("#cached", OptionList)
        assert [listed.get_option_at_index(i).id for i in range(listed.option_count)] == [
            "test-org/tiny-llama", f"test-org/tiny-llama@{OLDER}"]
        assert str(listed.get_option_at_index(0).prompt).endswith(" MB")  # the size on disk
        await pilot.press("down", "enter")
        await settle(app, pilot, rounds=2)
        assert not isinstance(app.screen, OpenScreen)
        assert [o.path.name for o in app.session.opened] == ["mlp_bs16.safetensors", "tiny-llama"]
        assert app.session.opened[1].ckpt.path.parent.name == "snapshots"
