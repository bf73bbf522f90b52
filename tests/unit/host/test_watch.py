"""Unit tests for the rotation watcher, the probe's --loop mode: mcp_mtls_host.watch, .watch_stats and
.watch_targets (no cpex needed).

The driver is fed with fake clients and runs on a virtual clock: time only moves when every task waits in
the injected sleep, so gaps and time stamps are exact. The real test against plugin servers is run on hosts.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import os
import signal
import threading
import types

import pytest

from mcp_mtls_host import common, watch, watch_stats, watch_targets


class VirtualClock:
    """A clock that jumps to the next sleeper's wake-up time once every task is waiting."""

    def __init__(self):
        self.now = 0.0
        self._sleepers = []
        self._seq = 0

    def __call__(self):
        return self.now

    async def sleep(self, seconds):
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(0.0, seconds), self._seq, future))
        self._seq += 1
        await future

    def run(self, coro):
        async def drive():
            task = asyncio.ensure_future(coro)
            while not task.done():
                for _round in range(50):  # let every ready task run until it waits again
                    await asyncio.sleep(0)
                    if task.done():
                        break
                if task.done():
                    break
                assert self._sleepers, "deadlock: no task sleeping and the loop is not done"
                when, _seq, future = heapq.heappop(self._sleepers)
                self.now = max(self.now, when)
                if not future.done():
                    future.set_result(None)
            return task.result()

        return asyncio.run(drive())


class FakeClient:
    """Answers after `latency` seconds; fails calls for which fail_when(now, n) is true."""

    def __init__(self, clock, log, latency=0.01, fail_when=None, start_error=None, on_call=None, fail_with=None, close_result=None):
        self.clock = clock
        self.log = log
        self.latency = latency
        self.fail_when = fail_when or (lambda now, n: False)
        self.fail_with = fail_with or (lambda: RuntimeError("connection reset"))
        self.start_error = start_error
        self.on_call = on_call
        self.close_result = close_result
        self.hook = "tool_pre_invoke"
        self.calls = 0
        self.closed = False
        self.started = False

    async def start(self):
        await self.clock.sleep(0.05)
        if self.start_error is not None:
            raise self.start_error
        self.started = True

    async def call(self):
        assert self.started and not self.closed, "call on a client that is not running"
        self.calls += 1
        await self.clock.sleep(self.latency)
        if self.on_call:
            self.on_call(self)
        if self.fail_when(self.clock(), self.calls):
            raise self.fail_with()

    async def close(self):
        self.closed = True
        return self.close_result


class Factory:
    """new_client() of a LoopTarget: makes FakeClients from a list of kwargs (the last one repeats)."""

    def __init__(self, clock, *specs):
        self.clock = clock
        self.specs = list(specs) or [{}]
        self.clients = []

    def __call__(self, on_reconnect):
        spec = self.specs[min(len(self.clients), len(self.specs) - 1)]
        client = FakeClient(self.clock, self.clients, **spec)
        self.clients.append(client)
        return client


def opts(**kw):
    values = {"loop": 10.0, "interval": 0.2, "timeout": 1.0, "fingerprint_every": 1.0, "reload_grace": 10.0, "stop_file": None, "summary": None}
    values.update(kw)
    return types.SimpleNamespace(**values)


def run(clock, targets, **kw):
    return clock.run(watch.run_loop(targets, opts(**kw), clock=clock, sleep=clock.sleep, handle_signals=False))


# ---------------------------------------------------------------- pure statistics


def test_longest_gap_counts_start_and_end_edges():
    stats = watch_stats.LoopStats(start=100.0)
    stats.success(103.0, 0.01)  # 3 s from the start to the first success
    stats.success(104.0, 0.01)
    stats.success(105.5, 0.01)
    assert stats.longest_gap(106.0) == pytest.approx(3.0)
    assert stats.longest_gap(110.0) == pytest.approx(4.5)  # last success -> end is the longest
    assert watch_stats.LoopStats(start=5.0).longest_gap(12.0) == pytest.approx(7.0)  # no success at all


