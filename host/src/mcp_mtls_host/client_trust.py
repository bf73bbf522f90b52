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

cpex's gRPC client (``cpex.framework.external.grpc.tls_utils.create_secure_channel``) gets the same treatment.
grpcio already trusts only ``root_certificates`` when they are given, but cpex's channel has three defects this
module replaces: ``verify: false`` or a missing ``ca_bundle`` passes ``root_certificates=None``, which makes grpcio
trust its bundled public roots (not "no verification"); ``keyfile_password`` is ignored, so an encrypted client key
fails; and grpcio's channel credentials take no CRL. The replacement reads the bundle, decrypts the key in memory,
and, when the TLS set has a CRL, checks the plugin's server certificate against it with one handshake before the
channel is made (``grpc_server_problem``): a revoked server certificate is refused when the gateway connects. The
channel then lives as long as the gateway's plugin (grpcio reconnects on its own, without that check), which is why
a CRL change restarts the gateway.

One more gRPC defect is not about trust but stops every call: cpex's ``pydantic_context_to_proto`` (module
``proto_convert``) hands the plugin context's ``metadata`` and ``state`` to protobuf's ``ParseDict``, which takes only
JSON types, while gateway 1.1.0 puts its ``Tool`` model (with datetimes and URLs) into ``global_context.metadata``
before ``tool_pre_invoke``: every tool call through a gRPC plugin fails with "ParseError ... has unexpected type
<class 'mcpgateway.common.models.Tool'>". ``jsonable_context`` converts them to JSON types first (pydantic's own
conversion, as the MCP transport's JSON encoding does).

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
GRPC_TARGET = "cpex.framework.external.grpc.tls_utils"
GRPC_CLIENT = "cpex.framework.external.grpc.client"
# SHA-256 of inspect.getsource(create_secure_channel) in cpex 0.1.4.
GRPC_TESTED_DIGEST = "7ed64979d546de706b4a3409f1a8e72a66ce9715ca92e5fb5089f6ec0a6f38c3"
PROTO_TARGET = "cpex.framework.external.proto_convert"
GRPC_SERVER = "cpex.framework.external.grpc.server.server"
# SHA-256 of inspect.getsource(pydantic_context_to_proto) in cpex 0.1.4.
PROTO_TESTED_DIGEST = "93af86938452bef1ad24ece5e3436c52f0abe14b3df0a77f34ebf79a1a4bdccf"
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


def grpc_ssl_context(tls_config):
    """A Python TLS client context that judges a gRPC plugin's server as the replaced channel does: only ca_bundle,
    TLS 1.2 or later, strict X.509, the name checked, ALPN h2, the client certificate, and the CRL beside the bundle
    when there is one. For the channel's one-handshake check and the probe's handshakes."""
    import os  # pylint: disable=import-outside-toplevel
    import ssl  # pylint: disable=import-outside-toplevel

    from . import crlfile  # pylint: disable=import-outside-toplevel

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_flags |= getattr(ssl, "VERIFY_X509_STRICT", 0)
    context.load_verify_locations(cafile=tls_config.ca_bundle)
    crl = crlfile.beside(tls_config.ca_bundle)
    if os.path.exists(crl):
        crlfile.current(crl)
        context.load_verify_locations(cafile=crl)
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    context.set_alpn_protocols(["h2"])
    if tls_config.certfile:
        context.load_cert_chain(certfile=tls_config.certfile, keyfile=tls_config.keyfile,
                                password=getattr(tls_config, "keyfile_password", None))
    return context


def split_target(target):
    """(host, port) of a gRPC target HOST:PORT or [V6]:PORT; ValueError when it is neither."""
    host, sep, port = str(target).rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError("gRPC target %r is not HOST:PORT" % (target,))
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host, int(port)


def grpc_server_problem(target, tls_config, timeout=5.0):
    """None when the server at TARGET passes grpc_ssl_context's checks (or cannot be reached: grpcio then reports
    that itself), else why its certificate is refused (a revoked one among them)."""
    import socket  # pylint: disable=import-outside-toplevel
    import ssl  # pylint: disable=import-outside-toplevel

    host, port = split_target(target)
    context = grpc_ssl_context(tls_config)
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=host):
                return None
    except ssl.SSLCertVerificationError as exc:
        return "server certificate refused: %s" % (exc.verify_message or exc.reason or exc)
    except (OSError, ssl.SSLError):
        return None


def _client_key(tls_config):
    """(private key PEM, certificate chain PEM) of the client, the key decrypted in memory; (None, None) without."""
    if not (tls_config.certfile and tls_config.keyfile):
        return None, None
    with open(tls_config.keyfile, "rb") as handle:
        key = handle.read()
    with open(tls_config.certfile, "rb") as handle:
        chain = handle.read()
    password = getattr(tls_config, "keyfile_password", None)
    if password and (b"ENCRYPTED" in key.split(b"-----END", 1)[0]):  # a password for a plain key is ignored
        from cryptography.hazmat.primitives import serialization  # pylint: disable=import-outside-toplevel

        loaded = serialization.load_pem_private_key(key, password.encode("utf-8"))
        key = loaded.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption())
    return key, chain


