"""The fault campaign: hostile files and failing machines, each through ``core`` and through the
CLI. Every case ends in a clear error (message, exit code, empty stdout, no temporary file left)
or in correct results — never a traceback, a hang or a partial file. Real conditions are used
where the machine allows them: a FIFO, a full tmpfs, a read-only mount, an immutable folder,
SIGKILL of a real process, processes racing on one cache."""
import contextlib
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import core.memory
from core.errors import CheckpointError, InsufficientMemoryError, OutputWriteError
from core.io.checkpoint import open_checkpoint
from core.paths import DEFAULT_DEMO_MODEL, atomic_output, remove_stale_temps
from core.scan import AnalysisOptions, analyse_checkpoint
from core.text import printable
from core.truncation import export_safetensors
from rmt_tui.cli import EXIT_INPUT, EXIT_MEMORY, EXIT_OK, EXIT_WRITE, main

CLI = [sys.executable, "-m", "rmt_tui.cli"]
FUZZ = settings(max_examples=40, deadline=10_000,  # a deadline here catches hangs, not slowness
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def cli(*args, env=None, timeout=120):
    r = subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **(env or {})})
    assert "Traceback" not in r.stderr, r.stderr
    return r


def refused(r, code, *words):
    """The CLI's answer to bad input: the exit code, nothing on stdout, one message naming it."""
    assert r.returncode == code, r.stderr
    assert r.stdout == ""
    assert r.stderr.startswith("rmt-tui: error: ")
    for w in words:
        assert w in r.stderr, (w, r.stderr)


def temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def planted_file(path: Path, layers=6, m=160, n=120, seed=0) -> Path:
    g = np.random.default_rng(seed)
    sd = {}
    for i in range(layers):
        a, b = np.linalg.qr(g.standard_normal((m, 3)))[0], np.linalg.qr(g.standard_normal((n, 3)))[0]
        w = 0.05 * np.sqrt(m) * (a * [6, 4, 3]) @ b.T + 0.05 * g.standard_normal((m, n))
        sd[f"layers.{i}.weight"] = torch.from_numpy(w.astype(np.float32))
    save_file(sd, str(path))
    return path


# ------------------------------------------------------------------------------------ memory guard


def _bomb_npz(path: Path, shape=(200_000, 200_000)) -> Path:
    """An .npz whose member header declares 149 GB, in a few hundred bytes."""
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"
    header += " " * (63 - (len(header) + 10) % 64) + "\n"
    data = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\0" * 4096
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("w.npy", data)
    return path


def test_npz_header_that_claims_hundreds_of_gb(tmp_path):
    p = _bomb_npz(tmp_path / "bomb.npz")
    with pytest.raises(CheckpointError, match=r"declares float32 \[200000, 200000\] \(149\.0 GB\) but it holds"):
        open_checkpoint(p)
    refused(cli("report", p), EXIT_INPUT, "bomb.npz", "149.0 GB")


def test_memory_guard_refuses_a_real_matrix_that_does_not_fit(tmp_path, monkeypatch, capsys):
    p = planted_file(tmp_path / "m.safetensors", layers=1)
    monkeypatch.setattr(core.memory, "CHECK_ABOVE", 0)
    monkeypatch.setattr(core.memory, "available_bytes", lambda: core.memory.HEADROOM + 50_000)
    ck = open_checkpoint(p)  # listing needs no memory
    with pytest.raises(InsufficientMemoryError, match=r"needs 75\.0 KB of memory and only 48\.8 KB is available"):
        ck.tensor("layers.0.weight")
    with pytest.raises(InsufficientMemoryError, match=r"analysing 'layers\.0\.weight' needs"):
        list(analyse_checkpoint(ck, AnalysisOptions(use_cache=False)))
    assert main(["report", str(p), "--no-cache"]) == EXIT_MEMORY
    out, err = capsys.readouterr()
    assert out == "" and "of memory and only" in err and "more memory" in err


def test_available_memory_is_known_here():
    avail = core.memory.available_bytes()
    assert avail is not None and avail > 0


# ------------------------------------------------------------------------------------ deep pickles


def test_pickle_nested_thousands_of_levels(tmp_path):
    d = inner = {}
    for _ in range(5000):
        inner["a"] = {}
        inner = inner["a"]
    inner["w"] = torch.arange(12.0).reshape(4, 3)
    p = tmp_path / "deep.pt"
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(50_000)  # torch.save pickles recursively
    try:
        torch.save(d, p)
    finally:
        sys.setrecursionlimit(limit)
    ck = open_checkpoint(p)
    (name,) = ck.tensors
    assert name == "a." * 5000 + "w" and torch.equal(ck.tensor(name), inner["w"])
    r = cli("report", p, "--format", "json", "--no-cache")
    assert r.returncode == EXIT_OK and json.loads(r.stdout)["layers"][0]["name"] == name


# ------------------------------------------------------------------------------------ not a regular file