def test_longest_gap_in_the_middle():
    stats = watch_stats.LoopStats(start=0.0)
    for t in (0.2, 0.4, 3.4, 3.6):
        stats.success(t, 0.01)
    assert stats.as_dict(end=3.8)["longest_gap_s"] == pytest.approx(3.0)


def test_percentiles_and_latency_fields():
    assert watch_stats.percentile([], 50) is None
    assert watch_stats.percentile([4, 1, 3, 2], 50) == 2
    assert watch_stats.percentile(list(range(1, 21)), 95) == 19
    assert watch_stats.percentile([7], 95) == 7
    stats = watch_stats.LoopStats(start=0.0)
    for i, latency in enumerate((0.010, 0.030, 0.020, 0.100)):
        stats.success(i + 1.0, latency)
    out = stats.as_dict(end=5.0)
    assert out["max_latency_ms"] == 100.0
    assert out["p50_latency_ms"] == 20.0
    assert out["p95_latency_ms"] == 100.0
    assert watch_stats.LoopStats(start=0.0).as_dict(end=1.0)["p50_latency_ms"] is None


def test_failures_are_capped_at_20():
    stats = watch_stats.LoopStats(start=10.0)
    for i in range(25):
        stats.failure(10.0 + i, "error %d" % i)
    out = stats.as_dict(end=40.0)
    assert out["failed"] == 25 and out["calls"] == 25
    assert len(out["failures"]) == 20
    assert out["failures"][0] == {"t": 0.0, "error": "error 0"}
    assert out["failures"][-1] == {"t": 19.0, "error": "error 19"}
    assert out["failures_omitted"] == 5


def test_fingerprints_distinct_in_order():
    stats = watch_stats.LoopStats(start=0.0)
    for t, sha in ((0.0, "aa"), (1.0, "aa"), (2.0, "bb"), (3.0, "aa"), (4.0, "bb")):
        stats.fingerprint(t, sha)
    assert stats.as_dict(end=5.0)["fingerprints"] == [
        {"sha256": "aa", "first_seen_s": 0.0, "last_seen_s": 3.0},
        {"sha256": "bb", "first_seen_s": 2.0, "last_seen_s": 4.0},
    ]


def test_describe_error():
    assert common.describe_error(asyncio.TimeoutError(), 2.5) == "timed out after 2.5 s"
    plugin_error = Exception("x")
    plugin_error.error = types.SimpleNamespace(message="External plugin 'a'\n  connection failed")
    assert common.describe_error(plugin_error, 1) == "External plugin 'a' connection failed"
    assert common.describe_error(ValueError("bad"), 1) == "ValueError: bad"


# ---------------------------------------------------------------- stop conditions and file watching


def test_stop_conditions(tmp_path):
    now = [0.0]
    stop_file = tmp_path / "stop"
    stop = watch.LoopStop(deadline=10.0, stop_file=str(stop_file), clock=lambda: now[0])
    assert stop.check() is None
    stop_file.write_text("")
    assert stop.check() == "stop-file"
    now[0] = 20.0
    assert stop.check() == "stop-file"  # the first reason stays

    stop = watch.LoopStop(deadline=10.0, clock=lambda: now[0])
    assert stop.check() == "duration"

    now[0] = 0.0
    stop = watch.LoopStop(deadline=10.0, clock=lambda: now[0])
    stop.request("SIGTERM")
    stop.request("SIGINT")
    assert stop.check() == "SIGTERM"


def test_file_hashes_notice_changes(tmp_path):
    cert = tmp_path / "gateway.crt"
    key = tmp_path / "gateway.key"
    cert.write_text("cert 1")
    key.write_text("key 1")
    tls = types.SimpleNamespace(certfile=str(cert), keyfile=str(key), ca_bundle=None)
    paths = watch_targets.tls_file_paths(tls)
    assert paths == {"certfile": str(cert), "keyfile": str(key)}
    before = watch_targets.file_hashes(paths)
    assert before == watch_targets.file_hashes(paths)
    assert len(before["certfile"]) == 64
    cert.write_text("cert 2")
    after = watch_targets.file_hashes(paths)
    assert after != before and after["keyfile"] == before["keyfile"]
    key.unlink()
    missing = watch_targets.file_hashes(paths)
    assert missing["keyfile"].startswith("unreadable:")


