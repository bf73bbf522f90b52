# Copyright: mcpgateway.mtls contributors
# SPDX-License-Identifier: Apache-2.0
"""mcp-mtls-rotate: scheduled certificate rotation of mcpgateway.mtls (role rotate_schedule).

  mcp-mtls-rotate [--now]                 run the rotation now
  mcp-mtls-rotate --random-delay SECONDS  wait a random 0..SECONDS first, then run (the cron entry)
  mcp-mtls-rotate --status                print the last run's result (last-run.json)

The role installs this file as the wrapper (rotate_schedule_wrapper), behind a first line naming the
Python that runs ansible-playbook, and its settings beside it: WRAPPER.json (root, 0600; see SETTINGS).
Standard library only, Python 3.9 or later.

A run holds an flock(2) lock on lock_file, so two runs never overlap: a run that finds it held does
nothing, records status "locked" and exits rc_locked (75). The playbook's output goes to stdout (the
journal under systemd) and to a log per run in log_dir (the newest keep_logs are kept); its result to
last-run.json there: {status: ok|failed|locked, rc, started, finished, duration_seconds, log, playbook,
inventory, host}, replaced atomically. The log names the environment's variables, never their values.
Exit status: the playbook's (0 ok; 124 = killed after the timeout, 137 if that took SIGKILL; 128+N =
killed by signal N), 75 locked, 64 usage, 78 settings missing or unsafe, 1 the log folder or the lock
cannot be made. --status: 0 last run ok, 1 failed, 75 locked, 2 no run recorded yet.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import json
import os
import pwd
import random
import re
import select
import shlex
import signal
import stat
import subprocess
import sys
import tempfile
import time

EX_USAGE = 64
EX_CONFIG = 78
RC_TIMEOUT = 124
# After the timeout: SIGTERM to the run's process group, then SIGKILL this many seconds later (as
# `timeout --kill-after=60` did).
KILL_AFTER = 60
# The settings file: {name: type}. command = [ansible-playbook, -i, INVENTORY, PLAYBOOK, extra args...];
# environment = {NAME: value} on top of the wrapper's own for ansible-playbook only.
SETTINGS = {"inventory": str, "playbook": str, "command": list, "environment": dict, "log_dir": str,
            "last_run": str, "lock_file": str, "keep_logs": int, "timeout": int, "rc_locked": int}
SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM)
ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


class SettingsError(Exception):
    """The settings file is missing, unreadable, invalid or writable by others than its owner root."""


class Interrupted(Exception):
    """A signal came during the random delay."""


def load_settings(path):
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            data = json.loads(handle.read().decode("utf-8"))
    except OSError as exc:
        raise SettingsError(f"cannot read the settings {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise SettingsError(f"{path} is not valid JSON: {exc}") from None
    # The wrapper runs the command it names as root: only root (or who runs it) may change it.
    if info.st_uid not in (0, os.getuid()) or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise SettingsError(f"{path} must belong to root and be writable by its owner only")
    if not isinstance(data, dict):
        raise SettingsError(f"{path} holds no settings object")
    settings = {}
    for name, kind in SETTINGS.items():
        value = data.get(name)
        if kind is int and isinstance(value, str) and re.fullmatch(r"[0-9]+", value):
            value = int(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise SettingsError(f"{path}: {name} must be a {kind.__name__}")
        settings[name] = value
    command = settings["command"]
    if not command or not all(isinstance(arg, str) for arg in command):
        raise SettingsError(f"{path}: command must be a list of strings, the program first")
    # Values as Jinja's join wrote them in the old wrapper: str() of what the inventory gave.
    settings["environment"] = {str(key): str(value) for key, value in settings["environment"].items()}
    if settings["keep_logs"] < 1 or settings["timeout"] < 0:
        raise SettingsError(f"{path}: keep_logs must be at least 1 and timeout at least 0")
    return settings


def parse_args(argv):
    """("now" | "status", delay) or None for a usage error."""
    if argv in ([], [""], ["--now"]):
        return "now", 0
    if len(argv) == 2 and argv[0] == "--random-delay" and re.fullmatch(r"[0-9]+", argv[1]):
        return "now", int(argv[1], 10)
    return ("status", 0) if argv == ["--status"] else None


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def shell_quote(arg):
    """As a shell reads it, on one line: $'...' (bash's ANSI-C quoting) for what is not printable."""
    if arg.isprintable():
        return shlex.quote(arg)
    return "$'" + "".join(ESCAPES.get(c, c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 0x80
                                      else f"\\U{ord(c):08x}") for c in arg) + "'"


class Output:
    """Where the run writes: stdout or stderr, and the log of the run once it is open. Like tee -p: a
    stream that goes away (a closed pipe, a dropped terminal) stops only the copies to it."""

    def __init__(self, prog):
        self.prog = prog
        self.log_fd = None
        self.lost = set()

    def _write(self, fd, data):
        if fd in self.lost:
            return
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except OSError as exc:
            self.lost.add(fd)
            if exc.errno != errno.EPIPE and fd != 2:
                self.say(f"{self.prog}: cannot write to {'the log' if fd == self.log_fd else 'stdout'}: "
                         f"{exc.strerror}", stream=2, log=False)

    def write(self, data, stream=1, log=True):
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        if log and self.log_fd is not None:
            self._write(self.log_fd, data)
        self._write(stream, data)

    def say(self, line, stream=1, log=True):
        self.write(line + "\n", stream, log)

    def open_log(self, path):
        try:
            self.log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                                  0o666)
        except OSError as exc:
            self.say(f"{self.prog}: cannot write the log {path}: {exc.strerror}", stream=2)