def test_fifo_and_device_are_refused_at_once(tmp_path):
    fifo = tmp_path / "model.pt"
    os.mkfifo(fifo)
    for path, kind in [(fifo, "FIFO"), (Path("/dev/zero"), "device")]:
        with pytest.raises(CheckpointError, match=kind):
            open_checkpoint(path)
        refused(cli("report", path, timeout=60), EXIT_INPUT, kind, "not a checkpoint file")


# ------------------------------------------------------------------------------------ HF index escapes


def _hf_folder(folder: Path, shard_name: str, shard_path: Path | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = shard_path or folder / shard_name
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.randn(8, 6)}, str(target))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": shard_name}}))
    return folder


@pytest.mark.parametrize("case", ["dotdot", "absolute", "symlink"])
def test_index_naming_a_shard_outside_the_folder_is_refused(tmp_path, case):
    outside = tmp_path / "elsewhere" / "secret.safetensors"
    model = tmp_path / "model"
    if case == "dotdot":
        _hf_folder(model, "../elsewhere/secret.safetensors", outside)
    elif case == "absolute":
        _hf_folder(model, str(outside), outside)
    else:
        _hf_folder(model, "model-00001-of-00001.safetensors", outside)
        (model / "model-00001-of-00001.safetensors").symlink_to(outside)
    with pytest.raises(CheckpointError, match="refused: .*outside the model folder"):
        open_checkpoint(model)
    refused(cli("report", model), EXIT_INPUT, "model.safetensors.index.json", "outside the model folder")


def test_hub_cache_snapshot_links_into_blobs_are_followed(tmp_path):
    """The Hugging Face hub cache keeps snapshot files as links into the repository's blobs/."""
    repo = tmp_path / "models--org--name"
    blob = repo / "blobs" / "0123abcd"
    snap = _hf_folder(repo / "snapshots" / "rev1", "model-00001-of-00001.safetensors", blob)
    (snap / "model-00001-of-00001.safetensors").symlink_to(Path("../../blobs/0123abcd"))
    assert list(open_checkpoint(snap).tensors) == ["w"]


# ------------------------------------------------------------------------------------ safetensors regions


def _safetensors_with(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


SAFETENSORS_CASES = {
    "overlap": ({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
                 "b": {"dtype": "F32", "shape": [2, 2], "data_offsets": [8, 24]}}, 24, "overlaps the one before it"),
    "gap": ({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
             "b": {"dtype": "F32", "shape": [2, 2], "data_offsets": [24, 40]}}, 40, "leaves a gap of 8 bytes"),
    "trailing": ({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}, 32,
                 "cover 16 bytes of data but the file holds 32"),
    "same region twice": ({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
                           "b": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}, 16, "overlaps"),
}


@pytest.mark.parametrize("case", list(SAFETENSORS_CASES))
def test_safetensors_regions_must_tile_the_data(tmp_path, case):
    header, size, message = SAFETENSORS_CASES[case]
    p = tmp_path / "r.safetensors"
    p.write_bytes(_safetensors_with(header, b"\0" * size))
    with pytest.raises(CheckpointError, match="corrupt safetensors header"):
        open_checkpoint(p)
    refused(cli("report", p), EXIT_INPUT, message)


def test_safetensors_header_over_the_format_limit(tmp_path):
    p = tmp_path / "big-header.safetensors"
    with open(p, "wb") as f:  # a sparse file: the header length is believable, the file is not
        f.write(struct.pack("<Q", 100_000_001) + b"{")
        f.truncate(8 + 100_000_001 + 16)
    refused(cli("report", p), EXIT_INPUT, "more than the format's 95.4 MB limit")


# ------------------------------------------------------------------------------------ full, read-only, unwritable


@contextlib.contextmanager
def mounted(tmp_path: Path, name: str, options: str, source: Path | None = None):
    """A real tmpfs (or a read-only bind mount of ``source``), unmounted afterwards."""
    where = tmp_path / name
    where.mkdir()
    args = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)] if source is None else \
        ["mount", "--bind", "-o", options, str(source), str(where)]
    if subprocess.run(args, capture_output=True).returncode != 0:
        pytest.skip("this machine does not allow mounting a file system (not root?)")
    try:
        if source is not None and "ro" in options.split(","):  # older kernels ignore ro on the first bind
            subprocess.run(["mount", "-o", "remount,bind,ro", str(where)], check=True)
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@contextlib.contextmanager
def immutable(folder: Path):
    """A folder nobody (root included) may create files in."""
    folder.mkdir(exist_ok=True)
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported here")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=False)


@contextlib.contextmanager
def unwritable(tmp_path: Path, how: str):
    if how == "disk full":
        with mounted(tmp_path, "small", "size=256k") as where:
            with open(where / ".filler", "wb", buffering=0) as f, contextlib.suppress(OSError):
                while f.write(b"\0" * 4096):  # to the last byte
                    pass
            yield where, "No space left on device"
    elif how == "read-only":
        (tmp_path / "ro-src").mkdir()
        with mounted(tmp_path, "ro", "ro", source=tmp_path / "ro-src") as where:
            yield where, "Read-only file system"
    else:
        with immutable(tmp_path / "locked") as where:
            yield where, "Operation not permitted"