# ---------------------------------------------------------------- the driver


def test_steady_loop_counts_calls():
    clock = VirtualClock()
    factory = Factory(clock)
    summary = run(clock, [watch_targets.LoopTarget("a", factory)], loop=2.0)
    plugin = summary["plugins"]["a"]
    assert plugin["failed"] == 0 and plugin["ok"] == plugin["calls"]
    assert 9 <= plugin["calls"] <= 11  # one call every 0.2 s for 2 s
    assert plugin["hook"] == "tool_pre_invoke"
    assert plugin["reconnects"] == 0 and plugin["reloads"] == 0
    assert len(factory.clients) == 1 and factory.clients[0].closed  # one long-lived client, shut down at the end
    assert plugin["longest_gap_s"] == pytest.approx(0.2, abs=0.06)
    assert summary["stopped_by"] == "duration"
    assert summary["total"]["calls"] == plugin["calls"]
    assert watch_stats.loop_exit_code(summary) == 0 and summary["ok"] is True


def test_recreates_client_after_failure():
    clock = VirtualClock()
    factory = Factory(clock, {"fail_when": lambda now, n: n == 3}, {})
    summary = run(clock, [watch_targets.LoopTarget("a", factory)], loop=3.0)
    plugin = summary["plugins"]["a"]
    assert plugin["failed"] == 1
    assert plugin["failures"][0]["error"] == "RuntimeError: connection reset"
    assert plugin["failures"][0]["t"] == pytest.approx(0.45, abs=0.06)
    assert len(factory.clients) == 2
    first, second = factory.clients
    assert first.closed and first.calls == 3  # never called again after its failure
    assert second.calls > 0
    assert plugin["reconnects"] == 1
    assert watch_stats.loop_exit_code(summary) == 1 and summary["ok"] is False


def test_failed_recreation_is_a_failed_call():
    clock = VirtualClock()
    down = {"start_error": ConnectionRefusedError("refused")}
    factory = Factory(clock, {"fail_when": lambda now, n: n == 2}, down, down, {})
    summary = run(clock, [watch_targets.LoopTarget("a", factory)], loop=3.0)
    plugin = summary["plugins"]["a"]
    assert plugin["failed"] == 3  # one call + two creation attempts
    assert [f["error"] for f in plugin["failures"]][1:] == ["ConnectionRefusedError: refused"] * 2
    assert len(factory.clients) == 4 and all(c.closed for c in factory.clients)
    assert plugin["reconnects"] == 1
    assert plugin["calls"] == plugin["ok"] + plugin["failed"]


def test_outage_sets_longest_gap():
    clock = VirtualClock()
    factory = Factory(clock, {"fail_when": lambda now, n: 1.0 <= now < 2.0})
    summary = run(clock, [watch_targets.LoopTarget("a", factory)], loop=4.0)
    plugin = summary["plugins"]["a"]
    assert plugin["failed"] >= 4
    assert 1.0 <= plugin["longest_gap_s"] <= 1.5
    assert summary["total"]["longest_gap_s"] == plugin["longest_gap_s"]


def test_reload_on_tls_file_change(tmp_path):
    clock = VirtualClock()
    cert = tmp_path / "gateway.crt"
    cert.write_text("old")

    def rotate(client):
        if clock() >= 2.0 and cert.read_text() == "old":
            cert.write_text("new")

    factory = Factory(clock, {"on_call": rotate})
    target = watch_targets.LoopTarget("a", factory, hashes=lambda: watch_targets.file_hashes({"certfile": str(cert)}))
    summary = run(clock, [target], loop=5.0)
    plugin = summary["plugins"]["a"]
    assert plugin["reloads"] == 1
    assert plugin["failed"] == 0 and plugin["reconnects"] == 0
    assert len(factory.clients) == 2 and factory.clients[0].closed
    assert factory.clients[0].calls > 0 and factory.clients[1].calls > 0


