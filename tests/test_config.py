"""Config files: precedence (system < user < --config < flags), every error (exit 2 naming the file,
the key and what is allowed), a remapped key driven in the app, and the theme written back."""
import json

import pytest

from core.paths import DEFAULT_DEMO_MODEL


@pytest.fixture
def homes(tmp_path, monkeypatch):
    system, user = tmp_path / "etc", tmp_path / "home"
    for d in (system, user):
        (d / "rmt-tui").mkdir(parents=True)
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(system))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(user))
    return system / "rmt-tui" / "config.toml", user / "rmt-tui" / "config.toml"


def methods_of(cli, *argv):
    code, out, err = cli("report", DEFAULT_DEMO_MODEL, "--format", "json", "--no-cache", *argv)
    assert code == 0, err
    return json.loads(out)["options"]


def test_precedence_system_user_explicit_flags(homes, cli, tmp_path):
    system, user = homes
    system.write_text('[defaults]\nmethods = ["bema"]\nalpha = 0.3\nweighting = "sv"\n')
    assert methods_of(cli)["methods"] == ["bema"]
    user.write_text('[defaults]\nmethods = ["broadening"]\n')
    o = methods_of(cli)
    assert o["methods"] == ["broadening"] and o["weighting"] == "sv"  # the system file sets what the user's omits
    explicit = tmp_path / "x.toml"
    explicit.write_text('[defaults]\nmethods = "bema,screenot"\nscreenot-k = 7\n')
    o = methods_of(cli, "--config", explicit)
    assert o["methods"] == ["bema", "screenot"] and o["params"]["screenot"] == {"k": 7}
    assert methods_of(cli, "--config", explicit, "--methods", "gavish-donoho")["methods"] == ["gavish-donoho"]
    code, out, _ = cli("config", "--config", explicit)
    assert code == 0
    assert f"defaults.methods = 'bema,screenot'  # {explicit}" in out
    assert f"defaults.weighting = 'sv'  # {system}" in out and "defaults.cosines = 'mp'  # default" in out
    assert "keymap.quit = 'q'  # default" in out and "app.theme = 'textual-dark'  # default" in out


@pytest.mark.parametrize("text, message", [
    ("[defaults]\nmethodz = 'bema'\n", "[defaults] methodz is not an option of any command"),
    ("[defaults]\nalpha = 'high'\n", "[defaults] alpha = 'high': must be a number"),
    ("[defaults]\nscreenot-k = 2.5\n", "[defaults] screenot-k = 2.5: must be an integer"),
    ("[defaults]\ncosines = 'best'\n", "must be one of mp, empirical, auto"),
    ("[defaults]\nequalise = 'yes'\n", "must be true or false"),
    ("[keymap]\nexplode = 'x'\n", "[keymap] explode is not a binding id; allowed: "),
    ("[keymap]\nquit = 3\n", "[keymap] quit = 3: must be a key name"),
    ("[app]\ntheme = 'neon'\n", "[app] theme = 'neon': allowed: textual-dark"),
    ("[app]\ncolour = 'red'\n", "[app] colour is not a setting; allowed: theme"),
    ("[display]\nx = 1\n", "unknown section [display]"),
    ("[defaults\n", "not valid TOML"),
    ("[defaults]\nmode = 'bogus'\n", "[defaults] mode = 'bogus': 'bogus': choose from hard, shrink, whitened"),
    ("[defaults]\ncalibration-tokens = 0\n", "[defaults] calibration-tokens = 0: '0' is not a positive integer"),
])
def test_every_error_is_exit_2_with_file_and_key(homes, cli, text, message):
    _, user = homes
    user.write_text(text)
    code, out, err = cli("report", DEFAULT_DEMO_MODEL)
    assert code == 2 and out == "" and str(user) in err and message in err


def test_the_truncation_mode_and_calibration_come_from_the_config(homes, cli):
    _, user = homes
    user.write_text('[defaults]\nmode = "hard,whitened"\ncalibration-tokens = 2048\nallocation = "uniform"\n')
    code, out, err = cli("eval", DEFAULT_DEMO_MODEL.parent / "tiny-llama", "--compress", "20%", "--layers",
                         "model.layers.*", "--format", "json")
    assert code == 0, err
    c = json.loads(out)["compress"]
    assert set(c["modes"]) == {"hard", "whitened"} and c["calibration"]["tokens"] == 2048
    assert c["allocation"] == "uniform"


def test_a_missing_explicit_file_is_named(homes, cli, tmp_path):
    code, _, err = cli("report", DEFAULT_DEMO_MODEL, "--config", tmp_path / "nope.toml")
    assert code == 2 and "nope.toml: no such config file (--config)" in err


def test_a_value_only_some_commands_take_reaches_only_them(homes, cli):
    _, user = homes
    user.write_text('[defaults]\nformat = "csv"\n')
    code, out, _ = cli("report", DEFAULT_DEMO_MODEL, "--no-cache")
    assert code == 0 and out.startswith("name,shape,")  # report takes csv
    code, out, _ = cli("eval", DEFAULT_DEMO_MODEL, "--layers", "fc2.weight", "--no-cache")
    assert code == 0 and "baseline" in out  # eval has no csv: its own default (a table)


async def test_a_remapped_key_works_in_the_app_and_the_help_shows_it():
    from helpers import settle

    from rmt_tui.app import RmtApp
    from rmt_tui.engine import InlineEngine
    from rmt_tui.screens import HelpScreen

    app = RmtApp([DEFAULT_DEMO_MODEL], engine=InlineEngine(), keymap={"analyse_all": "z", "help": "f1"})
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("a")  # no longer bound
        await settle(app, pilot)
        assert len(app.session.opened[0].results) < len(app.session.opened[0].ckpt.layers)
        await pilot.press("z")
        await settle(app, pilot, rounds=2)
        assert len(app.session.opened[0].results) == len(app.session.opened[0].ckpt.layers)
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        rows = dict(app.screen.rows)
        assert rows["z"].endswith("[analyse_all]") and rows["q"].endswith("[quit]")


def test_the_footer_shows_a_remapped_key(snap_compare):
    from rmt_tui.app import RmtApp
    from rmt_tui.engine import InlineEngine

    app = RmtApp([DEFAULT_DEMO_MODEL], engine=InlineEngine(), keymap={"analyse_all": "z", "quit": "ctrl+q"})

    async def run_before(pilot):
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


async def test_a_theme_chosen_in_the_app_is_written_back_keeping_the_rest(tmp_path):
    from helpers import settle

    from rmt_tui.app import RmtApp
    from rmt_tui.engine import InlineEngine

    cfg = tmp_path / "config.toml"
    cfg.write_text('# my settings\n[defaults]\nmethods = ["bema"]  # only BEMA\n\n[app]\ntheme = "nord"  # dark\n')
    app = RmtApp([DEFAULT_DEMO_MODEL], engine=InlineEngine(), theme="nord", theme_file=cfg)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        assert app.theme == "nord" and cfg.read_text().count("nord") == 1  # starting with it writes nothing
        app.theme = "gruvbox"
        await pilot.pause()
    assert cfg.read_text() == ('# my settings\n[defaults]\nmethods = ["bema"]  # only BEMA\n\n[app]\n'
                               'theme = "gruvbox"  # dark\n')
    fresh = tmp_path / "new.toml"
    app = RmtApp([DEFAULT_DEMO_MODEL], engine=InlineEngine(), theme_file=fresh)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        app.theme = "dracula"
        await pilot.pause()
    assert fresh.read_text() == '[app]\ntheme = "dracula"\n'