def _visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != ".filler")


@pytest.mark.parametrize("how", ["disk full", "read-only", "unwritable folder"])
def test_export_that_cannot_be_written(tmp_path, how):
    with unwritable(tmp_path, how) as (where, why):
        out = where / "t.safetensors"
        r = cli("truncate", DEFAULT_DEMO_MODEL, "--method", "bema", "-o", out)
        refused(r, EXIT_WRITE, str(out), why, "nothing was written")
        assert _visible(where) == []  # no partial file, no temporary file
        with pytest.raises(OutputWriteError, match=why):
            export_safetensors({"w": torch.zeros(300, 300)}, out, {})
        assert _visible(where) == []


@pytest.mark.parametrize("how", ["disk full", "read-only", "unwritable folder"])
def test_cache_that_cannot_be_written_warns_once_and_the_analysis_finishes(tmp_path, how):
    p = planted_file(tmp_path / "m.safetensors")
    expected = cli("report", p, "--format", "json", "--no-cache").stdout
    with unwritable(tmp_path, how) as (where, why):
        r = cli("report", p, "--format", "json", env={"RMT_TUI_CACHE_DIR": str(where / "cache")})
        assert r.returncode == EXIT_OK and r.stdout == expected
        warnings = [line for line in r.stderr.splitlines() if line.startswith("rmt-tui: warning:")]
        assert len(warnings) == 1 and "cannot be written" in warnings[0] and why in warnings[0], r.stderr
        assert temps(where) == []


# ------------------------------------------------------------------------------------ SIGKILL and races


