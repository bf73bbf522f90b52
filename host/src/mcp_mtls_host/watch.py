# -*- coding: utf-8 -*-
# Copyright: mcpgateway.mtls contributors
# SPDX-License-Identifier: Apache-2.0
"""The rotation watcher, ``mcp_mtls_host.probe --loop SECONDS``.

Watches the plugins during a certificate rotation or a rolling restart of the
plugin servers. Each selected plugin gets its own asyncio task that owns ONE
long-lived cpex external plugin client (like the gateway) and calls a real hook
every --interval seconds (all plugins at once).
A call fails when the hook raises or exceeds --timeout (also when the MCP
client's task group cancels it after its connection broke: the cause is taken
from the client's shutdown); the client is then shut down and created anew
before the next call, as a gateway restart would (a failed re-creation is a
failed call too). The client TLS files named in the plugin's TLS settings
(certfile, keyfile, ca_bundle) are hashed every second: when they change the
client is re-created (``reloads``), as the restarted gateway would load them.
While the changed files do not yet form a usable SSL context (key and
certificate are copied one after the other) the running client is kept, for at
most --reload-grace seconds. Every --fingerprint-every seconds a TLS handshake
in a daemon thread records the server certificate's sha256.
The loop ends after SECONDS, on SIGTERM/SIGINT, or when --stop-file appears
(calls in flight are answered first); a second signal abandons them, and each
abandoned call counts as failed. Then the probe prints ONE JSON line (also
written atomically to --summary FILE):
  {"loop": true, "ok", "duration_s", "interval_s", "fingerprint_every_s", "timeout_s", "reload_grace_s",
   "stopped_by" (duration, stop-file, SIGTERM, SIGINT), "forced", "started_at", "user",
   "plugins": {NAME: {"url", "hook", "calls", "ok", "failed", "longest_gap_s",
                      "max_latency_ms", "p50_latency_ms", "p95_latency_ms",
                      "failures": [{"t", "error"}] (first 20), "failures_omitted",
                      "fingerprints": [{"sha256", "first_seen_s", "last_seen_s"}],
                      "fingerprint_errors", "last_fingerprint_error",
                      "reconnects", "reloads", "client_reconnects", "error"}},
   "total": {"calls", "ok", "failed", "longest_gap_s"}}
``longest_gap_s`` is the longest time without a successful call, counting from
the start to the first success and from the last success to the end;
``reconnects`` counts clients re-created after failures, ``client_reconnects``
the reconnections cpex made by itself inside a hook call; times are seconds
since the start. Exit status: 0 no failed call, 1 at least one, 2 configuration
or usage error (then the JSON line, or the plugin that could not be watched, has
"error"; argparse usage errors go to stderr only).

This module is the driver (plain Python, no cpex): statistics and output are in
``mcp_mtls_host.watch_stats``; the plugins it watches, LoopTarget objects, come
from ``mcp_mtls_host.watch_targets`` (the only part that touches cpex). The
command line is parsed by ``mcp_mtls_host.probe``, which calls run_loop_mode.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import time

from .common import current_user, describe_error
from .watch_stats import LoopStats, emit_loop, loop_exit_code, loop_summary
from .watch_targets import FatalLoopError, build_targets

FILE_CHECK_EVERY = 1.0  # seconds between two hashings of the client TLS files
STOP_POLL = 0.1  # longest sleep before the stop conditions are looked at again


class StrayCancel(Exception):
    """A CancelledError this probe did not ask for (see guarded())."""


class LoopStop:
    """The loop's end: the deadline, the stop file appearing, or request() (signals); the first reason wins."""

    def __init__(self, deadline, stop_file=None, clock=time.monotonic, exists=os.path.lexists):
        self.deadline = deadline
        self.stop_file = stop_file
        self.clock = clock
        self.exists = exists
        self.reason = None
        self.forced = False

    def request(self, reason):
        if self.reason is None:
            self.reason = reason

    def check(self):
        """The reason to stop, or None to go on."""
        if self.reason is None:
            if self.clock() >= self.deadline:
                self.reason = "duration"
            elif self.stop_file and self.exists(self.stop_file):
                self.reason = "stop-file"
        return self.reason


def root_exception(exc):
    """The first real exception inside (nested) exception groups, skipping cancellations."""
    while getattr(exc, "exceptions", None):
        inner = [e for e in exc.exceptions if not isinstance(e, asyncio.CancelledError)] or list(exc.exceptions)
        exc = inner[0]
    return exc


