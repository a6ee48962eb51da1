"""The plugin system: entry points, allow- and block-lists, check_pending, the
registries, and every hook documented and tested (datasette's rule)."""

from __future__ import annotations

import importlib.metadata
import inspect
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from campaignctl import hookspecs, plugins
from campaignctl.contracts import ChannelSender, DataSource
from campaignctl.hookspecs import hookimpl

ROOT = Path(__file__).resolve().parents[1]
BUILT_INS = {"duckdb", "postgres", "spark", "outbox"}


@pytest.fixture(autouse=True)
def fresh_plugins(monkeypatch):
    monkeypatch.delenv("CAMPAIGNCTL_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("CAMPAIGNCTL_BLOCK_PLUGINS", raising=False)
    plugins.reset()
    yield
    plugins.reset()


def hook_names() -> list[str]:
    return [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "campaignctl_spec")]


def test_built_ins_are_loaded_through_their_entry_points():
    entry_points = {ep.name: ep for ep in importlib.metadata.entry_points(group="campaignctl")}
    assert BUILT_INS <= set(entry_points)
    pm = plugins.plugin_manager()
    for name in BUILT_INS:
        assert pm.get_plugin(name) is entry_points[name].load()


def test_allow_list_loads_only_the_named_plugins(monkeypatch):
    monkeypatch.setenv("CAMPAIGNCTL_LOAD_PLUGINS", "outbox")
    names = {name for name, plugin in plugins.plugin_manager().list_name_plugin()}
    assert names == {"outbox"}
    assert set(plugins.registry().channels) == {"outbox"}
    assert plugins.registry().data_sources == {}


def test_empty_allow_list_loads_nothing(monkeypatch):
    monkeypatch.setenv("CAMPAIGNCTL_LOAD_PLUGINS", "")
    assert plugins.plugin_manager().list_name_plugin() == []


def test_block_list_keeps_a_plugin_out(monkeypatch):
    monkeypatch.setenv("CAMPAIGNCTL_BLOCK_PLUGINS", "outbox")
    assert plugins.plugin_manager().get_plugin("outbox") is None
    assert "outbox" not in plugins.registry().channels
    assert "outbox" not in {info.name for info in plugins.plugin_infos()}


def test_misspelled_hook_implementation_is_an_error():
    class Typo:
        @hookimpl
        def register_chanels(self, register):  # one 'n' short
            register("x", object)

    with pytest.raises(Exception, match="register_chanels"):
        plugins.register_plugin(Typo(), name="typo")


def test_a_name_registered_twice_is_refused():
    class Second:
        @hookimpl
        def register_channels(self, register):
            register("outbox", lambda channel, root: None)

    plugins.register_plugin(Second(), name="second-outbox")
    with pytest.raises(plugins.PluginError, match="registered twice"):
        plugins.registry()


def test_plugin_infos_report_versions_and_hooks():
    infos = {info.name: info for info in plugins.plugin_infos()}
    assert infos["outbox"].version == importlib.metadata.version("campaignctl")
    assert infos["outbox"].hooks == ("register_channels",)


# -- one test per hook: test_hook_<name> ------------------------------------


def test_hook_register_data_sources():
    class Source:
        dialect = "duckdb"

        def table_columns(self, table):
            return ["customer_id"] if table == "customers" else None

        def query(self, sql):
            raise AssertionError("not queried here")

        def close(self):
            pass

    class Plugin:
        @hookimpl
        def register_data_sources(self, register):
            register("memory", lambda config, root: Source())

    plugins.register_plugin(Plugin(), name="memory-source")
    factory = plugins.registry().data_sources["memory"]
    source = factory(None, ROOT)
    assert isinstance(source, DataSource)
    assert source.table_columns("customers") == ["customer_id"]


def test_hook_register_channels(tmp_path):
    from campaignctl.contracts import OutgoingMessage
    from campaignctl.model import Channel

    factory = plugins.registry().channels["outbox"]
    sender = factory(Channel("email", "outbox", "email", 0.1, {"path": "out/e.jsonl"}), tmp_path)
    assert isinstance(sender, ChannelSender)
    results = sender.send([OutgoingMessage("k1", "c", "42", "email", "a@example.com", {"subject": "Hi"})])
    assert [r.status for r in results] == ["sent"]
    assert '"key": "k1"' in (tmp_path / "out/e.jsonl").read_text()


def test_hook_register_commands():
    from campaignctl.cli import cli

    class Plugin:
        @hookimpl
        def register_commands(self, cli):
            @cli.command("hello-plugin")
            def hello():
                click.echo("hello from a plugin")

    plugins.register_plugin(Plugin(), name="hello")
    plugins.plugin_manager().hook.register_commands(cli=cli)
    try:
        result = CliRunner().invoke(cli, ["hello-plugin"])
        assert result.output == "hello from a plugin\n"
    finally:
        cli.commands.pop("hello-plugin", None)


def test_every_hook_is_documented():
    docs = (ROOT / "docs" / "plugins.md").read_text()
    for name in hook_names():
        assert re.search(rf"^### `{name}\(", docs, re.M), f"{name} is not documented in docs/plugins.md"


def test_every_hook_has_a_test():
    tests = "\n".join(path.read_text() for path in (ROOT / "tests").rglob("test_*.py"))
    for name in hook_names():
        assert f"def test_hook_{name}(" in tests, f"no test_hook_{name} test"