def _kill_midway(args, env, delays):
    """Start the CLI again and again, SIGKILLing it after each delay; returns how many runs it
    did not finish."""
    killed = 0
    for delay in delays:
        proc = subprocess.Popen(CLI + [str(a) for a in args], env={**os.environ, **env},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait()
    return killed


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_sigkill_during_analysis_leaves_a_consistent_cache(tmp_path):
    p = planted_file(tmp_path / "m.safetensors", layers=120, m=300, n=200)  # ~1.5 s of analysis
    env = {"RMT_TUI_CACHE_DIR": str(tmp_path / "cache")}
    expected = cli("report", p, "--format", "json", "--no-cache").stdout
    assert _kill_midway(["report", p, "--format", "json"], env, [0.4, 0.6, 0.8, 1.0, 1.2]) >= 1
    # A writer killed between creating and renaming a temporary file leaves it behind; plant one
    # with a dead writer's PID, as SIGKILL would, beside whatever the kills above left.
    (tmp_path / "cache" / "spectra" / "tmp").mkdir(parents=True, exist_ok=True)
    (tmp_path / "cache" / "spectra" / "tmp" / f".x.f64.{_dead_pid()}.0badc0de.tmp").write_bytes(b"half")
    assert cli("report", p, "--format", "json", env=env).stdout == expected
    assert temps(tmp_path / "cache") == []
    assert cli("report", p, "--format", "json", env=env).stdout == expected  # now all from the cache


def test_processes_racing_on_one_cache_agree(tmp_path):
    p = planted_file(tmp_path / "m.safetensors", layers=12, m=300, n=200)
    env = {**os.environ, "RMT_TUI_CACHE_DIR": str(tmp_path / "cache")}
    expected = cli("report", p, "--format", "json", "--no-cache").stdout
    procs = [subprocess.Popen(CLI + ["report", str(p), "--format", "json"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [proc.communicate(timeout=300) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), [o[1] for o in outs]
    assert [o[0] for o in outs] == [expected] * 3
    assert cli("report", p, "--format", "json", env=env).stdout == expected
    assert temps(tmp_path / "cache") == []


def test_sigkill_during_export_leaves_no_partial_output(tmp_path):
    out = tmp_path / "out" / "t.safetensors"
    out.parent.mkdir()
    _kill_midway(["truncate", DEFAULT_DEMO_MODEL, "--method", "rank:20", "-o", out, "--no-cache"], {},
                 [0.8, 1.2, 1.6, 2.0, 2.4, 2.8])
    if out.exists():  # a run finished: then its file is whole
        assert set(load_file(str(out))) == set(open_checkpoint(DEFAULT_DEMO_MODEL).tensors)
    (out.parent / f".t.safetensors.{_dead_pid()}.0badc0de.tmp").write_bytes(b"half")  # as SIGKILL leaves
    r = cli("truncate", DEFAULT_DEMO_MODEL, "--method", "rank:20", "-o", out, "--force", "--no-cache")
    assert r.returncode == EXIT_OK, r.stderr
    assert [p.name for p in out.parent.iterdir()] == ["t.safetensors"]
    assert set(load_file(str(out))) == set(open_checkpoint(DEFAULT_DEMO_MODEL).tensors)


def test_atomic_output_never_replaces_a_file_created_meanwhile(tmp_path):
    target = tmp_path / "o.bin"
    with pytest.raises(FileExistsError):
        with atomic_output(target, overwrite=False) as tmp:
            tmp.write_bytes(b"mine")
            target.write_bytes(b"theirs")  # someone else got there first
    assert target.read_bytes() == b"theirs" and temps(tmp_path) == []


def test_only_dead_writers_temporary_files_are_removed(tmp_path):
    live = tmp_path / f".o.bin.{os.getppid()}.00000000.tmp"
    dead = tmp_path / f".o.bin.{_dead_pid()}.00000000.tmp"
    other = tmp_path / ".unrelated.tmp"
    for f in (live, dead, other):
        f.write_bytes(b"")
    assert remove_stale_temps(tmp_path) == 1
    assert live.exists() and other.exists() and not dead.exists()


# ------------------------------------------------------------------------------------ names with escapes

HOSTILE_NAMES = ["evil\x1b[2J\x1b[31m.weight", "bell\x07.weight", "[bold]markup[/bold].weight", "rtl\u202eexe.weight",
                 "csi\x9b31m.weight"]


def _hostile_names_file(path: Path) -> Path:
    g = torch.Generator().manual_seed(0)
    save_file({n: torch.randn(40, 32, generator=g) for n in HOSTILE_NAMES}, str(path))
    return path


def _raw_controls(text: str) -> list[str]:
    return [c for c in text if c in "\x1b\x07\x9b\u202e"]


def test_control_characters_never_reach_the_terminal_from_the_cli(tmp_path):
    p = _hostile_names_file(tmp_path / "names.safetensors")
    table = cli("report", p, "--no-cache", env={"COLUMNS": "200"})
    assert table.returncode == 0 and _raw_controls(table.stdout + table.stderr) == []
    assert "\\x1b[2J" in table.stdout and "[bold]markup[/bold]" in table.stdout  # shown, escaped, not obeyed
    doc = json.loads(cli("report", p, "--format", "json", "--no-cache").stdout)
    assert sorted(layer["name"] for layer in doc["layers"]) == sorted(HOSTILE_NAMES)  # JSON: the exact names
    err = cli("sweep", p, "--layer", HOSTILE_NAMES[0], "--evaluator", "no_such_module:evaluate")
    assert _raw_controls(err.stderr) == []


async def test_control_characters_never_reach_the_terminal_from_the_app(tmp_path):
    from rich.console import Console

    from rmt_tui.app import RmtApp
    from rmt_tui.engine import InlineEngine
    from rmt_tui.panel import ResultsPanel
    from rmt_tui.widgets import LayerTree

    def plain(renderable) -> str:
        console = Console(width=100, file=io.StringIO(), color_system=None)
        console.print(renderable)
        return console.file.getvalue()

    app = RmtApp([_hostile_names_file(tmp_path / "names.safetensors")], engine=InlineEngine())
    async with app.run_test(size=(120, 40)) as pilot:
        tree = app.query_one(LayerTree)
        for key in list(tree.leaves):
            tree.reveal(key)
            await pilot.pause()
            await app.workers.wait_for_complete()
            await pilot.pause()
            panel = plain(app.query_one(ResultsPanel).content)
            assert _raw_controls(panel) == [] and printable(key.name) in panel and "ŝ" in panel
        nodes, labels = [tree.root], []
        while nodes:  # groups (the dotted prefixes) and leaves alike
            node = nodes.pop()
            nodes.extend(node.children)
            labels.append(plain(node.label))
        assert all(_raw_controls(label) == [] for label in labels)
        assert any("evil\\x1b[2J\\x1b[31m" in label for label in labels)
        assert any("[bold]markup[/bold]" in label for label in labels)  # shown, not obeyed


def test_printable_escapes_controls_and_keeps_text():
    assert printable("a\x1b[31mb\u202ec\nd é 漢 [x]") == "a\\x1b[31mb\\u202ec\\x0ad é 漢 [x]"
    assert printable("layers.0.weight") == "layers.0.weight"


# ------------------------------------------------------------------------------------ float8


def test_float8_is_described_truthfully(tmp_path):
    p = tmp_path / "fp8.safetensors"
    save_file({"w": torch.randn(64, 48).to(torch.float8_e4m3fn), "b": torch.randn(64, 48)}, str(p))
    layer = open_checkpoint(p).layer("w")
    assert not layer.analysable and "float8_e4m3fn: a quantised weight" in layer.reason
    assert "scales" in layer.reason and "not a floating-point" not in layer.reason


# ------------------------------------------------------------------------------------ fuzzing


def _pt_with_pickle(path: Path, data_pkl: bytes, template: Path) -> None:
    """A copy of the zip checkpoint ``template`` with its data.pkl replaced (valid CRCs, so the
    mutation reaches the unpickler rather than the zip reader)."""
    with zipfile.ZipFile(template) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, data_pkl if info.filename.endswith("data.pkl") else src.read(info))


def _ends_well(path: Path) -> None:
    """Any input ends in results or a CheckpointError."""
    try:
        ck = open_checkpoint(path)
        list(analyse_checkpoint(ck, AnalysisOptions(use_cache=False)))
    except CheckpointError:
        pass


@FUZZ
@given(st.data())
def test_fuzz_mutated_pickle_inside_a_valid_pt(tmp_path, data):
    template = tmp_path / "template.pt"
    if not template.exists():
        torch.save({"fc.weight": torch.randn(40, 30), "fc.bias": torch.zeros(40), "n": 3}, template)
    with zipfile.ZipFile(template) as z:
        pkl = bytearray(z.read(next(n for n in z.namelist() if n.endswith("data.pkl"))))
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        i = data.draw(st.integers(0, len(pkl) - 1))
        if op == "flip":
            pkl[i] = data.draw(st.integers(0, 255))
        elif op == "insert":
            pkl[i:i] = data.draw(st.binary(min_size=1, max_size=4))
        elif len(pkl) > 2:
            del pkl[i]
    _pt_with_pickle(tmp_path / "m.pt", bytes(pkl), template)
    _ends_well(tmp_path / "m.pt")


@FUZZ
@given(st.data())
def test_fuzz_npz_member_headers(tmp_path, data):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ones((6, 5), dtype=np.float32))
    raw = bytearray(buf.getvalue())
    header_end = raw.index(b"\n") + 1
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, header_end - 1))] = data.draw(st.sampled_from(b"0123456789(),' :<>f8{}xX\x00"))
    with zipfile.ZipFile(tmp_path / "m.npz", "w") as z:
        z.writestr("w.npy", bytes(raw))
    _ends_well(tmp_path / "m.npz")


_JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=12),
                            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=3), max_leaves=8)


@FUZZ
@given(weight_map=st.one_of(_JSON_VALUES, st.dictionaries(
    st.sampled_from(["w", "v", "x", ""]), st.sampled_from(["model.safetensors", "../x", "/etc/passwd", "", ".", "nope",
                                                           "sub/../model.safetensors", 3, None]), max_size=3)),
       wrap=st.booleans())
@example(weight_map={"w": "\x00"}, wrap=True)  # found by this test: a NUL in a shard name
def test_fuzz_hf_index_files(tmp_path, weight_map, wrap):
    folder = tmp_path / "hf"
    folder.mkdir(exist_ok=True)
    save_file({"w": torch.randn(8, 6)}, str(folder / "model.safetensors"))
    doc = {"metadata": {}, "weight_map": weight_map} if wrap else weight_map
    (folder / "model.safetensors.index.json").write_text(json.dumps(doc))
    _ends_well(folder)


def test_pickle_of_a_huge_storage_is_refused(tmp_path):
    """A legacy pickle whose storage claims more than memory: the typed error, not MemoryError."""
    p = tmp_path / "legacy.pt"
    torch.save({"w": torch.zeros(4, 4)}, p, _use_new_zipfile_serialization=False)
    raw = p.read_bytes()
    p.write_bytes(raw.replace(struct.pack("<q", 16), struct.pack("<q", 1 << 60), 1))
    _ends_well(p)


# ------------------------------------------------------------- round 3: evaluators, signals, outputs


@pytest.mark.parametrize("body, message", [
    ("import sys\n    sys.exit(0)", "the evaluator called sys.exit(0)"),
    ("return {'accuracy': float('nan')}", "metric 'accuracy' is nan"),
    ("return {'accuracy': float('inf')}", "metric 'accuracy' is inf"),
    ("return {'accuracy': 'high'}", "metric 'accuracy' is 'high'"),
    ("return {'accuracy': 0.9, 'note': [1, 2]}", "metric 'note' is [1, 2]"),
])
def test_a_users_evaluator_cannot_end_the_process_or_return_non_numbers(tmp_path, cli, body, message):
    from core.paths import DEFAULT_DEMO_MODEL

    ev = tmp_path / "ev.py"
    ev.write_text(f"def evaluate(sd):\n    {body}\n")
    code, out, err = cli("eval", DEFAULT_DEMO_MODEL, "--evaluator", ev, "--layers", "fc2.weight", "--format", "json",
                         "--no-cache")
    assert code == 5 and out == "" and message in err


def test_what_a_users_evaluator_prints_goes_to_stderr_and_stdout_stays_json(tmp_path, cli):
    from core.paths import DEFAULT_DEMO_MODEL

    ev = tmp_path / "ev.py"
    ev.write_text("def evaluate(sd):\n    print('loading data...')\n    return {'accuracy': 0.5}\n")
    code, out, err = cli("eval", DEFAULT_DEMO_MODEL, "--evaluator", ev, "--layers", "fc2.weight", "--format", "json",
                         "--no-cache")
    assert code == 0 and json.loads(out)["baseline"] == {"accuracy": 0.5} and "loading data..." in err


