"""Unit tests for mcp_mtls_host.client_trust (the gateway's plugin client trusts only ca_bundle) and
mcp_mtls_host.trustcheck (the probe's --trust-check). Real TLS handshakes on 127.0.0.1 with certificates made
here; cpex is replaced by a small stand-in package that has cpex 0.1.4's create_ssl_context behaviour (the real
cpex runs in the molecule and lab tests, where verify runs the check)."""

from __future__ import annotations

import importlib
import logging
import os
import ssl
import sys
import textwrap
import types

import pytest

from mcp_mtls_host import client_trust, trustcheck

FAKE_TLS_UTILS = textwrap.dedent('''
    import ssl

    def create_ssl_context(tls_config, plugin_name):
        ssl_context = ssl.create_default_context()
        ssl_context.minimum_version = ssl.TLSVersion.TLSv1_2
        if not tls_config.verify:
            ssl_context.check_hostname = False
            ssl_context.verify_mode = ssl.CERT_NONE
            return ssl_context
        if tls_config.ca_bundle:
            ssl_context.load_verify_locations(cafile=tls_config.ca_bundle)
        if not tls_config.check_hostname:
            ssl_context.check_hostname = False
        if tls_config.certfile:
            ssl_context.load_cert_chain(certfile=tls_config.certfile, keyfile=tls_config.keyfile)
        return ssl_context
''')


@pytest.fixture()
def fake_cpex(tmp_path, monkeypatch):
    """A package 'cpex' with framework.errors, framework.models and framework.external.mcp.tls_utils."""
    root = tmp_path / "site" / "cpex"
    (root / "framework" / "external" / "mcp").mkdir(parents=True)
    for folder in (root, root / "framework", root / "framework" / "external", root / "framework" / "external" / "mcp"):
        (folder / "__init__.py").write_text("")
    (root / "framework" / "errors.py").write_text(
        "class PluginError(Exception):\n    def __init__(self, error):\n        super().__init__(error.message)\n"
        "        self.error = error\n")
    (root / "framework" / "models.py").write_text(
        "class PluginErrorModel:\n    def __init__(self, message, plugin_name):\n"
        "        self.message, self.plugin_name = message, plugin_name\n")
    (root / "framework" / "external" / "mcp" / "tls_utils.py").write_text(FAKE_TLS_UTILS)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for name in [n for n in sys.modules if n == "cpex" or n.startswith("cpex.")]:
        monkeypatch.delitem(sys.modules, name)
    saved = list(sys.meta_path)
    yield root
    sys.meta_path[:] = saved
    for name in [n for n in sys.modules if n == "cpex" or n.startswith("cpex.")]:
        del sys.modules[name]


def fake_digest(monkeypatch):
    """Accept the stand-in's source as the tested cpex code."""
    source = FAKE_TLS_UTILS[FAKE_TLS_UTILS.index("def create_ssl_context"):]
    import hashlib

    monkeypatch.setattr(client_trust, "TESTED_DIGEST", hashlib.sha256(source.encode()).hexdigest())


def config(ca_bundle=None, verify=True, check_hostname=True, certfile=None, keyfile=None):
    return types.SimpleNamespace(ca_bundle=ca_bundle, verify=verify, check_hostname=check_hostname, certfile=certfile,
                                 keyfile=keyfile, keyfile_password=None)


@pytest.fixture()
def rogue(tmp_path):
    """A server on 127.0.0.1 with a certificate for mcp-plugin-a from a CA that only SSL_CERT_FILE offers; and our own
    CA bundle (another CA)."""
    rogue_dir, ours_dir = tmp_path / "rogue", tmp_path / "ours"
    rogue_dir.mkdir()
    ours_dir.mkdir()
    ca, cert, key = trustcheck._certificates(str(rogue_dir), "mcp-plugin-a")
    ours = trustcheck._certificates(str(ours_dir), "unused")[0]
    server = trustcheck._Server(cert, key)
    yield types.SimpleNamespace(ca=ca, ours=ours, port=server.port)
    server.close()