def test_reload_waits_until_files_load():
    clock = VirtualClock()
    state = {"hash": "old"}

    def rotate(client):
        if clock() >= 1.0:
            state["hash"] = "new"

    factory = Factory(clock, {"on_call": rotate})
    target = watch_targets.LoopTarget(
        "a",
        factory,
        hashes=lambda: {"certfile": state["hash"]},
        files_ready=lambda: None if clock() >= 4.0 else "key values mismatch",
    )
    summary = run(clock, [target], loop=6.0)
    plugin = summary["plugins"]["a"]
    assert plugin["reloads"] == 1 and plugin["failed"] == 0
    first, second = factory.clients
    assert first.calls >= 18  # kept running from 0 to ~4 s while the key did not match yet


def test_reload_after_grace_even_if_files_broken():
    clock = VirtualClock()
    state = {"hash": "old"}

    def rotate(client):
        if clock() >= 1.0:
            state["hash"] = "broken"

    # The second client cannot start: the broken files make a restarted gateway fail too.
    factory = Factory(clock, {"on_call": rotate}, {"start_error": RuntimeError("PEM lib")})
    target = watch_targets.LoopTarget("a", factory, hashes=lambda: {"certfile": state["hash"]}, files_ready=lambda: "PEM lib")
    summary = run(clock, [target], loop=6.0, reload_grace=2.0)
    plugin = summary["plugins"]["a"]
    assert plugin["reloads"] == 1
    assert plugin["failed"] > 0
    assert plugin["failures"][0]["t"] >= 3.0  # not before the grace period
    assert watch_stats.loop_exit_code(summary) == 1


def test_stop_file_ends_the_loop(tmp_path):
    clock = VirtualClock()
    stop_file = tmp_path / "stop"

    def touch(client):
        if clock() >= 1.5:
            stop_file.write_text("")

    factory = Factory(clock, {"on_call": touch})
    summary = run(clock, [watch_targets.LoopTarget("a", factory)], loop=600.0, stop_file=str(stop_file))
    assert summary["stopped_by"] == "stop-file"
    assert summary["duration_s"] < 2.0
    assert factory.clients[0].closed


def test_plugins_run_concurrently_with_fingerprints():
    clock = VirtualClock()
    fast, slow = Factory(clock), Factory(clock, {"latency": 0.5})
    certs = iter(["aa"] * 3 + ["bb"] * 100)

    async def fingerprint():
        await clock.sleep(0.01)
        return next(certs)

    targets = [watch_targets.LoopTarget("fast", fast, fingerprint=fingerprint), watch_targets.LoopTarget("slow", slow)]
    summary = run(clock, targets, loop=5.0)
    assert set(summary["plugins"]) == {"fast", "slow"}
    assert summary["plugins"]["fast"]["calls"] >= 20
    assert 8 <= summary["plugins"]["slow"]["calls"] <= 11  # the slow plugin does not hold the fast one back
    assert summary["duration_s"] == pytest.approx(5.0, abs=0.6)
    prints = summary["plugins"]["fast"]["fingerprints"]
    assert [p["sha256"] for p in prints] == ["aa", "bb"]
    assert prints[1]["first_seen_s"] == pytest.approx(3.0, abs=0.05)
    assert summary["plugins"]["slow"]["fingerprints"] == []
    assert summary["total"]["calls"] == summary["plugins"]["fast"]["calls"] + summary["plugins"]["slow"]["calls"]


def test_fatal_error_stops_only_that_plugin():
    clock = VirtualClock()
    bad = Factory(clock, {"start_error": watch_targets.FatalLoopError("no hook the probe can call")})
    good = Factory(clock)
    summary = run(clock, [watch_targets.LoopTarget("bad", bad), watch_targets.LoopTarget("good", good)], loop=2.0)
    assert summary["plugins"]["bad"]["error"] == "no hook the probe can call"
    assert len(bad.clients) == 1  # not retried
    assert summary["plugins"]["good"]["ok"] >= 9
    assert watch_stats.loop_exit_code(summary) == 2