def test_sigterm_while_truncating_exits_130_and_leaves_nothing_behind(tmp_path):
    """A real SIGTERM to a real rmt-tui process in the middle of a long truncation."""
    src = tmp_path / "big.safetensors"
    save_file({"w": torch.randn(3000, 3000)}, str(src))
    before = src.read_bytes()
    out = tmp_path / "out.safetensors"
    proc = subprocess.Popen([sys.executable, "-m", "rmt_tui.cli", "truncate", str(src), "--method", "rank:1400",
                             "-o", str(out), "--no-cache"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "RMT_TUI_CACHE_DIR": str(tmp_path / "cache")})
    time.sleep(4.0)  # imports and the analysis; the truncation's SVD is under way
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()[-400:]
    assert b"interrupted" in err and not out.exists() and src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.safetensors"]  # no temporary file left


@pytest.mark.parametrize("target", ["device", "hardlink", "symlink", "parent-is-a-file", "folder"])
def test_odd_output_targets_get_their_true_reason(tmp_path, cli, target):
    from core.paths import DEFAULT_DEMO_MODEL

    src = tmp_path / "src.safetensors"
    src.write_bytes(DEFAULT_DEMO_MODEL.read_bytes())
    before = src.read_bytes()
    if target == "device":
        out, code, message = Path("/dev/null"), 8, "is a device — only a regular file is ever replaced"
    elif target == "hardlink":
        out, code, message = tmp_path / "again.safetensors", 2, "under another name"
        os.link(src, out)
    elif target == "symlink":
        out, code, message = tmp_path / "link.safetensors", 2, "under another name"
        out.symlink_to(src)
    elif target == "parent-is-a-file":
        (tmp_path / "notes").write_text("x")
        out, code, message = tmp_path / "notes" / "out.safetensors", 8, "notes is a file, not a folder"
    else:
        out, code, message = tmp_path / "adir", 8, "is a folder — only a regular file is ever replaced"
        out.mkdir()
    got, stdout, err = cli("truncate", src, "--method", "bema", "-o", out, "--force", "--no-cache")
    assert got == code and message in err and stdout == ""
    assert src.read_bytes() == before
    assert Path("/dev/null").is_char_device()
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def _cache_docs(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.json") if "-" in p.stem and "by-file" not in p.parts]


@pytest.mark.parametrize("tamper", [
    lambda m: m.update(rank=str(m["rank"])),  # ranks as strings
    lambda m: m.update(threshold=[m["threshold"]]),  # thresholds as lists
    lambda m: m.update(reason="made up", rank=None),  # a layer flipped to "not applicable"… with its numbers
    lambda m: m.update(avew=7.0),  # out of range
    lambda m: m.pop("ks"),  # a field missing
])
def test_a_tampered_cache_entry_is_recomputed_with_one_warning(tmp_path, cli, monkeypatch, tamper):
    from core.paths import DEFAULT_DEMO_MODEL

    monkeypatch.setenv("RMT_TUI_CACHE_DIR", str(tmp_path / "cache"))
    fresh = json.loads(cli("report", DEFAULT_DEMO_MODEL, "--format", "json", "--no-cache")[1])
    assert cli("report", DEFAULT_DEMO_MODEL, "--format", "json")[0] == 0  # fills the cache
    import core.cache

    monkeypatch.setattr(core.cache, "_WARNED", set())
    for doc_path in _cache_docs(tmp_path / "cache"):
        doc = json.loads(doc_path.read_text())
        for m in doc["methods"].values():
            if m["rank"] is not None:
                tamper(m)
        doc_path.write_text(json.dumps(doc))
    code, out, err = cli("report", DEFAULT_DEMO_MODEL, "--format", "json")
    assert code == 0 and json.loads(out)["layers"] == fresh["layers"]  # exactly what --no-cache gives
    assert err.count("does not fit its format") == 1 and "recomputed, never trusted" in err


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.lists(st.sampled_from(["methods", "bema", "broadening", "rank", "sigma2", "threshold", "avew", "ks",
                                      "weighting", "noise", "equalised", "reason", "cosines", "diagnostics"]),
                     min_size=1, max_size=3),
       value=st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True),
                       st.text(max_size=5), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3),
                                                                                                 st.integers(),
                                                                                                 max_size=2)))
def test_fuzzed_cache_entries_load_or_are_recomputed(tmp_path, path, value):
    """Whatever a cache entry holds, the analysis is the one --no-cache gives, never a crash."""
    from core.cache import SpectrumCache
    from core.paths import DEFAULT_DEMO_MODEL
    from core.scan import AnalysisOptions, analyse_layer

    ck = open_checkpoint(DEFAULT_DEMO_MODEL)
    layer = ck.layer("fc2.weight")
    cache = SpectrumCache(tmp_path / "c")
    want = analyse_layer(ck, layer, AnalysisOptions(use_cache=False)).analysis
    analyse_layer(ck, layer, AnalysisOptions(), cache)
    [doc_path] = _cache_docs(tmp_path / "c")
    doc = json.loads(doc_path.read_text())
    node = doc
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node[path[-1]] = value
    doc_path.write_text(json.dumps(doc))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = analyse_layer(ck, layer, AnalysisOptions(), cache).analysis
    assert got.methods == want.methods and np.array_equal(got.sv, want.sv)


