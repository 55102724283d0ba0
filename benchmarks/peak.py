"""Peak memory of a piece of work in a fresh process: the high-water mark (VmHWM, reset after the
imports) above the resident size after the imports, so imports and warm-up do not count."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PRELUDE = f"""
import sys, json, time
sys.path.insert(0, {str(ROOT)!r})
import numpy
from core.rmt.analysis import analyse_matrix
from core.io.checkpoint import open_checkpoint
from core.compare.delta import delta_checkpoints
from core.compare.matching import match_layers
from core.scan import AnalysisOptions, analyse_checkpoint
analyse_matrix(numpy.random.default_rng(0).standard_normal((64, 48)))  # every lazy import, done

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])

open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark
base = status("VmRSS")
t0 = time.perf_counter()
result = None
"""

REPORT = """
print(json.dumps({"baseline_kb": base, "peak_kb": status("VmHWM"), "seconds": time.perf_counter() - t0,
                  "result": result}))
"""


def peak_in_fresh_process(work: str) -> dict:
    """Run ``work`` (Python source; it may set ``result`` to something JSON can hold) after the
    prelude's imports. Returns baseline_kb, peak_kb, seconds and result."""
    code = PRELUDE + work + REPORT
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out)
