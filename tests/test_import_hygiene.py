import os
import subprocess
import sys

from core.paths import DEFAULT_DEMO_MODEL

# Every module of core, with the optional libraries only some of them may import (when used).
OPTIONAL = {"transformers": ("core.evaluate.hf", "core.evaluate.hf_causal_lm", "core.evaluate.hf_encoder"),
            "ray": ("core.executors",), "gguf": ("core.io.gguf",), "matplotlib": ()}


def _core_modules() -> list[str]:
    import pathlib

    import core

    root = pathlib.Path(core.__file__).parent
    return sorted("core." + ".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
                  for p in root.rglob("*.py"))


def test_core_does_not_import_textual_rich_or_an_optional_library_at_import():
    """Each sub-package of core imports without the UI libraries, and the optional extras stay out
    of every module until a function that needs one runs."""
    mods = _core_modules()
    assert {"core.io.checkpoint", "core.rmt.methods", "core.evaluate.registry", "core.compare.delta",
            "core.jobs"} <= set(mods)
    code = (f"import sys\nfor m in {mods!r}: __import__(m)\n"
            "bad = [m for m in ('textual', 'rich', 'plotext', *" + repr(tuple(OPTIONAL)) + ") if m in sys.modules]\n"
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_numerics_import_without_torch():
    code = ("import sys, core.rmt.analysis, core.rmt.methods, core.rmt.spectrum, core.rmt.mp, core.rmt.cosines, "
            "core.rmt.fit_quality\nprint([m for m in ('torch', 'textual', 'rich') if m in sys.modules])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


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
    code = ("from rmt_tui.engine import InlineEngine\nfrom core.jobs import AnalyseRequest\n"
            f"r = InlineEngine().call(AnalyseRequest({str(DEFAULT_DEMO_MODEL)!r}, 'fc1.weight'))\n"
            "assert r.analysis.methods['bema'].rank > 0")
    assert _imports_of(code, tmp_path) == []
