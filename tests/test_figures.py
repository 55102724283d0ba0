"""rmt-tui plot: every view as PNG, SVG and PDF, checked by their headers, sizes and structure; the
options' errors; the install hint without matplotlib; no figure replaced without --force."""
import struct
import sys
import xml.etree.ElementTree as ET

import pytest

from core.paths import DEMO_DIR

DEMO = DEMO_DIR / "mlp_bs16.safetensors"
SERIES = [DEMO_DIR / f"mlp_bs{bs}.safetensors" for bs in (16, 64, 256)]


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("view, paths", [("histogram", [DEMO]), ("values", [DEMO]), ("compare", SERIES),
                                         ("compare-values", SERIES), ("trajectory", SERIES),
                                         ("delta", SERIES[:2])])
def test_every_view_as_png_at_its_size_and_dpi(tmp_path, cli, view, paths):
    out = tmp_path / f"{view}.png"
    code, stdout, err = cli("plot", *paths, "--layer", "fc1.weight", "--view", view, "-o", out, "--dpi", "100",
                            "--size", "4x3", "--no-cache", "--methods", "bema,broadening,screenot")
    assert code == 0 and stdout == "" and f"wrote {out}" in err, err
    assert png_size(out) == (400, 300)


def test_the_sweep_view_evaluates(tmp_path, cli):
    out = tmp_path / "sweep.png"
    assert cli("plot", DEMO, "--layer", "fc2.weight", "--view", "sweep", "-o", out, "--no-cache")[0] == 0
    assert png_size(out) == (1050, 780)  # the one-column default: 3.5 × 2.6 in at 300 dpi


def test_svg_and_pdf_with_the_legend_and_caption(tmp_path, cli):
    svg, pdf = tmp_path / "h.svg", tmp_path / "h.pdf"
    assert cli("plot", DEMO, "--layer", "fc1.weight", "-o", svg, "--no-cache")[0] == 0
    text = " ".join(t.text or "" for t in ET.parse(svg).iter() if t.tag.endswith("text"))
    assert "BEMA τ=3.72 ŝ=97 Avew=0.82" in text and "GB MP fit" in text and "p = 512, N = 784" in text
    assert cli("plot", DEMO, "--layer", "fc1.weight", "-o", pdf, "--no-cache")[0] == 0
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5000


@pytest.mark.parametrize("argv, code, message", [
    (("-o", "x.jpg"), 2, "a figure is written as .png, .svg, .pdf"),
    (("-o", "x.png", "--size", "0x3"), 2, "give WxH in inches"),
    (("-o", "x.png", "--view", "compare"), 2, "needs two or more checkpoints"),
    (("-o", "x.png", "--layer", "nope"), 2, "no layer of"),
])
def test_bad_options_are_usage_errors(tmp_path, cli, monkeypatch, argv, code, message):
    monkeypatch.chdir(tmp_path)
    args = ["plot", DEMO, *argv] + ([] if "--layer" in argv else ["--layer", "fc1.weight"])
    got, out, err = cli(*args)
    assert got == code and out == "" and message in err and not list(tmp_path.iterdir())


def test_an_existing_figure_needs_force(tmp_path, cli):
    out = tmp_path / "f.png"
    out.write_bytes(b"mine")
    assert cli("plot", DEMO, "--layer", "fc1.weight", "-o", out)[0] == 6 and out.read_bytes() == b"mine"
    assert cli("plot", DEMO, "--layer", "fc1.weight", "-o", out, "--force")[0] == 0 and png_size(out)


def test_without_matplotlib_the_install_line_and_exit_5(tmp_path, cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    code, _, err = cli("plot", DEMO, "--layer", "fc1.weight", "-o", tmp_path / "f.png")
    assert code == 5 and "pip install 'rmt-tui[plots]'" in err and not (tmp_path / "f.png").exists()


def test_the_app_and_the_cli_never_import_matplotlib():
    import subprocess

    code = ("import sys, rmt_tui.app, rmt_tui.cli, core.jobs\nprint('matplotlib' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


async def test_the_app_exports_the_view_on_screen(tmp_path, monkeypatch):
    """x saves the plot on screen as a PNG in the current folder, a new file each time, and says where."""
    from helpers import settle

    from rmt_tui.app import RmtApp
    from rmt_tui.engine import InlineEngine

    monkeypatch.chdir(tmp_path)
    app = RmtApp([DEMO], engine=InlineEngine())
    said = []
    async with app.run_test(size=(120, 40)) as pilot:
        monkeypatch.setattr(app, "_say", lambda message, **kw: said.append(message))
        await settle(app, pilot)
        await pilot.press("x")
        await settle(app, pilot)
        await pilot.press("v", "x")  # the sorted-values view
        await settle(app, pilot)
    files = sorted(p.name for p in tmp_path.glob("*.png"))
    assert files == ["rmt-tui-mlp_bs16-fc1.weight-histogram.png", "rmt-tui-mlp_bs16-fc1.weight-values.png"]
    assert all(png_size(tmp_path / f) == (1050, 780) for f in files)
    assert any(m.startswith("figure: ") and m.endswith("histogram.png") for m in said)