def describe_failure(exc, cause, timeout):
    """describe_error(exc), or, when the MCP client cancelled the call, the error its shutdown revealed."""
    if isinstance(exc, StrayCancel) and cause is not None and not isinstance(cause, StrayCancel):
        return " ".join(("connection broke: %s" % describe_error(root_exception(cause), timeout)).split())[:500]
    return describe_error(exc, timeout)


async def guarded(awaitable, stop):
    """Await; turn a CancelledError that is not a forced stop into StrayCancel.

    When a connection breaks, cpex reconnects inside invoke_hook and awaits the new session outside the
    anyio task group that its exit stack entered in this task: the group then cancels this task. That is a
    failed call, not a stop: the cancellation requests are withdrawn and the client is shut down (which
    leaves the cancelled scope)."""
    try:
        return await awaitable
    except asyncio.CancelledError:
        if stop.forced:
            raise
        task = asyncio.current_task()
        if task is not None and hasattr(task, "uncancel"):
            while task.cancelling():
                task.uncancel()
        raise StrayCancel("cancelled inside the MCP client (its connection broke)") from None


async def close_quietly(client, stop):
    """Shut the client down; returns the exception it ended with (a broken connection's cause) or None."""
    try:
        return await guarded(client.close(), stop)
    except Exception as exc:  # pylint: disable=broad-except
        return exc


async def sleep_until(when, stop, clock, sleep):
    """Sleep until the clock reads ``when``, in short steps so that a stop is noticed quickly."""
    while stop.check() is None:
        left = when - clock()
        if left <= 0:
            return
        try:
            await guarded(sleep(min(left, STOP_POLL)), stop)
        except StrayCancel:
            continue


def next_tick(previous, interval, clock):
    """The next call time on the interval grid; when late, right now (no burst of catch-up calls)."""
    return max(previous + interval, clock())


class PluginWatcher:  # pylint: disable=too-many-instance-attributes
    """Owns one client of a plugin: creates it, calls the hook every interval, re-creates it after a
    failure or when the TLS files change. Creation, calls and shutdown all run in the task of run()."""

    def __init__(self, target, stats, stop, opts, clock, sleep):  # pylint: disable=too-many-arguments,too-many-positional-arguments
        self.target = target
        self.stats = stats
        self.stop = stop
        self.opts = opts
        self.clock = clock
        self.sleep = sleep
        self.client = None
        self.client_hashes = None
        self.after_failure = False
        self.pending_since = None
        self.in_flight_since = None
        self.next_file_check = None

    def on_reconnect(self):
        self.stats.client_reconnects += 1

    async def drop(self, exc=None, failed_at=None):
        """Shut the client down; with exc, record the failed call (its cause comes out of the shutdown)."""
        doomed, self.client = self.client, None
        cause = None
        try:
            if doomed is not None:
                cause = await close_quietly(doomed, self.stop)
        finally:  # recorded even when a forced stop interrupts the shutdown
            if exc is not None:
                self.stats.failure(failed_at, describe_failure(exc, cause, self.opts.timeout))
                self.after_failure = True

    async def reload_if_rotated(self):
        """Re-create the client when the TLS files changed, as the restarted gateway would load them."""
        now = self.clock()
        if self.client is None or now < self.next_file_check:
            return
        self.next_file_check = now + FILE_CHECK_EVERY
        if self.target.hashes() == self.client_hashes:
            self.pending_since = None
            return
        if self.pending_since is None:
            self.pending_since = now
        # Key and certificate are copied one after the other: until they load together (or the grace
        # period is over) keep the running client, as the gateway runs on until it is restarted.
        if self.target.files_ready() is None or now - self.pending_since >= self.opts.reload_grace:
            await self.drop()
            self.stats.reloads += 1

    async def create(self):
        """A new client; False (and the failure recorded) when it cannot start."""
        self.client_hashes = self.target.hashes()
        self.pending_since = None
        candidate = self.target.new_client(self.on_reconnect)
        self.in_flight_since = self.clock()
        try:
            await guarded(candidate.start(), self.stop)
        except FatalLoopError as exc:
            self.in_flight_since = None
            self.stats.failure(self.clock(), str(exc))
            self.stats.error = str(exc)
            await close_quietly(candidate, self.stop)
            return False
        except Exception as exc:  # pylint: disable=broad-except
            self.in_flight_since = None
            self.client = candidate
            await self.drop(exc, self.clock())
            return False
        self.in_flight_since = None  # not in a finally: a forced stop must still see the call in flight
        self.client = candidate
        self.stats.hook = getattr(candidate, "hook", None)
        if self.after_failure:
            self.stats.reconnects += 1
        self.after_failure = False
        self.next_file_check = self.clock() + FILE_CHECK_EVERY
        return True

    async def call(self):
        started = self.in_flight_since = self.clock()
        try:
            await guarded(self.client.call(), self.stop)
        except Exception as exc:  # pylint: disable=broad-except
            self.in_flight_since = None
            await self.drop(exc, self.clock())
        else:
            self.in_flight_since = None
            done = self.clock()
            self.stats.success(done, done - started)

    async def run(self):
        next_call = self.clock()
        self.next_file_check = next_call + FILE_CHECK_EVERY
        try:
            while self.stop.check() is None:
                await self.reload_if_rotated()
                if self.client is None and not await self.create() and self.stats.error:
                    break
                if self.client is not None:
                    await self.call()
                next_call = next_tick(next_call, self.opts.interval, self.clock)
                await sleep_until(next_call, self.stop, self.clock, self.sleep)
        except asyncio.CancelledError:
            # A second signal (stop.forced): the call in flight is abandoned; it never answered, so it failed.
            task = asyncio.current_task()
            if task is not None and hasattr(task, "uncancel"):
                task.uncancel()
            if self.in_flight_since is not None:
                waited = self.clock() - self.in_flight_since
                self.stats.failure(self.clock(), "abandoned after %.1f s: the loop was forced to stop while waiting for the answer" % waited)
        except Exception as exc:  # pylint: disable=broad-except
            self.stats.error = "probe error: %s" % describe_error(exc, self.opts.timeout)
        finally:
            if self.client is not None:
                await self.drop()
            self.stats.end = self.clock()


