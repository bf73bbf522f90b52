# -*- coding: utf-8 -*-
# Copyright: mcpgateway.mtls contributors
# SPDX-License-Identifier: Apache-2.0
"""The gateway's plugin client trusts only its ``ca_bundle``, not the system CA store.

cpex 0.1.4's ``create_ssl_context`` (``cpex.framework.external.mcp.tls_utils``), which the gateway and the probe use
for every plugin connection, starts from ``ssl.create_default_context()`` and then adds ``ca_bundle``: any CA of the
host's system store (public or corporate) that signs a certificate for a plugin's name is trusted as well. This
module replaces that function, in every process of the venv it is installed into, by one that builds the context
from ``ca_bundle`` alone, with the same settings otherwise (TLS 1.2 or later, certificate and hostname verification
as configured, strict X.509 checks, the client certificate); and when the TLS set holds a CRL beside the bundle
(``ca.crl``, ``mcp_mtls_host.crlfile``), server certificates are checked against it. The rest of the process (the gateway's other outbound
TLS) keeps the system store.

It is installed by a ``.pth`` file of the host package (``install`` runs when Python starts in the venv): a finder
on ``sys.meta_path`` patches the module right after cpex loads it, before cpex's client imports the function. It
patches only the cpex code it was written for (source digest); otherwise it warns and changes nothing, and the
verify role's check (``mcp-mtls-probe --trust-check``) fails, as it should. A config without ``verify`` or without
``ca_bundle`` keeps cpex's own function (the verify role refuses such a config).
"""

from __future__ import annotations

# Only what install() needs at every interpreter start of the venv; the rest is imported when cpex loads.
import importlib.abc
import sys

TARGET = "cpex.framework.external.mcp.tls_utils"
CLIENT = "cpex.framework.external.mcp.client"
# SHA-256 of inspect.getsource(create_ssl_context) in cpex 0.1.4.
TESTED_DIGEST = "2640e3c9d32ba0ab0ee1c3ac50cd09e5dd84f1508c812ed116b5ad9565180ea6"
MARK = "mcp_mtls_trusts_only_ca_bundle"
LOGGER = "mcp_mtls_host.client_trust"


def _log():
    import logging  # pylint: disable=import-outside-toplevel

    return logging.getLogger(LOGGER)


def restricted(original):
    """create_ssl_context that trusts only tls_config.ca_bundle (ORIGINAL: cpex's, used when there is nothing to
    restrict: verification off or no bundle)."""
    import os  # pylint: disable=import-outside-toplevel
    import ssl  # pylint: disable=import-outside-toplevel

    from . import crlfile  # pylint: disable=import-outside-toplevel

    def create_ssl_context(tls_config, plugin_name):
        if not getattr(tls_config, "verify", True) or not getattr(tls_config, "ca_bundle", None):
            return original(tls_config, plugin_name)
        from cpex.framework.errors import PluginError  # pylint: disable=import-outside-toplevel
        from cpex.framework.models import PluginErrorModel  # pylint: disable=import-outside-toplevel

        try:
            # Not create_default_context(): no load_default_certs(), so no system store.
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname on
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.verify_flags |= getattr(ssl, "VERIFY_X509_STRICT", 0)
            context.load_verify_locations(cafile=tls_config.ca_bundle)
            crl = crlfile.beside(tls_config.ca_bundle)
            if os.path.exists(crl):  # the CRLs of the bundle's CAs: a revoked server certificate is refused
                crlfile.current(crl)  # an expired CRL would refuse every plugin: say so instead
                context.load_verify_locations(cafile=crl)
                context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
            if not tls_config.check_hostname:
                _log().warning("Hostname verification disabled for plugin '%s'. This increases risk of MITM attacks.",
                               plugin_name)
                context.check_hostname = False
            if tls_config.certfile:
                context.load_cert_chain(certfile=tls_config.certfile, keyfile=tls_config.keyfile,
                                        password=tls_config.keyfile_password)
            return context
        except Exception as exc:
            message = f"Failed to configure SSL context for plugin '{plugin_name}': {exc}"
            _log().error(message)
            raise PluginError(error=PluginErrorModel(message=message, plugin_name=plugin_name)) from exc

    setattr(create_ssl_context, MARK, True)
    create_ssl_context.__wrapped__ = original
    return create_ssl_context


def _digest(function):
    import hashlib  # pylint: disable=import-outside-toplevel
    import inspect  # pylint: disable=import-outside-toplevel

    try:
        return hashlib.sha256(inspect.getsource(function).encode("utf-8")).hexdigest()
    except (OSError, TypeError):
        return None


def patch(module) -> bool:
    """Replace MODULE's create_ssl_context (and the copy cpex's client imported, when loaded). True when the
    function in place trusts only ca_bundle."""
    original = getattr(module, "create_ssl_context", None)
    if original is None:
        _log().warning("%s has no create_ssl_context: the plugin client's trust is not restricted", TARGET)
        return False
    if getattr(original, MARK, False):
        return True
    if _digest(original) != TESTED_DIGEST:
        _log().warning("cpex's create_ssl_context is not the cpex 0.1.4 code this hook was written for: plugin "
                       "connections keep trusting the system CA store as well as ca_bundle (pin cpex==0.1.4)")
        return False
    module.create_ssl_context = restricted(original)
    client = sys.modules.get(CLIENT)
    if client is not None and getattr(client, "create_ssl_context", None) is original:
        client.create_ssl_context = module.create_ssl_context
    return True


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        try:
            patch(module)
        except Exception as exc:  # pylint: disable=broad-except  # never break the import itself
            _log().warning("could not restrict the plugin client's trust: %s", exc)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader of TARGET so that the module is patched once it has run."""

    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _PatchingLoader(spec.loader)
                return spec
            if spec is not None:
                return spec
        return None


def install() -> None:
    """Called by the .pth file at interpreter start: patch now if cpex's module is loaded, else when it loads."""
    try:
        if TARGET in sys.modules:
            patch(sys.modules[TARGET])
        elif not any(isinstance(finder, _Finder) for finder in sys.meta_path):
            sys.meta_path.insert(0, _Finder())
    except Exception:  # pylint: disable=broad-except  # a .pth line must never stop Python from starting
        pass


def active() -> bool:
    """Whether the create_ssl_context cpex's client uses now trusts only ca_bundle (imports cpex)."""
    from cpex.framework.external.mcp import tls_utils  # pylint: disable=import-outside-toplevel

    return bool(getattr(tls_utils.create_ssl_context, MARK, False))
