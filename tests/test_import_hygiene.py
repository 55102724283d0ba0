import subprocess
import sys


def test_core_does_not_import_textual_or_rich():
    code = ("import sys, core, core.analysis, core.methods, core.spectrum, core.mp, core.cosines, core.fit_quality;"
            "bad = [m for m in ('textual', 'rich', 'plotext') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
