# -*- coding: utf-8 -*-
# Copyright: mcpgateway.mtls contributors
# SPDX-License-Identifier: Apache-2.0
"""The mTLS port's TLS material, reloaded without a restart (cpex defect 5: its TLS context is built once and
SIGHUP terminates it).

The launcher builds every TLS context itself (``build_context``) and hands uvicorn a ``ReloadingContext``: an
``ssl.SSLContext`` whose ``wrap_bio`` and ``wrap_socket`` create each new connection from the *current* context.
``TLSMaterial.reload`` (on SIGHUP, in a thread) builds a whole new context from the files, checks it, and only
then makes it current: every new handshake uses the new key, certificate and CA bundle (a CA removed from the
bundle is no longer trusted), established connections go on with the context they started with, and a set that
does not load is refused while the previous one keeps serving. Session tickets and resumption are off, so a
client verified under an earlier set cannot skip verification under the new one.

Each result is written to ``$RUNTIME_DIRECTORY/reload.json`` (the reload request, ``mcp-plugin-launcher
--reload PID``, waits for it: ``systemctl reload`` then fails when the set was refused), and the checksums of the
files in use replace the TLS lines of ``loaded.sha256``, the record module plugin_host compares with what it
deployed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import ssl
import threading
import time

from . import crlfile
from .launcher_checks import LauncherError, pem_key_is_encrypted
from .launcher_telemetry import METRICS_FILE, Telemetry
from .launcher_telemetry import install as install_telemetry

RELOAD_STATUS = "reload.json"
LOADED_RECORD = "loaded.sha256"
RELOAD_TIMEOUT_S = 60.0

log = logging.getLogger("mcp_plugin_launcher")


def _sha256(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def _self_check(context: ssl.SSLContext, cafile: str):
    """(None, the served certificate's notAfter in epoch seconds) when a client that trusts only CAFILE accepts the
    certificate CONTEXT serves, else (the reason, None).

    An in-memory handshake, no network: the client side verifies the served chain strictly against the bundle
    the same context verifies clients with (the plugin's certificate and the gateway's come from one CA).
    """
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_flags |= getattr(ssl, "VERIFY_X509_STRICT", 0)
    client.load_verify_locations(cafile)
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(c_in, c_out, server_side=False)
    server_side = context.wrap_bio(s_in, s_out, server_side=True)
    for _attempt in range(20):
        try:
            client_side.do_handshake()
            # The client verified the chain and finished (the server then wants a client certificate).
            return None, ssl.cert_time_to_seconds(client_side.getpeercert()["notAfter"])
        except ssl.SSLCertVerificationError as exc:
            return exc.verify_message or str(exc), None
        except ssl.SSLWantReadError:
            pass
        s_in.write(c_out.read())
        try:
            server_side.do_handshake()
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError:
            pass  # no client certificate: expected, the client's verdict is what counts
        c_in.write(s_out.read())
    return "the handshake did not complete", None


def build_context(files: dict, password: str | None, policy: dict):
    """(context, {"not_after": the certificate's notAfter, "crl_next_update": the CRL's or None} in epoch seconds): a
    server context from FILES (certfile, keyfile, ca_bundle and optionally crl: resolved paths), with the launcher's
    TLS policy and client certificates required (the policy's ``client_auth``, "require" unless it says "optional":
    a certificate that is sent must then verify), checked against the CRL when there is one. Raises LauncherError
    naming the file and the problem."""
    keyfile, certfile, cafile = files["keyfile"], files["certfile"], files["ca_bundle"]
    with open(keyfile, "rb") as handle:
        encrypted = pem_key_is_encrypted(handle.read())
    if encrypted and not password:
        raise LauncherError(f"{keyfile} is encrypted but no password is set")

    def never_prompt():
        if password:
            return password
        raise LauncherError(f"{keyfile} needs a password but none is set")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = max(context.minimum_version, policy["minimum_version"])  # never below TLS 1.2
    context.set_ciphers(policy["ciphers"])
    context.verify_mode = client_verify_mode(policy)
    # No resumption: every handshake verifies the client against the set in use now.
    context.options |= ssl.OP_NO_TICKET
    context.num_tickets = 0
    try:
        context.load_cert_chain(certfile, keyfile, never_prompt)
    except ssl.SSLError as exc:
        raise LauncherError(f"cannot use key {keyfile} with certificate {certfile}: {exc.reason or exc} "
                            "(wrong password, not a PEM key, or key and certificate do not match)") from exc
    try:
        context.load_verify_locations(cafile)
    except ssl.SSLError as exc:
        raise LauncherError(f"cannot load CA bundle {cafile}: {exc.reason or exc}") from exc
    problem, not_after = _self_check(context, cafile)
    if problem:
        raise LauncherError(f"the CA bundle {cafile} does not verify the certificate {certfile}: {problem}")
    crl_next_update = None
    if files.get("crl"):
        try:
            crl_next_update = crlfile.current(files["crl"])
            context.load_verify_locations(files["crl"])
        except (ValueError, ssl.SSLError) as exc:
            raise LauncherError(f"cannot use the CRL {files['crl']}: {getattr(exc, 'reason', None) or exc}") from exc
        # The client's certificate is checked against its CA's CRL (every CA of the bundle has one in the file).
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return context, {"not_after": not_after, "crl_next_update": crl_next_update}


def client_verify_mode(policy: dict):
    """CERT_REQUIRED, or CERT_OPTIONAL when the policy's client_auth is "optional" (the gateway's front door)."""
    return ssl.CERT_OPTIONAL if policy.get("client_auth") == "optional" else ssl.CERT_REQUIRED


class ReloadingContext(ssl.SSLContext):
    """What uvicorn and asyncio hold: every connection is wrapped by the current context of a TLSMaterial. It
    holds no certificate itself, so a path that would bypass the delegation fails closed."""

    material: "TLSMaterial"

    def wrap_bio(self, *args, **kwargs):  # noqa: D102 (ssl.SSLContext's)
        return self.material.current.wrap_bio(*args, **kwargs)

    def wrap_socket(self, *args, **kwargs):  # noqa: D102
        return self.material.current.wrap_socket(*args, **kwargs)


class TLSMaterial:
    """The TLS files of one instance and the context built from them; reloadable."""

    def __init__(self, tls: dict, password: str | None, policy: dict, base_dir: str, runtime_dir: str | None):
        self.paths = {field: tls[field] for field in ("certfile", "keyfile", "ca_bundle")}
        # The CRL of the TLS set, enforced when the set has one (a set without it is served without CRL checks).
        self.paths["crl"] = crlfile.beside(tls["ca_bundle"])
        self.password = password
        self.policy = policy
        self.base_dir = base_dir
        self.runtime_dir = runtime_dir
        self.generation = 0
        self.current = None
        self.telemetry = Telemetry(os.path.basename(base_dir.rstrip("/")) or "plugin",
                                   os.path.join(runtime_dir, METRICS_FILE) if runtime_dir else None)
        self.loaded = {}
        # The gRPC mode's own form of a set (launcher_grpc): built from the resolved files after build_context's
        # checks, made current with the context.
        self.extra_loader = None
        self.extra = None
        self._lock = threading.Lock()
        self._pending = threading.Event()

    def _load(self):
        """(context, {record name: sha256}, set folder, notAfter) from the files as they are now. The paths are
        resolved first: a TLS set is a folder reached through one link, so key, certificate and bundle are of one
        set."""
        for _attempt in range(3):
            resolved = {field: os.path.realpath(path) for field, path in self.paths.items()}
            if not os.path.exists(resolved["crl"]):
                del resolved["crl"]
            context, info = build_context(resolved, self.password, self.policy)
            info["extra"] = self.extra_loader(resolved, info) if self.extra_loader else None
            sums = {os.path.relpath(self.paths[field], self.base_dir): _sha256(resolved[field]) for field in resolved}
            again = {field: os.path.realpath(path) for field, path in self.paths.items() if field in resolved}
            if resolved == again:
                return context, sums, os.path.dirname(resolved["certfile"]), info
        raise LauncherError("the TLS files kept changing while they were loaded")

    def start(self) -> ReloadingContext:
        """Load the set the instance starts with; the context to hand to uvicorn."""
        self.current, self.loaded, folder, info = self._load()
        self.extra = info["extra"]
        self._record(True, f"serving the TLS set in {folder}{self._crl_note(info)}")
        self.telemetry.served(info["not_after"], initial=True, crl_next_update=info["crl_next_update"])
        proxy = ReloadingContext(ssl.PROTOCOL_TLS_SERVER)
        proxy.minimum_version = self.current.minimum_version
        proxy.verify_mode = client_verify_mode(self.policy)
        proxy.material = self
        return proxy

    def reload(self) -> bool:
        """Build a new context from the files; make it current when it loads. True when it was taken."""
        with self._lock:
            started = time.monotonic()
            try:
                context, sums, folder, info = self._load()
            except (LauncherError, OSError, ssl.SSLError) as exc:
                log.error("TLS reload refused, still serving the previous set: %s", exc)
                self._record(False, f"refused, still serving the previous set: {exc}")
                self.telemetry.served(None, ok=False)
                return False
            self.current, self.loaded, self.extra = context, sums, info["extra"]
            log.info("TLS reload: new handshakes use the set in %s%s (loaded in %.0f ms); established connections "
                     "keep theirs", folder, self._crl_note(info), (time.monotonic() - started) * 1000)
            self._record(True, f"serving the TLS set in {folder}{self._crl_note(info)}")
            self.telemetry.served(info["not_after"], crl_next_update=info["crl_next_update"])
            return True

    @staticmethod
    def _crl_note(info):
        if info["crl_next_update"] is None:
            return ", without a CRL"
        return ", with its CRL (next update %s)" % time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(info["crl_next_update"]))

    def request_reload(self, *_signal) -> None:
        """SIGHUP handler: reload in a thread (the event loop keeps serving meanwhile); requests that arrive
        during a reload are served by one more reload after it."""
        self._pending.set()
        if self._lock.locked():
            return
        threading.Thread(target=self._reload_pending, name="tls-reload", daemon=True).start()

    def _reload_pending(self):
        while self._pending.is_set():
            self._pending.clear()
            self.reload()

    def install_signal_handler(self) -> None:
        signal.signal(signal.SIGHUP, self.request_reload)

    def count_handshakes(self) -> bool:
        """Count (and log the refused) handshakes of the connections this material's contexts serve."""
        return install_telemetry(lambda protocol: self.telemetry if isinstance(
            getattr(protocol, "_sslcontext", None), ReloadingContext) else None)

    def _record(self, ok: bool, message: str) -> None:
        """Write reload.json (generation, result) and the TLS lines of loaded.sha256 into the runtime folder."""
        if not self.runtime_dir:
            return
        self.generation += 1
        status = {"pid": os.getpid(), "generation": self.generation, "ok": ok, "message": message,
                  "time": time.time()}
        _write(os.path.join(self.runtime_dir, RELOAD_STATUS), json.dumps(status) + "\n")
        if ok:
            record = os.path.join(self.runtime_dir, LOADED_RECORD)
            lines = []
            ours = {os.path.relpath(path, self.base_dir) for path in self.paths.values()}  # a CRL that went too
            try:
                with open(record, encoding="utf-8") as handle:
                    lines = [line for line in handle.read().splitlines()
                             if line.split(" ", 1)[-1].lstrip(" *") not in ours]
            except FileNotFoundError:
                pass
            lines += ["%s  %s" % (digest, name) for name, digest in sorted(self.loaded.items())]
            _write(record, "\n".join(lines) + "\n")


def _write(path: str, text: str) -> None:
    temp = f"{path}.{os.getpid()}.tmp"
    with open(temp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temp, path)


def _status(path: str):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (FileNotFoundError, ValueError):
        return None


def request(pid: int, runtime_dir: str | None, timeout: float = RELOAD_TIMEOUT_S) -> tuple[bool, str]:
    """Ask the launcher PID to reload its TLS set and wait for its answer (``mcp-plugin-launcher --reload``,
    the unit's ExecReload). (taken, message)."""
    if not runtime_dir:
        return False, "RUNTIME_DIRECTORY is not set: run the reload through systemctl reload"
    path = os.path.join(runtime_dir, RELOAD_STATUS)
    before = _status(path)
    if not before or before.get("pid") != pid:
        return False, f"process {pid} has not reported a TLS set in {path}: restart the instance instead"
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        return False, f"cannot signal process {pid}: {exc}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = _status(path)
        if now and now.get("pid") == pid and now.get("generation", 0) > before.get("generation", 0):
            return bool(now.get("ok")), str(now.get("message"))
        time.sleep(0.05)
    return False, f"process {pid} did not answer the reload within {timeout:.0f} s"
