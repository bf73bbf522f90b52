# -*- coding: utf-8 -*-
# Copyright: mcpgateway.mtls contributors
# SPDX-License-Identifier: Apache-2.0
"""The plugins the rotation watcher (``mcp_mtls_host.watch``) watches.

LoopTarget is what the watcher needs of one plugin; build_targets makes the real ones from the deployed
config: a long-lived cpex external plugin client (CpexLoopClient), the sha256 of the client TLS files (a
change means a rotation), whether those files load into an SSL context yet, and a TLS handshake in a
daemon thread that reads the server certificate's fingerprint. Only CpexLoopClient, server_fingerprint,
tls_files_problem and build_targets touch cpex, and they import it when called.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import socket
import threading

from .common import KNOWN_HOOKS, client_context, describe_error, hook_call, plugin_client, resolve_target

TLS_FILE_LABELS = ("certfile", "keyfile", "ca_bundle")


class FatalLoopError(Exception):
    """The plugin cannot be watched at all (no hook the probe can call): its loop ends."""


class LoopTarget:  # pylint: disable=too-few-public-methods
    """What the loop needs of one plugin.

    new_client(on_reconnect) returns an object with async start(), call(), close() and a ``hook`` attribute;
    hashes() the TLS file hashes; files_ready() None or why the TLS files do not load (yet);
    fingerprint() a coroutine returning the server certificate's sha256 (or None: no sampling).
    """

    def __init__(self, name, new_client, url=None, hashes=None, files_ready=None, fingerprint=None):
        self.name = name
        self.new_client = new_client
        self.url = url
        self.hashes = hashes or dict
        self.files_ready = files_ready or (lambda: None)
        self.fingerprint = fingerprint


def tls_file_paths(tls_config):
    """label -> path of the client TLS files a (re)started gateway would load."""
    return {label: getattr(tls_config, label) for label in TLS_FILE_LABELS if getattr(tls_config, label, None)}


def file_hashes(paths):
    """label -> sha256 of the file (or why it cannot be read): a change means the files were rotated."""
    hashes = {}
    for label in sorted(paths):
        try:
            with open(paths[label], "rb") as handle:
                hashes[label] = hashlib.sha256(handle.read()).hexdigest()
        except OSError as exc:
            hashes[label] = "unreadable: %s" % (exc.strerror or exc)
    return hashes


async def run_with_timeout(awaitable, seconds):
    """Await with a deadline in the current task (asyncio.wait_for on Python 3.11 would start another task,
    and the MCP client's task scopes must be entered and left by the task that owns the client)."""
    timeout = getattr(asyncio, "timeout", None)
    if timeout is None:  # pragma: no cover - Python < 3.11 (cpex needs 3.11)
        return await asyncio.wait_for(awaitable, seconds)
    async with timeout(seconds):
        return await awaitable


class CpexLoopClient:
    """One long-lived cpex ExternalPlugin, created, called and shut down by the task that owns it."""

    def __init__(self, plugin_config, timeout, on_reconnect=None):
        self.plugin_config = plugin_config
        self.timeout = timeout
        self.on_reconnect = on_reconnect
        self.plugin = None
        self.hook = None
        self.calls = 0

    async def start(self):
        self.plugin = plugin_client(self.plugin_config)
        original = getattr(self.plugin, "_reconnect_session", None)
        if original is not None and self.on_reconnect is not None:
            # Count the reconnections cpex makes by itself when a hook call finds its session gone.
            async def counted_reconnect():
                self.on_reconnect()
                return await original()

            self.plugin._reconnect_session = counted_reconnect  # pylint: disable=protected-access
        await run_with_timeout(self.plugin.initialize(), self.timeout)
        hook = hook_call(list(self.plugin.config.hooks or []))[0]
        if hook is None:
            raise FatalLoopError("the plugin has none of the hooks the probe can call (%s)" % ", ".join(KNOWN_HOOKS))
        self.hook = hook

    async def call(self):
        from cpex.framework.models import GlobalContext, PluginContext  # pylint: disable=import-outside-toplevel

        hook, payload = hook_call([self.hook])
        self.calls += 1
        context = PluginContext(global_context=GlobalContext(request_id="mcp-mtls-probe-loop-%d" % self.calls))
        await run_with_timeout(self.plugin.invoke_hook(hook, payload, context), self.timeout)

    async def close(self):
        """Shut the plugin client down; returns the exception the shutdown raised (or None), never raises it."""
        plugin, self.plugin = self.plugin, None
        if plugin is None:
            return None
        try:
            await run_with_timeout(plugin.shutdown(), self.timeout)
        except Exception as exc:  # pylint: disable=broad-except
            return exc
        return None


def in_thread(function, *args):
    """Run a blocking function in a daemon thread; returns an awaitable of its result.

    Unlike asyncio.to_thread, a handshake hanging on a silent server never holds the exit
    (asyncio.run waits for the default executor's threads)."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def deliver(result, error):
        if future.done():
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    def work():
        try:
            result, error = function(*args), None
        except Exception as exc:  # pylint: disable=broad-except
            result, error = None, exc
        try:
            loop.call_soon_threadsafe(deliver, result, error)
        except RuntimeError:  # the loop is closed: nobody waits for it any more
            pass

    threading.Thread(target=work, name="mcp-mtls-probe-fingerprint", daemon=True).start()
    return future


def server_fingerprint(host, port, tls_config, plugin_config, timeout):
    """sha256 of the server certificate from one TLS handshake with the gateway's SSL context (no request)."""
    context = client_context(plugin_config, tls_config)
    with socket.create_connection((host, port), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest() if der else None


def tls_files_problem(tls_config, plugin_config):
    """None when the client TLS files load into an SSL context (key matching certificate), else why not."""
    try:
        client_context(plugin_config, tls_config)
    except Exception as exc:  # pylint: disable=broad-except
        return describe_error(exc, 0)
    return None


def build_targets(plugins, args):
    """(error, targets): the LoopTargets of the selected plugins, or an error naming one that cannot be watched."""
    targets = []
    for plugin_config in plugins:
        name = plugin_config.name
        error, url, host, port, tls_config = resolve_target(plugin_config)
        if error:
            return "plugin %s: %s" % (name, error), None
        local_hooks = [str(getattr(hook, "value", hook)) for hook in (plugin_config.hooks or [])]
        if local_hooks and hook_call(local_hooks)[0] is None:
            return "plugin %s: none of its hooks (%s) is one the probe can call (%s)" % (name, ", ".join(local_hooks), ", ".join(KNOWN_HOOKS)), None
        targets.append(
            LoopTarget(
                name,
                functools.partial(CpexLoopClient, plugin_config, args.timeout),
                url=url,
                hashes=functools.partial(file_hashes, tls_file_paths(tls_config)),
                files_ready=functools.partial(tls_files_problem, tls_config, plugin_config),
                fingerprint=functools.partial(in_thread, server_fingerprint, host, port, tls_config, plugin_config,
                                              args.timeout),
            )
        )
    return None, targets
