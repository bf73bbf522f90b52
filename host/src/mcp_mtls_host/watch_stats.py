# -*- coding: utf-8 -*-
# Copyright: mcpgateway.mtls contributors
# SPDX-License-Identifier: Apache-2.0
"""The rotation watcher's numbers and its output (plain Python, no cpex).

LoopStats holds the availability of one plugin during the loop (calls, failures, latencies, longest gap,
server certificates seen); loop_summary turns them into the ONE JSON line described in
``mcp_mtls_host.watch``, emit_loop prints it (and writes it atomically to --summary FILE), and
loop_exit_code gives the exit status.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile

from .common import current_user

MAX_FAILURES = 20  # failures listed per plugin (the others are only counted)


def percentile(values, pct):
    """Nearest-rank percentile of a list of numbers (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = int(math.ceil(pct / 100.0 * len(ordered)))
    return ordered[min(max(rank, 1), len(ordered)) - 1]


def to_ms(seconds):
    return None if seconds is None else round(seconds * 1000.0, 1)


class LoopStats:
    """Availability of one plugin during a loop; times are read from the loop's clock, in seconds."""

    def __init__(self, start, url=None):
        self.start = start
        self.end = None
        self.url = url
        self.hook = None
        self.error = None
        self.calls = 0
        self.ok = 0
        self.failed = 0
        self.reconnects = 0
        self.reloads = 0
        self.client_reconnects = 0
        self.latencies = []
        self.failures = []
        self.failures_omitted = 0
        self.fingerprints = []
        self.fingerprint_errors = 0
        self.last_fingerprint_error = None
        self._last_ok = start
        self._longest_gap = 0.0

    def since_start(self, now):
        return round(now - self.start, 3)

    def success(self, now, latency_s):
        self.calls += 1
        self.ok += 1
        self.latencies.append(latency_s)
        self._longest_gap = max(self._longest_gap, now - self._last_ok)
        self._last_ok = now

    def failure(self, now, error):
        self.calls += 1
        self.failed += 1
        if len(self.failures) < MAX_FAILURES:
            self.failures.append({"t": self.since_start(now), "error": error})
        else:
            self.failures_omitted += 1

    def fingerprint(self, now, sha256):
        """Record a server certificate: each distinct one once, in the order first seen."""
        for entry in self.fingerprints:
            if entry["sha256"] == sha256:
                entry["last_seen_s"] = self.since_start(now)
                return
        self.fingerprints.append({"sha256": sha256, "first_seen_s": self.since_start(now), "last_seen_s": self.since_start(now)})

    def fingerprint_failed(self, error):
        self.fingerprint_errors += 1
        self.last_fingerprint_error = error

    def longest_gap(self, end):
        """Longest time without a successful call, start -> first success and last success -> end included."""
        return max(self._longest_gap, end - self._last_ok)

    def as_dict(self, end=None):
        end = self.end if self.end is not None else end
        return {
            "url": self.url,
            "hook": self.hook,
            "error": self.error,
            "calls": self.calls,
            "ok": self.ok,
            "failed": self.failed,
            "longest_gap_s": round(self.longest_gap(end), 3),
            "max_latency_ms": to_ms(max(self.latencies) if self.latencies else None),
            "p50_latency_ms": to_ms(percentile(self.latencies, 50)),
            "p95_latency_ms": to_ms(percentile(self.latencies, 95)),
            "failures": list(self.failures),
            "failures_omitted": self.failures_omitted,
            "fingerprints": [dict(entry) for entry in self.fingerprints],
            "fingerprint_errors": self.fingerprint_errors,
            "last_fingerprint_error": self.last_fingerprint_error,
            "reconnects": self.reconnects,
            "reloads": self.reloads,
            "client_reconnects": self.client_reconnects,
        }


def loop_summary(stats, start, end, opts, stop, started_at):
    """The summary of the loop (see mcp_mtls_host.watch) from the LoopStats of each plugin."""
    plugins = {name: entry.as_dict(end) for name, entry in stats.items()}
    total = {
        "calls": sum(p["calls"] for p in plugins.values()),
        "ok": sum(p["ok"] for p in plugins.values()),
        "failed": sum(p["failed"] for p in plugins.values()),
        "longest_gap_s": max((p["longest_gap_s"] for p in plugins.values()), default=0.0),
    }
    return {
        "loop": True,
        "ok": total["failed"] == 0 and not any(p["error"] for p in plugins.values()),
        "duration_s": round(end - start, 3),
        "interval_s": opts.interval,
        "fingerprint_every_s": opts.fingerprint_every,
        "timeout_s": opts.timeout,
        "reload_grace_s": opts.reload_grace,
        "stopped_by": stop.reason,
        "forced": stop.forced,
        "started_at": started_at,
        "user": current_user(),
        "plugins": plugins,
        "total": total,
    }


def loop_exit_code(summary):
    """2: a configuration error (nothing or not everything could be watched), 1: a call failed, 0: none did."""
    plugins = summary.get("plugins") or {}
    if summary.get("error") or any(p.get("error") for p in plugins.values()):
        return 2
    return 1 if any(p["failed"] for p in plugins.values()) else 0


def write_summary(path, text):
    """Write text to path atomically: a temporary file in the same directory, then os.replace."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def emit_loop(summary, summary_path=None):
    """Print the summary as ONE JSON line (and write the same line to summary_path); False if that failed."""
    text = json.dumps(summary, sort_keys=True) + "\n"
    written = True
    if summary_path:
        try:
            write_summary(summary_path, text)
        except OSError as exc:
            written = False
            message = "cannot write summary %s as user %s: %s" % (summary_path, current_user(), exc.strerror or exc)
            sys.stderr.write(message + "\n")
            summary = dict(summary, summary_error=message)
            text = json.dumps(summary, sort_keys=True) + "\n"
    sys.stdout.write(text)
    sys.stdout.flush()
    return written