def record(settings, out, status, rc, started, finished, duration, log):
    """last-run.json: a temp file beside it, 0640, renamed over it."""
    report = {"status": status, "rc": rc, "started": started, "finished": finished,
              "duration_seconds": duration, "log": log, "playbook": settings["playbook"],
              "inventory": settings["inventory"], "host": os.uname().nodename}
    target = settings["last_run"]
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".last-run.json.", dir=os.path.dirname(target))
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(report, indent=2) + "\n")
            handle.flush()
            os.fchmod(handle.fileno(), 0o640)
        os.replace(tmp, target)
    except OSError:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        out.say(f"{out.prog}: cannot write {target}", stream=2, log=False)


def show_status(settings, out):
    last_run = settings["last_run"]
    try:
        with open(last_run, "rb") as handle:
            raw = handle.read()
    except OSError:
        out.say(f"{out.prog}: no run recorded yet ({last_run} does not exist)", stream=2)
        return 2
    out.write(raw)
    try:
        status = json.loads(raw.decode("utf-8")).get("status")
    except (ValueError, AttributeError):
        status = None
    verdicts = {"ok": (0, None), "failed": (1, "the last run FAILED; see the log named above"), "locked": (
        settings["rc_locked"], f"the last run was skipped: another run held {settings['lock_file']}")}
    rc, message = verdicts.get(status, (2, f"{last_run} has no status"))
    if message:
        out.say(f"{out.prog}: {message}", stream=2)
    return rc


def prune_logs(log_dir, keep, out):
    """Keep the newest `keep` run logs (their names sort by time)."""
    logs = sorted(glob.glob(os.path.join(glob.escape(log_dir), "rotate-*.log")))
    for old in logs[:max(0, len(logs) - keep)]:
        try:
            os.unlink(old)
        except FileNotFoundError:
            pass
        except OSError as exc:
            out.say(f"{out.prog}: cannot remove {old}: {exc.strerror}", stream=2, log=False)