@pytest.mark.parametrize("kind, message", [
    ("fifo", "the evaluation text is a FIFO"), ("device", "the evaluation text is a device"),
    ("binary", "holds NUL bytes"), ("few-words", "fewer than the 4×256 needed"),
    ("huge", "more than the 64.0 MB an evaluation reads"),
])
def test_evaluation_texts_that_are_not_text(tmp_path, cli, kind, message):
    """A real FIFO (it would block a read forever), /dev/zero (endless), binary, too short, too big:
    each an evaluator error naming the text, never a hang or a MemoryError."""
    from core.paths import DEMO_DIR

    path = tmp_path / "text"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path = Path("/dev/zero")
    elif kind == "binary":
        path.write_bytes(b"words and \x00 more words " * 100)
    elif kind == "few-words":
        path.write_text("too short " * 20)
    else:
        with open(path, "wb") as f:
            f.truncate((64 << 20) + 1)  # sparse: no disk used
    code, out, err = cli("eval", DEMO_DIR / "tiny-llama", "--text", path, "--layers",
                         "model.layers.0.mlp.up_proj.weight", "--format", "json", "--no-cache")
    assert code == 5 and out == "" and message in err, err


def test_a_file_name_that_is_not_utf8_is_exact_in_json_escaped_in_tables_and_cached(tmp_path, cli, monkeypatch):
    from core.paths import DEFAULT_DEMO_MODEL

    monkeypatch.setenv("RMT_TUI_CACHE_DIR", str(tmp_path / "cache"))
    raw = os.fsencode(tmp_path) + b"/m\xff\xfe.safetensors"
    with open(raw, "wb") as f:
        f.write(DEFAULT_DEMO_MODEL.read_bytes())
    name = os.fsdecode(raw)
    code, out, err = cli("report", name, "--format", "json")
    assert code == 0, err
    assert os.fsencode(json.loads(out)["checkpoint"]) == raw  # exact: the same bytes come back
    monkeypatch.chdir(tmp_path)  # a short relative name: the 80-column title does not wrap it
    code, out, _ = cli("report", os.fsdecode(b"m\xff\xfe.safetensors"))  # the table; the warm cache
    assert code == 0 and "m\\udcff\\udcfe.safetensors" in out  # escaped


@pytest.mark.parametrize("where", ["shard", "file"])
def test_link_loops_are_named_not_a_traceback(tmp_path, cli, where):
    loop_a, loop_b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    if where == "shard":
        folder = tmp_path / "model"
        folder.mkdir()
        (folder / "x.safetensors").symlink_to(folder / "y.safetensors")
        (folder / "y.safetensors").symlink_to(folder / "x.safetensors")
        (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "x.safetensors"}}))
        target, message = folder, "is a symbolic link that loops"
    else:
        target, message = loop_a, "is a symbolic link that loops or leads nowhere"
    code, out, err = cli("report", target)
    assert code == 3 and out == "" and message in err and "Traceback" not in err


def _lying_lm(tmp_path, **changes):
    import shutil

    from core.paths import DEMO_DIR

    folder = tmp_path / "lm"
    if not folder.exists():
        shutil.copytree(DEMO_DIR / "tiny-llama", folder)
    cfg = json.loads((DEMO_DIR / "tiny-llama" / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


@pytest.mark.parametrize("changes, code, message", [
    ({"num_hidden_layers": 1_000_000}, 7, "the model config.json describes"),
    ({"vocab_size": "big"}, 5, "vocab_size = 'big': must be a positive integer"),
    ({"num_attention_heads": 0}, 5, "num_attention_heads = 0: must be a positive integer"),
    ({"num_attention_heads": 5, "head_dim": None}, 5, "must divide hidden_size = 64"),
    ({"architectures": "LlamaForCausalLM"}, 5, "architectures = 'LlamaForCausalLM': must be a list"),
    ({"model_type": ["llama"]}, 5, "model_type = ['llama']: must be a string"),
])
def test_a_lying_model_config_is_refused_before_anything_is_built(tmp_path, cli, changes, code, message):
    folder = _lying_lm(tmp_path, **changes)
    got, out, err = cli("eval", folder, "--layers", "model.layers.0.mlp.up_proj.weight", "--format", "json",
                        "--no-cache")
    assert got == code and out == "" and message in err and "Traceback" not in err, err


def test_a_tokenizer_json_of_the_wrong_shape_is_refused(tmp_path, cli):
    folder = _lying_lm(tmp_path)
    (folder / "tokenizer.json").write_text(json.dumps({"model": ["not", "a", "tokenizer"]}))
    got, out, err = cli("eval", folder, "--layers", "model.layers.0.mlp.up_proj.weight", "--no-cache")
    assert got == 5 and "not a tokenizer" in err


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                            "intermediate_size", "architectures", "model_type", "num_key_value_heads",
                            "max_position_embeddings", "rms_norm_eps"]),
       value=st.one_of(st.none(), st.booleans(), st.integers(-3, 10**9), st.floats(allow_nan=False),
                       st.text(max_size=6), st.lists(st.integers(0, 3), max_size=2)))
