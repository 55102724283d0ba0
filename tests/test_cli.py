"""The command line: golden report files, exit codes and messages for bad input, truncate, eval, sweep."""
import csv
import io
import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from core.paths import DEFAULT_DEMO_MODEL
from rmt_tui.cli import COMMANDS, EXIT_EVAL, EXIT_EXISTS, EXIT_INPUT, EXIT_UNSAFE, EXIT_USAGE, build_parser, main

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("RMT_UPDATE_GOLDEN") == "1"


def seeded_checkpoint(path: Path) -> Path:
    """Planted-rank layers (ranks 3 and 2), a bias and a small head, seeded."""
    g = np.random.default_rng(7)

    def planted(m, n, thetas):
        a = np.linalg.qr(g.standard_normal((m, len(thetas))))[0]
        b = np.linalg.qr(g.standard_normal((n, len(thetas))))[0]
        return (0.05 * np.sqrt(max(m, n)) * (a * thetas) @ b.T + 0.05 * g.standard_normal((m, n))).astype(np.float32)

    sd = {"enc.weight": torch.from_numpy(planted(300, 200, [6, 4, 3])),
          "enc.bias": torch.zeros(300),
          "dec.weight": torch.from_numpy(planted(120, 300, [5, 3])),
          "head.weight": torch.from_numpy(g.standard_normal((4, 120)).astype(np.float32))}
    save_file(sd, str(path), metadata={"note": "seeded"})
    return path


