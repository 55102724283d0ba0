import os
import subprocess
import sys

from core.paths import DEFAULT_DEMO_MODEL


def test_core_does_not_import_textual_or_rich():
    code = ("import sys, core, core.analysis, core.methods, core.spectrum, core.mp, core.cosines, core.fit_quality;"
            "bad = [m for m in ('textual', 'rich', 'plotext') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def _imports_of(code: str, tmp_path) -> list[str]:
    """Run ``code`` in a fresh interpreter; the heavy modules it imported."""
    probe = "\nimport sys\nprint([m for m in ('torch', 'textual', 'transformers', 'ray') if m in sys.modules])"
    r = subprocess.run([sys.executable, "-c", code + probe], capture_output=True, text=True,
                       env={**os.environ, "RMT_TUI_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr
    return eval(r.stdout.strip().splitlines()[-1])


def test_report_of_safetensors_and_npz_needs_no_torch(tmp_path):
    import numpy as np

    np.savez(tmp_path / "m.npz", w=np.random.default_rng(0).standard_normal((60, 40)).astype(np.float32))
    for path in [str(DEFAULT_DEMO_MODEL), str(tmp_path / "m.npz")]:
        code = f"from rmt_tui.cli import main\nassert main(['report', {path!r}, '--format', 'json']) == 0"
        assert _imports_of(code, tmp_path) == []


def test_the_engine_analyses_safetensors_without_torch(tmp_path):
    code = ("from rmt_tui.engine import InlineEngine\nfrom core.scan import AnalysisOptions\n"
            f"r = InlineEngine().analyse({str(DEFAULT_DEMO_MODEL)!r}, 'reshape', 'fc1.weight', AnalysisOptions())\n"
            "assert r.analysis.methods['bema'].rank > 0")
    assert _imports_of(code, tmp_path) == []
