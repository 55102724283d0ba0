"""Shell completion (argcomplete, the [completion] extra): commands, flags, and layer names of the
checkpoint already on the line; the registration scripts for bash, zsh and fish."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.paths import DEFAULT_DEMO_MODEL

RMT_TUI = Path(sys.executable).with_name("rmt-tui")


def complete(line: str, tmp_path) -> list[str]:
    out = tmp_path / "completions"
    env = {**os.environ, "_ARGCOMPLETE": "1", "COMP_LINE": line, "COMP_POINT": str(len(line)),
           "_ARGCOMPLETE_STDOUT_FILENAME": str(out)}
    subprocess.run([RMT_TUI], env=env, capture_output=True, timeout=60, check=False)
    return out.read_text().split("\v") if out.exists() else []


@pytest.mark.parametrize("line, expected", [
    ("rmt-tui rep", ["report"]),
    ("rmt-tui report x --met", ["--methods"]),
    ("rmt-tui report x --screenot", ["--screenot-k"]),  # a method's own flag, from its declaration
    (f"rmt-tui sweep {DEFAULT_DEMO_MODEL} --layer fc2", ["fc2.bias", "fc2.weight"]),
    (f"rmt-tui report {DEFAULT_DEMO_MODEL} --layers fc1.w", ["fc1.weight"]),
    ("rmt-tui sweep /no/such/file.pt --layer fc", []),  # nothing, and no traceback
])
def test_completions(tmp_path, line, expected):
    got = [c.strip() for c in complete(line, tmp_path) if c.strip()]
    assert got == expected


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_the_registration_script_for_each_shell(shell):
    tool = Path(sys.executable).with_name("register-python-argcomplete")
    script = subprocess.run([tool, "--shell", shell, "rmt-tui"], capture_output=True, text=True, check=True).stdout
    assert "rmt-tui" in script and "_ARGCOMPLETE" in script