def test_exit_codes():
    ok = {"loop": True, "plugins": {"a": {"failed": 0, "error": None}, "b": {"failed": 0, "error": None}}}
    assert watch_stats.loop_exit_code(ok) == 0
    one_failed = {"loop": True, "plugins": {"a": {"failed": 0, "error": None}, "b": {"failed": 1, "error": None}}}
    assert watch_stats.loop_exit_code(one_failed) == 1
    assert watch_stats.loop_exit_code({"loop": True, "ok": False, "error": "config file missing"}) == 2


# ---------------------------------------------------------------- output


def test_summary_file_is_atomic_and_identical_to_stdout(tmp_path, capsys, monkeypatch):
    path = tmp_path / "summary.json"
    path.write_text("previous run\n")
    replaced = []
    real_replace = os.replace

    def spy_replace(src, dst):
        replaced.append((src, dst))
        assert path.read_text() == "previous run\n"  # the old file stays whole until the rename
        real_replace(src, dst)

    monkeypatch.setattr(watch_stats.os, "replace", spy_replace)
    summary = {"loop": True, "ok": True, "plugins": {"a": {"calls": 3}}, "total": {"calls": 3}}
    assert watch_stats.emit_loop(summary, str(path)) is True
    out = capsys.readouterr().out
    assert out.count("\n") == 1  # ONE line
    assert path.read_text() == out
    assert json.loads(out) == summary
    assert len(replaced) == 1
    src, dst = replaced[0]
    assert os.path.dirname(src) == str(tmp_path) and dst == str(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]  # no temporary file left


def test_summary_write_failure_is_reported(tmp_path, capsys):
    path = tmp_path / "missing-dir" / "summary.json"
    assert watch_stats.emit_loop({"loop": True, "ok": True}, str(path)) is False
    captured = capsys.readouterr()
    line = json.loads(captured.out)
    assert line["summary_error"].startswith("cannot write summary")
    assert "cannot write summary" in captured.err
    assert not path.exists()


def test_loop_summary_end_to_end_json(tmp_path, capsys):
    clock = VirtualClock()
    factory = Factory(clock, {"fail_when": lambda now, n: n == 2}, {})
    summary = run(clock, [watch_targets.LoopTarget("a", factory, url="https://p:8000/mcp")], loop=1.0)
    assert watch_stats.emit_loop(summary, str(tmp_path / "s.json"))
    line = json.loads(capsys.readouterr().out)
    assert line["loop"] is True and line["interval_s"] == 0.2
    assert line["plugins"]["a"]["url"] == "https://p:8000/mcp"
    assert line["total"] == {"calls": line["plugins"]["a"]["calls"], "ok": line["plugins"]["a"]["ok"], "failed": 1,
                             "longest_gap_s": line["plugins"]["a"]["longest_gap_s"]}
    assert json.loads((tmp_path / "s.json").read_text()) == line


# ---------------------------------------------------------------- cancellations and signals


class FakeGroup(Exception):
    """Like an ExceptionGroup (Python 3.11+) raised by an anyio task group on shutdown."""

    def __init__(self, *exceptions):
        super().__init__("unhandled errors in a TaskGroup")
        self.exceptions = exceptions


def test_stray_cancellation_is_a_failed_call_with_its_cause():
    clock = VirtualClock()
    cause = FakeGroup(asyncio.CancelledError(), FakeGroup(ConnectionError("All connection attempts failed")))
    factory = Factory(clock, {"fail_when": lambda now, n: n == 2, "fail_with": asyncio.CancelledError, "close_result": cause}, {})
    summary = run(clock, [watch_targets.LoopTarget("a", factory)], loop=2.0)
    plugin = summary["plugins"]["a"]
    assert summary["stopped_by"] == "duration"  # the loop went on after the MCP client cancelled the call
    assert plugin["failed"] == 1
    assert plugin["failures"][0]["error"] == "connection broke: ConnectionError: All connection attempts failed"
    assert len(factory.clients) == 2 and factory.clients[1].calls >= 5
    assert plugin["reconnects"] == 1