async def sample_fingerprints(target, stats, stop, opts, clock, sleep):
    """Record the server certificate every --fingerprint-every seconds (never touches the MCP client)."""
    next_sample = clock()
    while stop.check() is None:
        try:
            sha256 = await target.fingerprint()
            if not sha256:
                raise ssl.SSLError("the server sent no certificate")
        except Exception as exc:  # pylint: disable=broad-except
            stats.fingerprint_failed(describe_error(exc, opts.timeout))
        else:
            stats.fingerprint(clock(), sha256)
        next_sample = next_tick(next_sample, opts.fingerprint_every, clock)
        await sleep_until(next_sample, stop, clock, sleep)


def install_stop_signals(stop, tasks):
    """SIGTERM/SIGINT end the loop after the calls in flight; a second one cancels them."""
    loop = asyncio.get_running_loop()
    installed = []

    def on_signal(signame):
        if stop.reason is None:
            stop.request(signame)
            return
        stop.forced = True
        for task in tasks:
            task.cancel()

    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, on_signal, signal.Signals(signum).name)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no Unix signals
            continue
        installed.append(signum)
    return installed


async def run_loop(targets, opts, clock=time.monotonic, sleep=asyncio.sleep, handle_signals=True):
    """Watch all targets at once until the loop stops; returns the summary."""
    start = clock()
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    stop = LoopStop(start + opts.loop, opts.stop_file, clock)
    stats = {target.name: LoopStats(start, target.url) for target in targets}
    watchers, samplers = [], []
    for target in targets:
        entry = stats[target.name]
        watchers.append(asyncio.create_task(PluginWatcher(target, entry, stop, opts, clock, sleep).run()))
        if target.fingerprint is not None and opts.fingerprint_every > 0:
            samplers.append(asyncio.create_task(sample_fingerprints(target, entry, stop, opts, clock, sleep)))
    installed = install_stop_signals(stop, watchers + samplers) if handle_signals else []
    try:
        await asyncio.gather(*watchers, return_exceptions=True)
        stop.request("no plugin left to watch")  # when every watcher ended on an error before the stop
        for task in samplers:  # a handshake in flight is not worth waiting for
            task.cancel()
        await asyncio.gather(*samplers, return_exceptions=True)
    finally:
        loop = asyncio.get_running_loop()
        for signum in installed:
            loop.remove_signal_handler(signum)
    return loop_summary(stats, start, clock(), opts, stop, started_at)


def run_loop_mode(plugins, args, fail_config):
    """--loop: watch the selected plugins (cpex PluginConfigs), print the summary; the exit status.

    fail_config(message) reports a configuration error the way the probe does and returns its exit status."""
    if args.stop_file and os.path.lexists(args.stop_file):
        return fail_config("stop file %s already exists: remove it before starting the loop" % args.stop_file)
    if args.summary:
        directory = os.path.dirname(args.summary)
        if not os.path.isdir(directory) or not os.access(directory, os.W_OK | os.X_OK):
            return fail_config("cannot write the summary into %s as user %s" % (directory, current_user()))
    error, targets = build_targets(plugins, args)
    if error:
        return fail_config(error)
    summary = asyncio.run(run_loop(targets, args))
    if not emit_loop(summary, args.summary):
        return 2
    return loop_exit_code(summary)