class Runner:
    """One run: the random delay, the lock, ansible-playbook under the timeout, the log and the record."""

    def __init__(self, settings, out):
        self.settings = settings
        self.out = out
        self.phase = "start"
        self.proc = None
        self.own_group = False

    def on_signal(self, signum, _frame):
        if self.phase == "delay":
            raise Interrupted
        # Forwarded like timeout(1) did to the command: when the wrapper runs it under a timeout.
        if self.phase == "run" and self.settings["timeout"] > 0:
            self.send(signum)

    def send(self, signum):
        try:
            if self.own_group:
                os.killpg(self.proc.pid, signum)  # ansible-playbook and everything it started
            elif self.proc.returncode is None:
                os.kill(self.proc.pid, signum)
        except ProcessLookupError:
            pass

    def __call__(self, delay):
        out, settings = self.out, self.settings
        prog, log_dir, lock_file = out.prog, settings["log_dir"], settings["lock_file"]
        os.umask(0o027)  # the log folder 0750, the logs and the lock 0640
        for signum in SIGNALS:
            signal.signal(signum, self.on_signal)
        if delay > 0:
            wait_s = random.SystemRandom().randint(0, delay)
            try:
                self.phase = "delay"
                out.say(f"{prog}: random delay: starting in {wait_s}s (at most {delay}s)")
                time.sleep(wait_s)
                self.phase = "start"
            except Interrupted:
                out.say(f"{prog}: interrupted during the random delay; nothing ran", stream=2)
                return 143
        try:
            os.makedirs(log_dir, mode=0o750, exist_ok=True)
        except OSError as exc:
            out.say(f"{prog}: cannot create {log_dir}: {exc.strerror}", stream=2)
            return 1
        started, start_s = now(), time.monotonic()
        # Held until this process exits; ansible-playbook inherits it too (Python closes it in everything
        # ansible starts), so a run that lost its wrapper still keeps the next one out.
        try:
            lock_fd = os.open(lock_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            rc = settings["rc_locked"]
            out.say(f"{prog}: another run holds {lock_file}: not starting a second one (status locked, exit {rc})",
                    stream=2)
            record(settings, out, "locked", rc, started, now(), 0, None)
            return rc
        except OSError as exc:
            out.say(f"{prog}: cannot open the lock file {lock_file}: {exc.strerror}", stream=2)
            record(settings, out, "failed", 1, started, now(), 0, None)
            return 1

        log = os.path.join(log_dir, time.strftime("rotate-%Y%m%dT%H%M%SZ", time.gmtime()) + ".log")
        if os.path.exists(log):
            log = log[:-4] + f"-{os.getpid()}.log"
        out.open_log(log)
        command, environment = settings["command"], settings["environment"]
        out.write(f"# {prog}: run started {started} on {os.uname().nodename}\n"
                  f"# command: {' '.join(map(shell_quote, command))}\n# environment: {' '.join(environment)}\n")
        os.chdir("/")
        rc = self.run(command, environment, lock_fd)
        duration = int(time.monotonic() - start_s)
        finished = now()
        if rc == 0:
            status = "ok"
            out.say(f"{prog}: ok in {duration}s; log {log}")
        else:
            status = "failed"
            why = f"rc {rc}"
            if rc == RC_TIMEOUT:
                why = f"killed after the timeout of {settings['timeout']}s (rc {rc})"
            elif rc == 127:
                why = f"cannot run {command[0]} (rc 127)"
            out.say(f"{prog}: FAILED, {why}, after {duration}s; log {log}", stream=2)
        record(settings, out, status, rc, started, finished, duration, log)
        prune_logs(log_dir, settings["keep_logs"], out)
        return rc

    def run(self, command, environment, lock_fd):
        """ansible-playbook's exit status, 128+N if signal N killed it, 124 (137) after the timeout."""
        timeout = self.settings["timeout"]
        env = dict(os.environ)
        # Ansible refuses to run without a UTF-8 locale, and cron gives none; the settings may set another.
        env["LC_ALL"] = "C.UTF-8"
        # systemd sets no HOME for a service without User=; ansible wants ~/.ansible (and ssh ~/.ssh).
        if not env.get("HOME"):
            try:
                env["HOME"] = pwd.getpwuid(os.getuid()).pw_dir
            except KeyError:
                pass
        env.update(environment)
        # Without a terminal the run gets a process group of its own, all of it killed after the timeout;
        # with one it stays in the foreground group, so that Ctrl-C reaches ansible-playbook.
        self.own_group = timeout > 0 and not os.isatty(0)
        group = {}
        if self.own_group:
            group = {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}
        try:
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, cwd="/", env=env, pass_fds=(lock_fd,), **group)
        except (OSError, ValueError) as exc:  # ValueError: a NUL in an argument or the environment
            self.out.say(f"{self.out.prog}: cannot run {command[0]}: {getattr(exc, 'strerror', None) or exc}")
            return 127 if getattr(exc, "errno", None) == errno.ENOENT else 126
        self.phase = "run"
        try:
            timed_out = self.pump(timeout)
        finally:
            self.phase = "done"
        rc = self.proc.returncode
        if timed_out:
            return 128 + signal.SIGKILL if rc == -signal.SIGKILL else RC_TIMEOUT
        return 128 - rc if rc < 0 else rc

    def pump(self, timeout):
        """Copy the output until its end and the exit of ansible-playbook; True if the timeout hit it."""
        proc, pipe = self.proc, self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout if timeout > 0 else None
        sent, timed_out, pipe_open = None, False, True
        while pipe_open or proc.poll() is None:
            wait = None
            if deadline is not None:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    if sent is None:
                        timed_out = proc.poll() is None
                        sent, deadline = signal.SIGTERM, time.monotonic() + KILL_AFTER
                    else:
                        sent, deadline = signal.SIGKILL, None
                    self.send(sent)
                    continue
            if pipe_open:
                if select.select([pipe], [], [], wait)[0]:
                    data = os.read(pipe, 65536)
                    if data:
                        self.out.write(data)
                    else:
                        pipe_open = False
                        proc.stdout.close()
            else:
                try:
                    proc.wait(wait)
                except subprocess.TimeoutExpired:
                    pass
        return timed_out


def main(argv=None, settings_file=None, prog=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    prog = prog or os.path.basename(sys.argv[0] if sys.argv and sys.argv[0] else "") or "mcp-mtls-rotate"
    out = Output(prog)
    parsed = parse_args(argv)
    if parsed is None:
        out.say(f"usage: {prog} [--now | --random-delay SECONDS | --status]", stream=2)
        return EX_USAGE
    try:
        settings = load_settings(settings_file or os.path.realpath(__file__) + ".json")
    except SettingsError as exc:
        out.say(f"{prog}: {exc}", stream=2)
        return EX_CONFIG
    action, delay = parsed
    if action == "status":
        return show_status(settings, out)
    return Runner(settings, out)(delay)


if __name__ == "__main__":
    sys.exit(main())
