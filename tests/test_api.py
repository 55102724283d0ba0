"""The Python API the README promises: its example runs, and the verbs' docstring examples hold."""
import doctest
import re
from pathlib import Path

import core
from core.paths import REPO_ROOT


def test_the_readme_python_example_runs(monkeypatch, capsys):
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("## Python API"):readme.index("## Architecture")]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(REPO_ROOT)
    exec(compile(code, "README.md (Python API)", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "{'bema': 97, 'broadening': 185}"  # the numbers the README's comments state
    assert out[2] == "0.9832 → 0.9817"


def test_the_api_docstring_examples_hold(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    result = doctest.testmod(core, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 4 and result.failed == 0


def test_the_api_names_every_verb_with_its_documentation():
    for name in core.__all__:
        if name != "__version__":
            doc = getattr(core, name).__doc__
            assert callable(getattr(core, name)) and "Returns" in doc, name
    assert core.__version__ != "0+unknown"  # one version, read from the installed distribution
    assert Path(core.__file__).parent.name == "core"