def grpc_restricted(original):
    """create_secure_channel that trusts only tls_config.ca_bundle, takes keyfile_password and refuses a server
    certificate the CRL revokes (ORIGINAL: cpex's, used when verification is off or there is no bundle)."""

    def create_secure_channel(target, tls_config, plugin_name="unknown"):
        if not getattr(tls_config, "verify", True) or not getattr(tls_config, "ca_bundle", None):
            return original(target, tls_config, plugin_name)
        import grpc  # pylint: disable=import-outside-toplevel
        from cpex.framework.errors import PluginError  # pylint: disable=import-outside-toplevel
        from cpex.framework.models import PluginErrorModel  # pylint: disable=import-outside-toplevel

        try:
            with open(tls_config.ca_bundle, "rb") as handle:
                roots = handle.read()
            key, chain = _client_key(tls_config)
            problem = grpc_server_problem(target, tls_config)
        except Exception as exc:
            message = f"Failed to configure gRPC TLS for plugin '{plugin_name}': {exc}"
            _log().error(message)
            raise PluginError(error=PluginErrorModel(message=message, plugin_name=plugin_name)) from exc
        if problem:
            message = f"gRPC plugin '{plugin_name}' at {target}: {problem}"
            _log().error(message)
            raise PluginError(error=PluginErrorModel(message=message, plugin_name=plugin_name))
        credentials = grpc.ssl_channel_credentials(root_certificates=roots, private_key=key, certificate_chain=chain)
        return grpc.aio.secure_channel(target, credentials)

    setattr(create_secure_channel, MARK, True)
    create_secure_channel.__wrapped__ = original
    return create_secure_channel


def jsonable_context(original):
    """pydantic_context_to_proto that first turns the context's metadata and state (and its global context's, and a
    dict user) into JSON types, which protobuf's ParseDict takes (ORIGINAL: cpex's, which then converts)."""

    def pydantic_context_to_proto(ctx):
        from pydantic_core import to_jsonable_python  # pylint: disable=import-outside-toplevel

        def plain(value):
            return to_jsonable_python(value, fallback=str) if value else value

        glob = ctx.global_context
        update = {"metadata": plain(glob.metadata), "state": plain(glob.state)}
        if isinstance(glob.user, dict):
            update["user"] = plain(glob.user)
        ctx = ctx.model_copy(update={"global_context": glob.model_copy(update=update), "metadata": plain(ctx.metadata),
                                     "state": plain(ctx.state)})
        return original(ctx)

    setattr(pydantic_context_to_proto, MARK, True)
    pydantic_context_to_proto.__wrapped__ = original
    return pydantic_context_to_proto


def _digest(function):
    import hashlib  # pylint: disable=import-outside-toplevel
    import inspect  # pylint: disable=import-outside-toplevel

    try:
        return hashlib.sha256(inspect.getsource(function).encode("utf-8")).hexdigest()
    except (OSError, TypeError):
        return None


# Module -> (function, the name of cpex 0.1.4's digest here, replacement factory, the modules that import the
# function by name, what is lost without the patch).
_PATCHES = {
    TARGET: ("create_ssl_context", "TESTED_DIGEST", restricted, (CLIENT,),
             "plugin connections keep trusting the system CA store as well as ca_bundle"),
    GRPC_TARGET: ("create_secure_channel", "GRPC_TESTED_DIGEST", grpc_restricted, (GRPC_CLIENT,),
                  "gRPC plugin channels keep cpex's credentials (no CRL, no key password, public roots without a bundle)"),
    PROTO_TARGET: ("pydantic_context_to_proto", "PROTO_TESTED_DIGEST", jsonable_context, (GRPC_CLIENT, GRPC_SERVER),
                   "a gRPC hook call whose context holds a model (the gateway's tool) fails to convert"),
}


def patch(module) -> bool:
    """Replace the function of MODULE (cpex's MCP or gRPC tls_utils) and the copy cpex's client imported, when
    loaded. True when the function in place is ours."""
    name, digest, factory, importers, lost = _PATCHES[module.__name__]
    original = getattr(module, name, None)
    if original is None:
        _log().warning("%s has no %s: %s", module.__name__, name, lost)
        return False
    if getattr(original, MARK, False):
        return True
    if _digest(original) != globals()[digest]:
        _log().warning("cpex's %s is not the cpex 0.1.4 code this hook was written for: %s (pin cpex==0.1.4)",
                       name, lost)
        return False
    setattr(module, name, factory(original))
    for importer in importers:
        client = sys.modules.get(importer)
        if client is not None and getattr(client, name, None) is original:
            setattr(client, name, getattr(module, name))
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
        if fullname not in _PATCHES:
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
        for target in _PATCHES:
            if target in sys.modules:
                patch(sys.modules[target])
        if not all(target in sys.modules for target in _PATCHES) and not any(
                isinstance(finder, _Finder) for finder in sys.meta_path):
            sys.meta_path.insert(0, _Finder())
    except Exception:  # pylint: disable=broad-except  # a .pth line must never stop Python from starting
        pass


def active() -> bool:
    """Whether the create_ssl_context cpex's client uses now trusts only ca_bundle (imports cpex)."""
    from cpex.framework.external.mcp import tls_utils  # pylint: disable=import-outside-toplevel

    return bool(getattr(tls_utils.create_ssl_context, MARK, False))


def grpc_active() -> bool:
    """Whether the create_secure_channel cpex's gRPC client uses now is ours (imports cpex's gRPC client: grpcio)."""
    from cpex.framework.external.grpc import client  # pylint: disable=import-outside-toplevel

    return bool(getattr(client.create_secure_channel, MARK, False))
