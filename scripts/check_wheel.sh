#!/usr/bin/env bash
# Build the wheel, install it (not editable) in a fresh venv, and use it as a new user would, from a
# folder outside the checkout: the demo model opens in the app and `E` evaluates it; `report` and
# `eval` on the bundled demo and the tiny LM work. Run by .ci/run after the tests.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q torch==2.13.0
"$tmp/venv/bin/pip" wheel -q --no-deps -w "$tmp/dist" "$here"
"$tmp/venv/bin/pip" install -q "$tmp"/dist/rmt_tui-*.whl
cd "$tmp"
export RMT_TUI_CACHE_DIR="$tmp/cache"
"$tmp/venv/bin/python" - <<'PY'
import asyncio, pathlib, subprocess, sys, json

import core, rmt_tui
from core.paths import DEFAULT_DEMO_MODEL, DEMO_DIR
from rmt_tui.app import RmtApp

for module in (core, rmt_tui):
    assert "site-packages" in module.__file__, f"{module.__name__} imported from {module.__file__}, not the wheel"
for name in ("mlp_bs16.safetensors", "mlp_bs1024.safetensors", "mnist_test.npz", "tiny-llama/model.safetensors",
             "tiny-llama/tokenizer.json"):
    assert (DEMO_DIR / name).is_file(), f"the wheel lacks demo_models/{name}"


async def main():
    app = RmtApp([DEFAULT_DEMO_MODEL])  # what `rmt-tui` with no path opens
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(400):
            await pilot.pause(0.05)
            if app.selected is not None and app.session.result(app.selected) is not None:
                break
        await pilot.press("E")
        for _ in range(1200):
            await pilot.pause(0.05)
            if app.session.opened[0].evals:
                break
        rep = next(iter(app.session.opened[0].evals.values()))
        assert app.last_error is None, app.last_error
        assert rep.evaluator == "mnist-mlp" and rep.baseline["accuracy"] > 0.97, rep
        print(f"app: {DEFAULT_DEMO_MODEL.name} opened, E evaluated: baseline accuracy {rep.baseline['accuracy']}")

asyncio.run(main())
bin_dir = pathlib.Path(sys.executable).parent
doc = json.loads(subprocess.run([bin_dir / "rmt-tui", "report", str(DEFAULT_DEMO_MODEL), "--format", "json"],
                                check=True, capture_output=True, text=True).stdout)
assert doc["layers"][1]["methods"]["bema"]["rank"] == 97
out = subprocess.run([bin_dir / "rmt-tui", "eval", str(DEMO_DIR / "tiny-llama"), "--format", "json"],
                     capture_output=True, text=True)
# The base install has no transformers: the tiny LM's evaluation says how to get it (exit 5).
assert out.returncode == 5 and "pip install 'rmt-tui[hf]'" in out.stderr, (out.returncode, out.stderr)
print("report: fc1.weight BEMA ŝ 97; eval of the tiny LM without the [hf] extra: exit 5 with the install hint")
PY
echo "wheel check passed"