def test_stray_cancellation_without_cause():
    clock = VirtualClock()
    factory = Factory(clock, {"fail_when": lambda now, n: n == 1, "fail_with": asyncio.CancelledError}, {})
    summary = run(clock, [watch_targets.LoopTarget("a", factory)], loop=1.0)
    assert summary["plugins"]["a"]["failures"][0]["error"] == "StrayCancel: cancelled inside the MCP client (its connection broke)"


def test_sigterm_stops_after_the_call():
    clock = VirtualClock()

    def terminate(client):
        if client.calls == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    factory = Factory(clock, {"on_call": terminate})

    async def loop_then_handlers():
        summary = await watch.run_loop([watch_targets.LoopTarget("a", factory)], opts(loop=60.0), clock=clock, sleep=clock.sleep)
        # still inside the event loop (asyncio.run removes handlers itself when it closes the loop)
        return summary, signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)

    summary, sigterm, sigint = clock.run(loop_then_handlers())
    assert summary["stopped_by"] == "SIGTERM" and summary["forced"] is False
    assert summary["plugins"]["a"]["calls"] in (3, 4) and summary["plugins"]["a"]["failed"] == 0
    assert sigterm == signal.SIG_DFL and sigint is signal.default_int_handler  # handlers removed after the loop


def test_second_signal_abandons_the_call_in_flight():
    clock = VirtualClock()

    class Hanging(FakeClient):
        async def call(self):
            self.calls += 1
            if self.calls == 2:
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)
                await self.clock.sleep(1000.0)  # never answers
            await self.clock.sleep(0.01)

    clients = []

    def new_client(on_reconnect):
        clients.append(Hanging(clock, clients))
        return clients[-1]

    summary = clock.run(watch.run_loop([watch_targets.LoopTarget("a", new_client)], opts(loop=60.0), clock=clock, sleep=clock.sleep))
    plugin = summary["plugins"]["a"]
    assert summary["stopped_by"] == "SIGINT" and summary["forced"] is True
    assert summary["duration_s"] < 5.0
    assert plugin["failed"] == 1 and plugin["failures"][0]["error"].startswith("abandoned after")
    assert clients[0].closed
    assert watch_stats.loop_exit_code(summary) == 1


def test_samplers_end_when_no_plugin_is_left():
    clock = VirtualClock()
    bad = Factory(clock, {"start_error": watch_targets.FatalLoopError("no hook")})

    async def hanging_fingerprint():
        await clock.sleep(10000.0)

    summary = run(clock, [watch_targets.LoopTarget("a", bad, fingerprint=hanging_fingerprint)], loop=600.0)
    assert summary["stopped_by"] == "no plugin left to watch"
    assert summary["duration_s"] < 1.0


def test_fingerprint_errors_are_counted():
    clock = VirtualClock()

    async def refused():
        await clock.sleep(0.01)
        raise ConnectionRefusedError("refused")

    summary = run(clock, [watch_targets.LoopTarget("a", Factory(clock), fingerprint=refused)], loop=3.0)
    plugin = summary["plugins"]["a"]
    assert plugin["fingerprints"] == []
    assert plugin["fingerprint_errors"] == 3
    assert plugin["last_fingerprint_error"] == "ConnectionRefusedError: refused"
    assert plugin["failed"] == 0  # a failed handshake is not a failed call


def test_in_thread_runs_in_a_daemon_thread():
    seen = {}

    def work(value):
        seen["daemon"] = threading.current_thread().daemon
        return value * 2

    def boom():
        raise ValueError("no")

    async def main():
        assert await watch_targets.in_thread(work, 21) == 42
        with pytest.raises(ValueError):
            await watch_targets.in_thread(boom)

    asyncio.run(main())
    assert seen["daemon"] is True


def test_root_exception():
    leaf = OSError("refused")
    assert watch.root_exception(FakeGroup(asyncio.CancelledError(), FakeGroup(leaf))) is leaf
    assert watch.root_exception(leaf) is leaf
