"""Soak the app: several checkpoints open, random keys (analyse, evaluate, sweep, cancel, views,
find, help, navigation) for a while, with the real engine processes. Reports every exception (there
must be none) and the memory of the UI, analysis and evaluation processes over time (it must level
off).

    python scripts/soak.py --minutes 10 [--seed 0] [PATH ...]

Not a test: it takes minutes and prints a table for a person to read."""
from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.paths import DEMO_DIR  # noqa: E402
from rmt_tui.app import RmtApp  # noqa: E402

# Weighted so that work is started often and cancelled sometimes, as a hurried person would.
KEYS = (["j"] * 12 + ["k"] * 6 + ["enter"] * 3 + ["v"] * 4 + ["a"] * 2 + ["e"] * 3 + ["E"] + ["s"] * 2 +
        ["escape"] * 3 + ["question_mark"] + ["slash"] + ["space"] +
        ["c"] * 2 + ["n"] + ["t"] + ["g"] + ["b"] + ["d"] * 2 + ["S"])  # several checkpoints: compare, delta


def rss_mb(pid: int | str = "self") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


async def soak(paths: list[Path], minutes: float, seed: int) -> int:
    rng = random.Random(seed)
    app = RmtApp(paths)
    rows, errors, pressed = [], [], 0
    t0 = time.monotonic()
    next_sample = 0.0
    async with app.run_test(size=(120, 40)) as pilot:
        engine_pid = app.analysis_process.pid

        def sample(t: float) -> tuple:
            return (t, rss_mb(), rss_mb(engine_pid), rss_mb(app.evaluation_process.pid or 0), pressed,
                    len(app.session.jobs))

        while (elapsed := time.monotonic() - t0) < minutes * 60:
            key = rng.choice(KEYS)
            await pilot.press(key)
            pressed += 1
            if len(app.screen_stack) > 1:  # a dialog (help, find): close it as a person would
                await pilot.pause(0.05)
                await pilot.press("escape")
            if app.last_error and app.last_error not in errors:
                errors.append(app.last_error)
            await pilot.pause(rng.uniform(0.02, 0.4))
            if elapsed >= next_sample:
                rows.append(sample(elapsed))
                next_sample += 30
        await app.workers.wait_for_complete()
        rows.append(sample(time.monotonic() - t0))
    print(f"{'t (s)':>7} {'UI RSS MB':>10} {'analysis RSS MB':>16} {'evaluation RSS MB':>18} {'keys':>6} {'jobs':>5}")
    for t, ui, eng, work, n, jobs in rows:
        print(f"{t:7.0f} {ui:10.0f} {eng:16.0f} {work:18.0f} {n:6d} {jobs:5d}")
    print(f"keys pressed: {pressed}; exceptions: 0; errors shown to the user: {len(errors)}")
    for e in errors:
        print(f"  error shown: {e}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*", type=Path)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    paths = args.paths or [DEMO_DIR / f"mlp_bs{b}.safetensors" for b in (16, 128, 1024)]
    try:
        return asyncio.run(soak(paths, args.minutes, args.seed))
    except Exception as exc:  # the one thing this script exists to catch
        print(f"EXCEPTION: {type(exc).__name__}: {exc}", file=sys.stderr)
        raise


if __name__ == "__main__":
    raise SystemExit(main())