def test_the_finder_patches_cpex_when_it_loads_and_the_system_store_is_no_longer_trusted(fake_cpex, monkeypatch, rogue):
    fake_digest(monkeypatch)
    client_trust.install()
    client_trust.install()  # idempotent: one finder
    assert sum(isinstance(f, client_trust._Finder) for f in sys.meta_path) == 1
    tls_utils = importlib.import_module(client_trust.TARGET)
    assert getattr(tls_utils.create_ssl_context, client_trust.MARK, False)
    assert client_trust.active()
    monkeypatch.setenv("SSL_CERT_FILE", rogue.ca)
    # cpex's own function trusts the system store: the rogue server is accepted (the control).
    assert trustcheck._connect(tls_utils.create_ssl_context.__wrapped__(config(rogue.ours), "a"), rogue.port,
                               "mcp-plugin-a", 5) is None
    refused = trustcheck._connect(tls_utils.create_ssl_context(config(rogue.ours), "a"), rogue.port, "mcp-plugin-a", 5)
    assert refused and refused.startswith("certificate verify failed")
    # Its own CA is trusted: the bundle that holds the rogue CA is accepted.
    assert trustcheck._connect(tls_utils.create_ssl_context(config(rogue.ca), "a"), rogue.port, "mcp-plugin-a", 5) is None


def test_the_context_keeps_cpexs_settings(fake_cpex, monkeypatch, rogue):
    fake_digest(monkeypatch)
    client_trust.install()
    tls_utils = importlib.import_module(client_trust.TARGET)
    context = tls_utils.create_ssl_context(config(rogue.ca), "a")
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_flags & ssl.VERIFY_X509_STRICT
    assert not tls_utils.create_ssl_context(config(rogue.ca, check_hostname=False), "a").check_hostname
    # A name outside the certificate is refused when hostname checks are on.
    wrong = trustcheck._connect(context, rogue.port, "mcp-plugin-b", 5)
    assert wrong and "certificate verify failed" in wrong
    # Nothing to restrict (no bundle, or verification off): cpex's own function answers, with the system store.
    monkeypatch.setenv("SSL_CERT_FILE", rogue.ca)
    assert [c["subject"] for c in tls_utils.create_ssl_context(config(None), "a").get_ca_certs()] == [
        ((("commonName", "mcp-mtls trust check CA"),),)]
    assert tls_utils.create_ssl_context(config(rogue.ca, verify=False), "a").verify_mode == ssl.CERT_NONE


def test_a_bad_bundle_is_a_plugin_error_naming_the_plugin(fake_cpex, monkeypatch, tmp_path):
    fake_digest(monkeypatch)
    client_trust.install()
    tls_utils = importlib.import_module(client_trust.TARGET)
    errors = importlib.import_module("cpex.framework.errors")
    with pytest.raises(errors.PluginError, match="Failed to configure SSL context for plugin 'guard'"):
        tls_utils.create_ssl_context(config(str(tmp_path / "missing.crt")), "guard")


def test_other_cpex_code_is_left_alone_with_a_warning(fake_cpex, caplog):
    client_trust.install()
    with caplog.at_level(logging.WARNING, logger=client_trust.LOGGER):
        tls_utils = importlib.import_module(client_trust.TARGET)
    assert not getattr(tls_utils.create_ssl_context, client_trust.MARK, False)
    assert "not the cpex 0.1.4 code" in caplog.text


def test_the_pth_line_of_the_wheel_installs_the_hook():
    from ansible_collections.mcpgateway.mtls.plugins.module_utils import _wheel

    (name, line), = _wheel.ROOT_FILES
    assert name.endswith(".pth") and line.startswith(b"import ")
    namespace = {}
    exec(line.decode(), namespace)  # what site.py does with it  # noqa: S102
    assert any(isinstance(f, client_trust._Finder) for f in sys.meta_path)
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, client_trust._Finder)]


def test_trust_check_passes_with_the_hook_and_fails_without(fake_cpex, monkeypatch, tmp_path):
    ours = tmp_path / "ours"
    ours.mkdir()
    bundle = trustcheck._certificates(str(ours), "unused")[0]
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    unpatched = trustcheck.run("a", "mcp-plugin-a", config(bundle), timeout=5)
    assert unpatched["ok"] is False and "cpex trusts the system store" in unpatched["seen"], unpatched
    assert "SSL_CERT_FILE" not in os.environ  # restored
    for name in [n for n in sys.modules if n.startswith("cpex.framework.external")]:
        del sys.modules[name]
    fake_digest(monkeypatch)
    client_trust.install()
    patched = trustcheck.run("a", "mcp-plugin-a", config(bundle), timeout=5)
    assert patched["ok"] is True and patched["seen"].startswith("refused: certificate verify failed"), patched
    assert patched["check"] == "plugin_client_trusts_only_ca_bundle" and patched["target"] == "a"