def test_fuzzed_config_json_ends_in_a_result_or_a_typed_error(tmp_path, key, value):
    folder = _lying_lm(tmp_path, **{key: value})
    r = subprocess.run([sys.executable, "-m", "rmt_tui.cli", "eval", str(folder), "--layers",
                        "model.layers.0.mlp.up_proj.weight", "--format", "json", "--no-cache"],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "RMT_TUI_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode in (0, 3, 5, 7) and "Traceback" not in r.stderr, (key, value, r.stderr[-600:])
    if r.returncode == 0:
        json.loads(r.stdout)


def test_a_memory_mapped_pickle_cut_short_after_opening_is_refused_not_a_sigbus(tmp_path):
    """torch.load(mmap=True) maps the file: touching a tensor of a file cut short since would be a
    SIGBUS. The source notices the change and says so instead (in a subprocess, so that a crash
    would show as one)."""
    path = tmp_path / "m.pt"
    torch.save({"w": torch.randn(512, 512), "b": torch.randn(512, 512)}, path)
    code = f"""
import os, sys
from pathlib import Path
from core.errors import CheckpointError
from core.io.pickles import TorchSource
src = TorchSource(Path({str(path)!r}))
os.truncate({str(path)!r}, os.path.getsize({str(path)!r}) // 2)
try:
    float(src.read("b").sum())
except CheckpointError as exc:
    print("refused:", exc)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "changed on disk while it was open" in r.stdout, (r.returncode, r.stderr[-300:])


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["model", "added_tokens", "pre_tokenizer", "normalizer", "decoder", "post_processor"]),
       inner=st.sampled_from([None, "vocab", "merges", "type"]),
       value=st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.text(max_size=4),
                       st.lists(st.integers(0, 3), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(),
                                                                                max_size=1)))
def test_fuzzed_tokenizer_json_ends_in_a_result_or_a_typed_error(tmp_path, key, inner, value):
    folder = _lying_lm(tmp_path)
    tok = json.loads((folder / "tokenizer.json").read_text())
    if inner is not None and isinstance(tok.get(key), dict):
        tok[key][inner] = value
    else:
        tok[key] = value
    (folder / "tokenizer.json").write_text(json.dumps(tok))
    r = subprocess.run([sys.executable, "-m", "rmt_tui.cli", "eval", str(folder), "--layers",
                        "model.layers.0.mlp.up_proj.weight", "--format", "json", "--no-cache"],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "RMT_TUI_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode in (0, 5) and "Traceback" not in r.stderr, (key, inner, value, r.stderr[-600:])
    if r.returncode == 0:
        json.loads(r.stdout)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_to_the_apps_engine_child_leaves_no_temporary_cache_file(tmp_path, sig):
    """A real SIGTERM or SIGHUP (the app quitting, a closed SSH session) to the engine child while it
    analyses and caches many layers: it exits 130, and its cache holds whole entries only."""
    import threading

    from core.cache import SpectrumCache
    from core.jobs import AnalyseManyRequest
    from core.paths import TMP_SUFFIX
    from core.scan import AnalysisOptions
    from rmt_tui.engine import ProcessEngine

    src = tmp_path / "many.safetensors"
    g = torch.Generator().manual_seed(0)
    save_file({f"l{i}.weight": torch.randn(400, 300, generator=g) for i in range(300)}, str(src))
    engine = ProcessEngine()
    got = []
    req = AnalyseManyRequest(str(src), tuple(f"l{i}.weight" for i in range(300)), AnalysisOptions())
    worker = threading.Thread(target=lambda: _call_until_stopped(engine, req, got), daemon=True)
    worker.start()
    deadline = time.monotonic() + 60
    while len(got) < 20 and time.monotonic() < deadline:  # stored entries are being written now
        time.sleep(0.01)
    os.kill(engine.pid, sig)
    assert engine._proc.wait(timeout=30) == 130
    worker.join(timeout=30)
    cache = Path(os.environ["RMT_TUI_CACHE_DIR"])
    assert 20 <= len(got) < 300 and not list(cache.rglob(f"*{TMP_SUFFIX}"))
    entries = list(SpectrumCache().root.rglob("*.json"))
    assert len(entries) >= 20
    for entry in entries:  # every entry whole: each parses
        json.loads(entry.read_text())
    engine.close()


def _call_until_stopped(engine, req, got) -> None:
    from core.errors import RmtError

    try:
        engine.call(req, on_item=got.append)
    except RmtError:  # "the analysis process stopped": what the app shows
        pass
