"""Unit tests for the command lines of the host package: mcp_mtls_host.probe (one-shot, --check-config, --loop)
and mcp_mtls_host.launcher, as `python -m` runs them with only host/src on the path (no cpex needed)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from mcp_mtls_host import common, configcheck, probe

HOST_SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))), "host", "src")


@pytest.fixture()
def run_python_m(tmp_path):
    """run_python_m(module, *args): `python -m module args` from tmp_path, with PYTHONPATH=host/src and a cpex
    (and uvicorn) that cannot be imported, whatever this Python has installed."""
    blocked = tmp_path / "blocked"
    for name in ("cpex", "uvicorn"):
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text("raise ImportError('%s is not installed (blocked by the test)')\n" % name)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MCP_PLUGIN_", "PLUGINS_"))}
    env["PYTHONPATH"] = os.pathsep.join((HOST_SRC, str(blocked)))

    def run(module, *args):
        return subprocess.run([sys.executable, "-m", module] + list(args), cwd=str(tmp_path), env=env,
                              capture_output=True, text=True, timeout=60, check=False)

    return run


def test_probe_help_runs_without_cpex(run_python_m):
    proc = run_python_m("mcp_mtls_host.probe", "--help")
    assert proc.returncode == 0, proc.stderr
    for option in ("--check-config", "--loop", "--interval", "--fingerprint-every", "--reload-grace", "--stop-file", "--summary"):
        assert option in proc.stdout


def test_launcher_check_tls_policy_runs_without_cpex(run_python_m):
    proc = run_python_m("mcp_mtls_host.launcher", "--check-tls-policy")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "TLS policy ok: TLSv1.2 or later, TLS 1.2 ciphers ECDHE+AESGCM:ECDHE+CHACHA20\n"


def test_probe_reports_a_missing_config_as_one_json_line(run_python_m, tmp_path):
    missing = str(tmp_path / "nope.yaml")
    proc = run_python_m("mcp_mtls_host.probe", "--no-env-file", "--config", missing)
    assert proc.returncode == 2
    line = json.loads(proc.stdout)
    assert line["ok"] is False and line["stage"] == "config" and line["error"] == "config file %s does not exist" % missing
    proc = run_python_m("mcp_mtls_host.probe", "--no-env-file", "--config", missing, "--loop", "5")
    assert proc.returncode == 2
    assert json.loads(proc.stdout) == {"loop": True, "ok": False, "error": "config file %s does not exist" % missing,
                                       "user": common.current_user()}


def test_probe_names_the_missing_cpex(run_python_m, tmp_path):
    config = tmp_path / "plugins.yaml"
    config.write_text("plugins: []\n")
    proc = run_python_m("mcp_mtls_host.probe", "--no-env-file", "--config", str(config), "--check-config")
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["error"].startswith("cpex is not importable with %s" % sys.executable)


# ---------------------------------------------------------------- in-process


def test_load_env_file_takes_only_plugins_settings(tmp_path, monkeypatch):
    env_file = tmp_path / "env"
    env_file.write_text(
        "# comment\nPLUGINS_A=plain\nexport PLUGINS_B='single quoted'\nPLUGINS_C=\"a \\\"b\\\" c\"\nOTHER=ignored\nnot a setting\n"
    )
    for key in ("PLUGINS_A", "PLUGINS_B", "PLUGINS_C", "OTHER"):
        monkeypatch.setenv(key, "before")  # restored (unset) after the test
    common.load_env_file(str(env_file))
    assert {key: os.environ[key] for key in ("PLUGINS_A", "PLUGINS_B", "PLUGINS_C", "OTHER")} == {
        "PLUGINS_A": "plain", "PLUGINS_B": "single quoted", "PLUGINS_C": 'a "b" c', "OTHER": "before"}


def test_load_config_errors(tmp_path):
    config = str(tmp_path / "plugins.yaml")
    error, loaded = configcheck.load_config(config, str(tmp_path / "no-env"))
    assert error.startswith("cannot read env file %s as user " % (tmp_path / "no-env")) and loaded is None
    assert configcheck.load_config(config) == ("config file %s does not exist" % config, None)


def test_main_reports_config_errors_in_the_mode_asked(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # main() moves to /: back after the test
    missing = str(tmp_path / "nope.yaml")
    assert probe.main(["--no-env-file", "--config", missing]) == 2
    line = json.loads(capsys.readouterr().out)
    assert line["error"] == "config file %s does not exist" % missing and line["name"] is None
    summary = tmp_path / "summary.json"
    assert probe.main(["--no-env-file", "--config", missing, "--loop", "5", "--summary", str(summary)]) == 2
    out = capsys.readouterr().out
    assert json.loads(out)["loop"] is True and summary.read_text() == out


def test_new_ok_reports_plugins_the_config_does_not_list_yet(tmp_path, monkeypatch, capsys):
    """--new-ok: a --plugin the gateway's config does not list yet (a rollout reaches the gateways last) gives one
    line with "new": true and no failure; the listed ones are still probed; without --new-ok it is an error."""
    monkeypatch.chdir(tmp_path)
    config = str(tmp_path / "plugins.yaml")
    listed = [type("Plugin", (), {"name": "Old"})()]
    monkeypatch.setattr(configcheck, "load_config", lambda path, env=None: (None, object()))
    monkeypatch.setattr(configcheck, "external_plugins", lambda loaded: listed)
    probed = []

    def fake_probe_all(plugins, args):
        probed.append([p.name for p in plugins])
        results = [dict(probe.result_template(p.name, "https://x/mcp"), ok=True) for p in plugins]
        for res in results:
            common.emit(res)
        return results

    monkeypatch.setattr(probe, "probe_all", fake_probe_all)
    assert probe.main(["--config", config, "--no-env-file", "--plugin", "Old", "--plugin", "New"]) == 2
    assert json.loads(capsys.readouterr().out)["error"] == "plugin(s) not in %s: New" % config and probed == []
    assert probe.main(["--config", config, "--no-env-file", "--plugin", "Old", "--plugin", "New", "--new-ok"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["name"], line["ok"], line.get("new")) for line in lines] == [("New", None, True), ("Old", True, None)]
    assert lines[0]["error"] == "not in %s yet" % config and probed == [["Old"]]
    # Only new plugins: nothing to probe, exit 0; the environment form (for callers that may meet an older probe).
    monkeypatch.setenv("MCP_MTLS_PROBE_NEW_OK", "1")
    assert probe.main(["--config", config, "--no-env-file", "--plugin", "New"]) == 0
    assert json.loads(capsys.readouterr().out)["new"] is True and probed == [["Old"]]


# ---------------------------------------------------------------- command line


def test_cli_defaults_keep_the_one_shot_mode():
    args = probe.parse_args([])
    assert args.loop is None and args.summary is None and args.stop_file is None
    args = probe.parse_args(["--loop", "30", "--plugin", "a", "--summary", "/tmp/s.json", "--stop-file", "/tmp/stop"])
    assert args.loop == 30.0 and args.interval == 0.2 and args.fingerprint_every == 1.0
    assert args.plugin == ["a"] and args.summary == "/tmp/s.json"


@pytest.mark.parametrize(
    "argv",
    [
        ["--summary", "/tmp/s.json"],
        ["--stop-file", "/tmp/stop"],
        ["--loop", "0"],
        ["--loop", "10", "--interval", "0"],
        ["--loop", "10", "--no-hook"],
        ["--loop", "10", "--check-config"],
        ["--loop", "10", "--fingerprint-every", "-1"],
        ["--loop", "10", "--new-ok"],
    ],
)
def test_cli_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as info:
        probe.parse_args(argv)
    assert info.value.code == 2
    assert capsys.readouterr().out == ""  # stdout stays for the JSON line


def test_a_plugin_whose_probe_escapes_with_a_cancellation_gets_a_failed_line_and_the_others_are_probed(monkeypatch, capsys):
    """Whatever escapes one plugin's probe (a CancelledError out of the MCP client's scopes is a BaseException) is
    that plugin's failed line; the plugins before and after it are probed and printed (each line as it is done)."""
    plugins = [type("Plugin", (), {"name": n, "mcp": type("M", (), {"url": "https://%s:1/mcp" % n})()})() for n in "ABC"]

    async def fake_probe_plugin(plugin_config, args):
        if plugin_config.name == "B":
            raise asyncio.CancelledError("cancelled by a cancel scope")
        return dict(probe.result_template(plugin_config.name, plugin_config.mcp.url), ok=True, stage="done")

    monkeypatch.setattr(probe, "probe_plugin", fake_probe_plugin)
    results = probe.probe_all(plugins, probe.parse_args([]))
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == results and [(r["name"], r["ok"]) for r in lines] == [("A", True), ("B", False), ("C", True)]
    assert lines[1]["url"] == "https://B:1/mcp" and lines[1]["stage"] == "probe"
    assert lines[1]["error"] == "the probe of this plugin ended with CancelledError: cancelled by a cancel scope"