def approx_equal(a, b, path="$"):
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            approx_equal(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            approx_equal(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and not isinstance(a, bool):
        assert isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-9), (path, a, b)
    else:
        assert a == b, (path, a, b)


def check_golden(name, text, parse):
    golden = GOLDEN / name
    if UPDATE:
        golden.write_text(text)
    approx_equal(parse(golden.read_text()), parse(text))


def parse_csv(text):
    rows = list(csv.reader(io.StringIO(text)))
    conv = lambda v: float(v) if v.replace(".", "", 1).replace("e-", "", 1).replace("-", "", 1).isdigit() else v  # noqa
    return [rows[0]] + [[conv(v) for v in r] for r in rows[1:]]


def test_report_json_golden(tmp_path, cli):
    ck = seeded_checkpoint(tmp_path / "seeded.safetensors")
    code, out, err = cli("report", str(ck), "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["schema"] == "rmt-tui/report/1" and doc["checkpoint"] == str(ck)
    by = {l["name"]: l for l in doc["layers"]}
    assert by["enc.weight"]["methods"]["bema"]["rank"] == 3 and by["dec.weight"]["methods"]["bema"]["rank"] == 2
    assert by["enc.bias"]["status"] == "skipped" and by["enc.bias"]["methods"]["bema"]["sigma2"] is None
    doc["checkpoint"] = "seeded.safetensors"
    check_golden("report.json", json.dumps(doc, indent=2) + "\n", json.loads)


def test_report_csv_golden(tmp_path, cli):
    ck = seeded_checkpoint(tmp_path / "seeded.safetensors")
    code, out, _ = cli("report", str(ck), "--format", "csv")
    assert code == 0
    header = out.splitlines()[0].split(",")
    assert header[:3] == ["name", "shape", "matrix"] and "bema_rank" in header and "broadening_avew" in header
    check_golden("report.csv", out, parse_csv)


def test_report_table_fits_80_columns(tmp_path):
    ck = seeded_checkpoint(tmp_path / "seeded.safetensors")
    r = subprocess.run([sys.executable, "-m", "rmt_tui.cli", "report", str(ck)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "enc.weight" in r.stdout and max(len(line) for line in r.stdout.splitlines()) <= 80
    assert r.stderr == ""  # no progress bar when stderr is not a terminal


def test_report_path_does_not_import_textual(tmp_path):
    ck = seeded_checkpoint(tmp_path / "seeded.safetensors")
    code = ("import sys; from rmt_tui.cli import main; rc = main(['report', sys.argv[1], '--format', 'json']);"
            "sys.stderr.write(str([m for m in ('textual', 'plotext') if m in sys.modules])); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, str(ck)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr.endswith("[]"), r.stderr


def test_layers_glob_and_methods(tmp_path, cli):
    ck = seeded_checkpoint(tmp_path / "seeded.safetensors")
    code, out, _ = cli("report", str(ck), "--format", "json", "--layers", "dec.*", "--methods", "bema",
                       "--beta", "0.01")
    doc = json.loads(out)
    assert [l["name"] for l in doc["layers"]] == ["dec.weight"]
    assert list(doc["layers"][0]["methods"]) == ["bema"] and doc["options"]["params"]["bema"]["beta"] == 0.01
    assert cli("report", str(ck), "--layers", "nomatch*")[0] == EXIT_USAGE
    assert cli("report", str(ck), "--methods", "bogus")[0] == EXIT_USAGE
    assert cli("report", str(ck), "--beta", "0.7")[0] == EXIT_USAGE


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


BAD_INPUTS = {
    "missing": (lambda d: d / "nope.pt", EXIT_INPUT, "no such file or folder"),
    "empty folder": (lambda d: d, EXIT_INPUT, "no weights in this folder"),
    "empty file": (lambda d: _write(d / "e.pt", b""), EXIT_INPUT, "empty file"),
    "truncated": (lambda d: _write(d / "t.safetensors", b"\xff" * 8 + b"{"), EXIT_INPUT, "truncated"),
    "corrupt header": (lambda d: _write(d / "c.safetensors", b"\x05" + b"\0" * 7 + b"{abc}"), EXIT_INPUT,
                       "corrupt safetensors header"),
    "not a checkpoint": (lambda d: torch.save({"a": 1}, d / "x.pt") or d / "x.pt", EXIT_INPUT, "contains no tensors"),
    "unsafe": (lambda d: _write(d / "evil.pt", pickle.dumps(_Boom())), EXIT_UNSAFE, "asks to run code"),
}


class _Boom:
    def __reduce__(self):
        return (os.system, ("echo boom",))


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_through_the_cli(tmp_path, case, cli):
    make, code, message = BAD_INPUTS[case]
    d = tmp_path / "in"
    d.mkdir()
    path = make(d)
    r = subprocess.run([sys.executable, "-m", "rmt_tui.cli", "report", str(path), "--format", "json"],
                       capture_output=True, text=True)
    assert r.returncode == code, r.stderr
    assert r.stdout == ""
    assert message in r.stderr and r.stderr.startswith("rmt-tui: error: ") and "Traceback" not in r.stderr
    assert "boom" not in r.stdout + r.stderr


def test_truncate_writes_reloadable_low_rank_file(tmp_path, cli):
    ck = seeded_checkpoint(tmp_path / "seeded.safetensors")
    before = ck.read_bytes()
    out = tmp_path / "out.safetensors"
    code, stdout, err = cli("truncate", str(ck), "--method", "bema", "-o", str(out))
    assert code == 0 and stdout == "" and "wrote" in err
    sd = load_file(str(out))
    assert np.linalg.matrix_rank(sd["enc.weight"].numpy(), tol=1e-4) == 3
    assert np.linalg.matrix_rank(sd["dec.weight"].numpy(), tol=1e-4) == 2
    from safetensors import safe_open
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert meta["rmt_tui.method"] == "bema" and json.loads(meta["rmt_tui.ranks"])["enc.weight"] == 3
    assert ck.read_bytes() == before
    code, _, err = cli("truncate", str(ck), "--method", "rank:1", "-o", str(out))
    assert code == EXIT_EXISTS and "--force" in err
    code, _, _ = cli("truncate", str(ck), "--method", "rank:1", "--layers", "enc.*", "-o", str(out), "--force")
    assert code == 0
    assert np.linalg.matrix_rank(load_file(str(out))["enc.weight"].numpy(), tol=1e-4) == 1
    assert cli("truncate", str(ck), "--method", "rank:1", "-o", str(ck), "--force")[0] == EXIT_USAGE
    assert cli("truncate", str(ck), "--method", "broadening", "--mode", "shrink",
               "-o", str(tmp_path / "s.safetensors"))[0] == 0


def test_eval_and_sweep_json_on_demo(cli):
    code, out, _ = cli("eval", str(DEFAULT_DEMO_MODEL), "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["schema"] == "rmt-tui/eval/2" and doc["evaluator"] == "mnist-mlp"
    assert doc["primary"] == {"metric": "accuracy", "label": "accuracy", "higher_is_better": True}
    assert doc["baseline"]["accuracy"] > 0.97
    assert set(doc["methods"]) == {"bema", "broadening"}
    assert all(m["params_saved"] > 0 and m["ranks"]["fc1.weight"] > 0 for m in doc["methods"].values())
    code, out, _ = cli("sweep", str(DEFAULT_DEMO_MODEL), "--layer", "fc2.weight", "--ranks", "0:256:128",
                       "--format", "json")
    doc = json.loads(out)
    assert code == 0 and doc["schema"] == "rmt-tui/sweep/2"
    assert [p["rank"] for p in doc["points"]] == [0, 128, 256]
    assert doc["points"][-1]["value"] == doc["points"][-1]["metrics"]["accuracy"] == doc["baseline"]["accuracy"]
    code, out, _ = cli("sweep", str(DEFAULT_DEMO_MODEL), "--layer", "fc2.weight", "--ranks", "0,10",
                       "--format", "csv")
    assert out.splitlines()[0] == "rank,accuracy,avew_bema,avew_broadening" and len(out.splitlines()) == 3


def test_eval_needs_an_evaluator_for_foreign_checkpoints(tmp_path, cli):
    ck = seeded_checkpoint(tmp_path / "seeded.safetensors")
    code, _, err = cli("eval", str(ck))
    assert code == EXIT_EVAL and "--evaluator" in err
    ev = tmp_path / "ev.py"
    ev.write_text("def evaluate(sd):\n    return {'accuracy': float(sd['enc.weight'].abs().sum() > 0)}\n")
    code, out, _ = cli("eval", str(ck), "--evaluator", str(ev), "--format", "json")
    assert code == 0 and json.loads(out)["methods"]["bema"]["value"] == 1.0
    # An evaluator that declares another primary metric (lower is better) needs no accuracy.
    ev.write_text("def evaluate(sd):\n    return {'loss': float(sd['enc.weight'].norm())}\n"
                  "evaluate.primary = 'loss'\nevaluate.higher_is_better = False\n")
    code, out, _ = cli("eval", str(ck), "--evaluator", str(ev), "--format", "json")
    doc = json.loads(out)
    assert code == 0 and doc["primary"] == {"metric": "loss", "label": "loss", "higher_is_better": False}
    assert doc["methods"]["bema"]["value"] < doc["baseline"]["loss"]
    code, out, _ = cli("eval", str(ck), "--evaluator", str(ev), "--each", "--format", "json")
    doc = json.loads(out)
    assert code == 0 and doc["schema"] == "rmt-tui/sensitivity/1"
    assert [r["damage"] for r in doc["layers"]] == sorted(r["damage"] for r in doc["layers"])
    assert cli("sweep", str(ck), "--layer", "nope", "--evaluator", str(ev))[0] == EXIT_USAGE


@pytest.mark.parametrize("command", ("app", *COMMANDS))
def test_help_for_every_command(command, capsys):
    """Every command prints its usage, its options with their defaults, and the exit codes."""
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: rmt-tui {command}" in out and "exit codes" in out
    assert "--config FILE" in out
    if command == "config":
        return
    if command != "app":
        assert "--methods" in out and "--layers" in out and "--no-cache" in out
    assert "(default: 0.2)" in out and "--alpha" in out  # a method's own parameter, from its declaration


def test_version_and_top_level_help(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("rmt-tui 0.")
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "report" in capsys.readouterr().out
    assert build_parser().parse_args(["report", "x"]).format == "table"


def test_ctrl_c_exits_130_and_leaves_no_partial_output(tmp_path):
    import signal
    import time

    g = torch.Generator().manual_seed(0)
    src = tmp_path / "src"
    src.mkdir()
    save_file({f"l{i}.weight": torch.randn(1500, 1500, generator=g) for i in range(12)}, str(src / "big.safetensors"))
    out = src / "out.safetensors"
    cache = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-m", "rmt_tui.cli", "truncate", str(src / "big.safetensors"),
                             "--method", "bema", "-o", str(out)], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "RMT_TUI_CACHE_DIR": str(cache)},
                            # A runner started in the background inherits SIGINT ignored; a user's shell does not.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not list(cache.rglob("*.f64")) and time.monotonic() < deadline:  # the first layer is done
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert sorted(p.name for p in src.iterdir()) == ["big.safetensors"]
