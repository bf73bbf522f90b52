"""Crash safety: the real PKI modules, SIGKILLed at many points, never lose a key or leave a torn file.

Each module runs as its own process, the way Ansible runs it: ``python plugins/modules/NAME.py ARGS.json``
with ``{"ANSIBLE_MODULE_ARGS": {...}}`` and the collections root on PYTHONPATH. Two kinds of kill point:

* timer: SIGKILL from outside after a delay; the delays are spread evenly over the measured run time
  (plus seeded jitter), so they sweep start-up, key generation and the writes;
* file operation: a small runner (the module runs in it through runpy, as AnsiballZ does) counts the
  file operations below the tree (write, fchmod, fsync, rename, link, unlink, mkdir, rmdir) and
  SIGKILLs itself at the N-th one; a kill at a write first writes half the buffer (a torn write).

After every kill: each file is the complete old version or a complete new one (keys and certificates
parse, certificates are signed by a CA of the tree, CA copies hold CA certificates only), modes are
right (keys 0600), no key is lost, leftover temp files are the writer's own (``.NAME.XXXXXXXX.tmp``,
0600; a certificate's may already have its final 0644). A key beside a certificate that does not belong to it (or a missing half) must be named by the
next run, which re-issues it (and removes the temp files, reporting it). That run converges: one more
run (in this process, through module_utils, to keep the file under two minutes) reports changed=false
and leaves the tree byte-identical; no temp file is left, and ``openssl verify -x509_strict`` accepts
every leaf.

Kill points: first run, forced renewal (new keys), keep_key renewal, CA creation (ca module) and CA
rotation promotion (ca_rotation state=promoted, every file operation); the counts (tried, landed
mid-write: the tree changed but not as a complete run changes it) are printed at the end (-s). Each
scenario checks its share of the at least 40 kill points (30 mid-write) when it ends (KILL_FLOORS).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from integration_support import COLLECTIONS, MODULES, PYTHON, ca_args, leaf_entries, set_args
from ansible_collections.mcpgateway.mtls.plugins.module_utils import _rotation as R
from ansible_collections.mcpgateway.mtls.plugins.module_utils._pki import ensure_certificates
from ansible_collections.mcpgateway.mtls.plugins.module_utils._pkica import ensure_ca
from ansible_collections.mcpgateway.mtls.plugins.module_utils._pkispec import validate_ca, validate_leaves

pytestmark = pytest.mark.slow
SEED = 20261202
LEAVES = 20              # RSA-2048 leaves of the big runs: about 2 s of key generation on 2 cores
TEMP_RE = re.compile(r"^\.(?P<base>.+)\.[A-Za-z0-9_]{8}\.tmp$")
STATS = {}               # scenario -> counts, printed at the end

RUNNER = r'''
import atexit, os, runpy, shutil, signal, sys, threading
# N: kill at the N-th operation; "at:OP:TEXT:K" / "after:OP:TEXT:K": at (a write: half-way through) or
# right after the K-th operation OP on a path containing TEXT.
SPEC = os.environ.get("FAULT_KILL_AT", "0")
KILL_AT = int(SPEC) if SPEC.isdigit() else -1
EVENT = SPEC.split(":", 3) if SPEC.startswith(("at:", "after:")) else None
ROOT = os.environ["FAULT_ROOT"].rstrip("/") + "/"
LOG = os.environ.get("FAULT_LOG")
FD_OPS = ("write", "fsync", "fchmod")
readlink = os.readlink
lock = threading.Lock()
state = {"count": 0, "log": [], "events": 0}


def target(name, args, kwargs):
    if name in FD_OPS:
        return readlink("/proc/self/fd/%d" % args[0])
    path = os.fsdecode(args[0])
    if kwargs.get("dir_fd") is not None:
        path = os.path.join(readlink("/proc/self/fd/%d" % kwargs["dir_fd"]), path)
    return os.path.abspath(path)


def wrap(name):
    real = getattr(os, name)

    def operation(*args, **kwargs):
        try:
            path = target(name, args, kwargs)
        except (OSError, TypeError, ValueError):
            path = ""
        if not (path + "/").startswith(ROOT):
            return real(*args, **kwargs)
        event = False
        with lock:
            state["count"] += 1
            number = state["count"]
            if LOG:
                state["log"].append("%d %s %s" % (number, name, path))
            if EVENT and name == EVENT[1] and EVENT[2] in os.path.basename(path):
                state["events"] += 1
                event = state["events"] == int(EVENT[3])
        if number == KILL_AT or (event and EVENT[0] == "at"):
            if name == "write" and len(args[1]) > 1:
                real(args[0], memoryview(args[1])[:len(args[1]) // 2])  # a torn write
            os.kill(os.getpid(), signal.SIGKILL)
        result = real(*args, **kwargs)
        if event:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(os, name, operation)


def report():
    if LOG:
        with open(LOG, "w") as handle:
            handle.write("\n".join(state["log"]) + "\n")


atexit.register(report)
for op in ("write", "fsync", "fchmod", "replace", "rename", "link", "unlink", "mkdir", "rmdir"):
    wrap(op)
module = sys.argv[1]
sys.argv = [module] + sys.argv[2:]
runpy.run_path(module, run_name="__main__")
'''


# ---------------------------------------------------------------- running modules

def module_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(COLLECTIONS) + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("FAULT_KILL_AT", None)
    return env


def args_file(folder, module, args):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ("%s.%d.json" % (module, time.monotonic_ns()))
    path.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    return path


def parse_result(out):
    text = out.strip()
    start = text.find("{")
    return json.loads(text[start:]) if start >= 0 else {}


def run_module(module, args, work, timeout=120):
    """Run one module to the end; returns (rc, result dict, seconds)."""
    begin = time.monotonic()
    proc = subprocess.run([PYTHON, str(MODULES / (module + ".py")), str(args_file(work, module, args))],
                          capture_output=True, text=True, env=module_env(), timeout=timeout, check=False)
    elapsed = time.monotonic() - begin
    try:
        result = parse_result(proc.stdout)
    except ValueError:
        result = {}
    result.setdefault("_out", proc.stdout + proc.stderr)
    return proc.returncode, result, elapsed


def ok(module, args, work):
    rc, result, _elapsed = run_module(module, args, work)
    assert rc == 0 and not result.get("failed"), result["_out"]
    return result


def kill_after(module, args, work, delay):
    """Start the module, SIGKILL it after DELAY seconds. Returns True when the kill hit a live process."""
    proc = subprocess.Popen([PYTHON, str(MODULES / (module + ".py")), str(args_file(work, module, args))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=module_env())
    try:
        proc.wait(delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
    return proc.wait(60) == -signal.SIGKILL


def runner_path(work):
    path = work / "fault_runner.py"
    if not path.exists():
        path.write_text(RUNNER)
    return path


def run_counted(module, args, work, root, kill_at=0, log=None):
    """Run the module in the fault runner: SIGKILL at file operation KILL_AT below ROOT (0: never), or
    at an event: "at:OP:TEXT:K" (at the K-th operation OP on a file whose name contains TEXT; a write is
    torn: half of it is written first) or "after:OP:TEXT:K" (right after it)."""
    env = module_env()
    env.update(FAULT_ROOT=str(root), FAULT_KILL_AT=str(kill_at))
    if log:
        env["FAULT_LOG"] = str(log)
    proc = subprocess.run([PYTHON, str(runner_path(work)), str(MODULES / (module + ".py")),
                           str(args_file(work, module, args))],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def count_operations(module, args, work, root):
    """Total file operations of a complete run below ROOT, and their log (one line each)."""
    log = work / "operations.log"
    rc, out = run_counted(module, args, work, root, log=log)
    assert rc == 0, out
    lines = [line for line in log.read_text().splitlines() if line]
    return len(lines), lines


# ---------------------------------------------------------------- the tree

def snapshot(root):
    """{relative path: (bytes, mode)} of every file below ROOT (hidden ones included)."""
    out = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            out[os.path.relpath(path, root)] = (Path(path).read_bytes(), stat.S_IMODE(os.lstat(path).st_mode))
    return out


def pem_complete(data, label):
    return data.rstrip(b"\n").endswith(b"-----END " + label + b"-----") and data.startswith(b"-----BEGIN ")


_KEYS = {}


def load_key(data, full=False):
    """A PEM key; FULL adds OpenSSL's consistency checks (30 ms for RSA-2048, so once per key)."""
    cached = _KEYS.get(data)
    if cached is None or (full and not cached[1]):
        key = serialization.load_pem_private_key(data, None, unsafe_skip_rsa_key_validation=not full)
        cached = _KEYS[data] = (key, full)
        if len(_KEYS) > 4000:
            _KEYS.clear()
    return cached[0]


def same_key(key, cert):
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key.public_key().public_bytes(*fmt) == cert.public_key().public_bytes(*fmt)


def signed_by(cert, cas):
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
            return True
        except (InvalidSignature, ValueError, TypeError):  # a wrong signature, issuer name or key type
            continue
    return False


class Tree:
    """The PKI tree below ROOT and what a crashed run may have left of it."""

    def __init__(self, root, leaves):
        self.root = Path(root)
        self.leaves = leaves          # [(name, relative folder, key name, cert name)]

    def cas(self):
        """Every CA certificate in the tree (current, incoming, retired)."""
        out = []
        for rel in ("ca/ca.crt", "ca/next/ca.crt"):
            path = self.root / rel
            if path.exists():
                out.append(x509.load_pem_x509_certificate(path.read_bytes()))
        retired = self.root / "ca" / "retired"
        if retired.is_dir():
            out.extend(x509.load_pem_x509_certificate(p.read_bytes()) for p in retired.glob("*/ca.crt"))
        return out

    def check_files(self, before, known_cas, allow_temps=True, full_keys=True):
        """Every file is the complete old or a complete new version, with the right mode.

        Returns the leftover temp files. BEFORE is the snapshot before the run; KNOWN_CAS the CA
        certificates a new certificate may be signed by (besides self-signed CA certificates).
        """
        temps = []
        now = snapshot(self.root)
        for rel, (data, mode) in sorted(now.items()):
            name = os.path.basename(rel)
            where = "%s (mode %o, %d bytes)" % (rel, mode, len(data))
            if name == ".lock":
                assert os.path.dirname(rel) in ("ca", "ca/next") and data == b"", where
                continue
            match = TEMP_RE.match(name)
            if match:
                assert allow_temps, "temp file left behind: " + where
                # mkstemp makes it 0600; fchmod gives it the final mode before its data is synced.
                assert mode == 0o600 or (mode == 0o644 and not match["base"].endswith(".key")), \
                    "temp file with a wrong mode: " + where
                assert match["base"] in ("ca.key", "ca.crt", "client.key", "client.crt", "server.key",
                                         "server.crt", "rotation.json"), where
                temps.append(rel)
                continue
            assert not name.startswith("."), "unexpected hidden file " + where
            wanted = 0o600 if name.endswith(".key") else 0o644
            assert mode == wanted, "wrong mode: " + where
            if rel in before and before[rel][0] == data:
                continue  # the complete old version
            if name.endswith(".key"):
                assert pem_complete(data, b"PRIVATE KEY"), "torn key " + where
                load_key(data, full=full_keys)
            elif name == "rotation.json":
                state = json.loads(data.decode())
                assert state["phase"] in ("trust", "reissue"), where
            elif name == "ca.crt" and not rel.startswith("ca/"):
                assert pem_complete(data, b"CERTIFICATE"), "torn CA copy " + where
                fingerprints = {c.fingerprint(c.signature_hash_algorithm) for c in known_cas}
                for cert in x509.load_pem_x509_certificates(data):
                    assert cert.fingerprint(cert.signature_hash_algorithm) in fingerprints, "foreign CA in " + where
            else:
                assert name.endswith(".crt"), "unexpected file " + where
                assert pem_complete(data, b"CERTIFICATE"), "torn certificate " + where
                cert = x509.load_pem_x509_certificate(data)
                issuers = [cert] if rel.startswith("ca/") else known_cas
                assert signed_by(cert, issuers), "certificate not signed by a CA of the tree: " + where
        for folder, _dirs, files in os.walk(self.root):
            if any(name.endswith(".key") for name in files):
                mode = stat.S_IMODE(os.stat(folder).st_mode)
                assert mode & 0o077 == 0, "key folder %s is %o" % (folder, mode)
        return temps

    def broken_leaves(self):
        """{leaf name: what the next run must name} for every leaf without a matching key and certificate."""
        out = {}
        for name, folder, key_name, cert_name in self.leaves:
            key_path, cert_path = self.root / folder / key_name, self.root / folder / cert_name
            if not key_path.exists() and not cert_path.exists():
                out[name] = "not issued yet"
            elif not cert_path.exists():
                out[name] = "certificate missing"
            elif not key_path.exists():
                out[name] = "key missing"
            elif not same_key(load_key(key_path.read_bytes()), x509.load_pem_x509_certificate(cert_path.read_bytes())):
                out[name] = "key does not match certificate"
        return out

    def check_complete(self, signing_ca, bundle):
        """After a successful run: every leaf's key and certificate belong together, are signed by
        SIGNING_CA (openssl verify -x509_strict) and every CA copy is BUNDLE; no temp file is left."""
        self.check_files({}, [signing_ca], allow_temps=False, full_keys=False)
        assert not self.broken_leaves()
        certs = []
        for _name, folder, _key, cert_name in self.leaves:
            certs.append(str(self.root / folder / cert_name))
            assert (self.root / folder / "ca.crt").read_bytes() == bundle, folder
        if certs:
            ca_file = self.root.parent / "verify-ca.pem"
            ca_file.write_bytes(signing_ca.public_bytes(serialization.Encoding.PEM))
            try:
                out = subprocess.run(["openssl", "verify", "-x509_strict", "-CAfile", str(ca_file)] + certs,
                                     capture_output=True, text=True, check=False)
            finally:
                ca_file.unlink()
            assert out.returncode == 0 and out.stdout.count(": OK") == len(certs), out.stdout + out.stderr


def leaf_layout(entries, root):
    out = []
    for entry in entries:
        folder = os.path.relpath(os.path.dirname(entry["key_path"]), root)
        out.append((entry["name"], folder, os.path.basename(entry["key_path"]), os.path.basename(entry["cert_path"])))
    return out


def kill_plan(duration, count, rng, start=0.0):
    """COUNT delays spread evenly over [START, DURATION * 1.1], each with up to half a step of jitter."""
    span = max(duration * 1.1 - start, 0.05)
    step = span / count
    return [round(start + step * (index + 0.5) + rng.uniform(-step / 2, step / 2), 3) for index in range(count)]


def op_plan(total, count, rng):
    """COUNT distinct file-operation numbers spread over 1..TOTAL (all of them when COUNT >= TOTAL)."""
    if count >= total:
        return list(range(1, total + 1))
    step = total / count
    return sorted({max(1, min(total, int(step * index + rng.uniform(0, step)) + 1)) for index in range(count)})


# ---------------------------------------------------------------- one more run, in this process

def settle_leaves(args):
    """certificate_set with ARGS once more, through module_utils (what the module calls): the result."""
    defaults = {key: args[key] for key in ("force", "keep_key") if key in args}
    specs = validate_leaves(args["certificates"], defaults)
    return ensure_certificates(specs, args["ca_cert"], args["ca_key"], None, workers=2, ca_trust=args["ca_trust"])


def settle_ca(args):
    return ensure_ca(validate_ca(dict(args)))


def assert_settled(root, runs):
    """RUNS (callables returning results) change nothing and leave the tree byte-identical."""
    settled = snapshot(root)
    for run in runs:
        result = run()
        assert result["changed"] is False, result
    assert snapshot(root) == settled, "a run that changes nothing rewrote files"


# ---------------------------------------------------------------- counting kill points

# Kill points each scenario must try, and how many of them must land mid-write (Stats.done checks them):
# together at least 40 and 30 (test_at_least_forty_kill_points_in_total), whichever scenarios run, in any order.
KILL_FLOORS = {"first run": (13, 6), "renewal (force)": (9, 3), "renewal (keep_key)": (6, 3), "CA creation": (10, 6),
               "CA rotation promotion": (15, 12)}


class Stats:
    """Where the kill points of one scenario landed."""

    def __init__(self, scenario):
        self.scenario = scenario
        self.tried = self.mid = self.before = self.after = self.temps = self.detected = self.resumed = 0
        self.duration = self.seconds = 0.0
        self.operations = 0
        self.complete = set()
        self.begin = time.monotonic()
        STATS[scenario] = self

    def landed(self, killed, changed_files):
        """Mid-write: the tree changed, but not (yet) as a complete run changes it (self.complete)."""
        self.tried += 1
        changed_files = set(changed_files) - {"ca/.lock"}
        assert killed or changed_files == self.complete, "a run that was not killed left %s" % sorted(changed_files)
        if not changed_files:
            self.before += 1
        elif changed_files == self.complete:
            self.after += 1
        else:
            self.mid += 1

    def measure(self, module, args, root, work, reset):
        """One complete run (its time and the files it changes), then one counting its file operations."""
        reset()
        before = snapshot(root)
        rc, result, self.duration = run_module(module, args, work)
        assert rc == 0 and result["changed"], result["_out"]
        self.complete = changed_between(before, snapshot(root)) - {"ca/.lock"}
        reset()
        self.operations, log = count_operations(module, args, work, root)
        return result, [line.replace(str(root) + "/", "") for line in log]

    def done(self):
        self.seconds = time.monotonic() - self.begin
        print("\n" + self.line())
        tried, mid = KILL_FLOORS[self.scenario]
        assert self.tried >= tried and self.mid >= mid, "fewer than %d kill points or %d mid-write: %s" % (tried, mid, self.line())

    def line(self):
        return ("%-22s %3d kill points: %3d mid-write, %2d before the first write, %2d after the last write or exit; "
                "temp files left %2d, broken key/cert pairs detected %2d (complete run %.2f s, %d file operations; "
                "%.0f s)%s" % (self.scenario, self.tried, self.mid, self.before, self.after, self.temps,
                               self.detected, self.duration, self.operations, self.seconds,
                               "; %d resumed by promoting again" % self.resumed if self.resumed else ""))


def changed_between(before, after):
    return {rel for rel in set(before) | set(after) if before.get(rel) != after.get(rel)}


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    if STATS:
        print("\n\ncrash safety: SIGKILL kill points (timer and file operation)")
        for stats in STATS.values():
            print("  " + stats.line())
        print("  total: %d kill points, %d landed mid-write (tree changed but incomplete)\n" % (
            sum(s.tried for s in STATS.values()), sum(s.mid for s in STATS.values())))


# ---------------------------------------------------------------- leaves: first run, renewal, keep_key renewal

def copy_tree(source, target):
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, symlinks=True)
    return target


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """Base trees, made once by the real modules: a CA alone, and a CA with LEAVES RSA-2048 leaves."""
    base = tmp_path_factory.mktemp("crash-base")
    work = base / "work"
    ca_only, full = base / "ca-only", base / "full"
    ok("ca", ca_args(ca_only), work)
    ok("ca", ca_args(full), work)
    result = ok("certificate_set", set_args(full, leaf_entries(full, LEAVES, key_type="rsa", key_size=2048)), work)
    assert result["summary"]["reissued"] == LEAVES
    return {"ca-only": ca_only, "full": full}


def leaf_trial(stats, root, entries, killed_args, rerun_args, work, kill, keep_keys, must_kill=False):
    """One kill point of a certificate_set run on ROOT. KILL() kills it; True when it hit a live run."""
    before = snapshot(root)
    cas = Tree(root, []).cas()
    tree = Tree(root, leaf_layout(entries, root))
    killed = kill()
    assert killed or not must_kill, "the kill point was never reached"
    temps = tree.check_files(before, cas)
    stats.temps += len(temps)
    broken = tree.broken_leaves()
    after_kill = snapshot(root)
    if keep_keys:  # keep_key: a key is never rewritten, whatever the crash point
        for rel in (r for r in before if r.endswith(".key")):
            assert after_kill[rel][0] == before[rel][0], "a keep_key renewal changed key " + rel
    result = ok("certificate_set", rerun_args, work)
    by_name = {item["name"]: item for item in result["certificates"]}
    for name, reason in broken.items():
        wanted = ["certificate missing", "key missing"] if reason == "not issued yet" else [reason]
        assert by_name[name]["reissued"] and set(wanted) <= set(by_name[name]["reasons"]), (name, reason, by_name[name])
    for name, _folder, _key, _cert in tree.leaves:
        if name not in broken:  # a complete pair, old or new, is left alone
            assert not by_name[name]["reissued"], (name, by_name[name])
    stats.detected += sum(1 for name, reason in broken.items() if reason != "not issued yet")
    stats.landed(killed, changed_between(before, after_kill))
    assert killed or not result["changed"], "the run ended before the kill, yet the rerun had work left"
    signing = x509.load_pem_x509_certificate((root / "ca" / "ca.crt").read_bytes())
    tree.check_complete(signing, (root / "ca" / "ca.crt").read_bytes())
    assert_settled(root, [lambda: settle_leaves(rerun_args)])


def leaf_scenario(tmp_path, trees, scenario, base, killed_extra, rerun_extra, timer_kills, op_kills, events,
                  keep_keys=False):
    """TIMER_KILLS timer kills, OP_KILLS kills at file operations spread over the run, and one kill at
    each event of EVENTS ("at:OP:TEXT" or "after:OP:TEXT", see run_counted; the K-th such operation, K
    random up to the number of leaves whose files have TEXT in their names)."""
    stats = Stats(scenario)
    rng = random.Random("%s-%s" % (SEED, scenario))
    work, root = tmp_path / "work", tmp_path / "pki"
    entries = leaf_entries(root, LEAVES, key_type="rsa", key_size=2048)
    killed_args = set_args(root, entries, **killed_extra)
    rerun_args = set_args(root, entries, **rerun_extra)
    result, log = stats.measure("certificate_set", killed_args, root, work, lambda: copy_tree(trees[base], root))
    assert result["summary"]["reissued"] == LEAVES and stats.operations >= 4 * LEAVES, log
    for delay in kill_plan(stats.duration, timer_kills, rng):
        copy_tree(trees[base], root)
        leaf_trial(stats, root, entries, killed_args, rerun_args, work,
                   lambda: kill_after("certificate_set", killed_args, work, delay), keep_keys)
    specs = [str(number) for number in op_plan(stats.operations, op_kills, rng)]
    for event in events:
        most = 1 if "client" in event else LEAVES - 1
        specs.append("%s:%d" % (event, rng.randint(1, most)))
    for spec in specs:
        copy_tree(trees[base], root)
        leaf_trial(stats, root, entries, killed_args, rerun_args, work,
                   lambda: run_counted("certificate_set", killed_args, work, root, spec)[0] == -signal.SIGKILL,
                   keep_keys, must_kill=True)
    stats.done()
    assert stats.tried == timer_kills + op_kills + len(events)
    # every file-operation kill lands mid-write (no later kill point than the last operation); timers add more
    assert stats.mid >= op_kills + len(events) - 1, stats.line()
    return stats


def test_sigkill_during_first_run_of_the_leaves(tmp_path, trees):
    stats = leaf_scenario(tmp_path, trees, "first run", "ca-only", {}, {}, timer_kills=6, op_kills=2,
                          events=["at:write:server.key", "at:write:server.crt", "at:write:ca.crt",
                                  "after:replace:server.key", "after:replace:client.key"])
    assert stats.detected >= 2, "no kill left a key without its certificate: the sweep missed the writes"


def test_sigkill_during_forced_renewal_with_new_keys(tmp_path, trees):
    stats = leaf_scenario(tmp_path, trees, "renewal (force)", "full", {"force": True}, {}, timer_kills=5, op_kills=1,
                          events=["at:write:server.key", "at:write:client.crt", "after:replace:server.key"])
    assert stats.detected >= 1, "no kill left a new key beside its old certificate: the sweep missed the writes"


def test_sigkill_during_keep_key_renewal_never_touches_a_key(tmp_path, trees):
    leaf_scenario(tmp_path, trees, "renewal (keep_key)", "full", {"force": True, "keep_key": True},
                  {"keep_key": True}, timer_kills=2, op_kills=2,
                  events=["at:write:server.crt", "after:replace:server.crt"], keep_keys=True)


# ---------------------------------------------------------------- the CA: creation

def test_sigkill_during_ca_creation_never_loses_the_ca_key(tmp_path):
    """The ca module creating an RSA-2048 CA: a key that reached the disk is kept by the next run, which
    adds the missing certificate; there is never a certificate without its key."""
    stats = Stats("CA creation")
    rng = random.Random("%s-ca" % SEED)
    work, root = tmp_path / "work", tmp_path / "pki"
    args = ca_args(root, key_type="rsa", key_size=2048)
    key_path, cert_path = root / "ca" / "ca.key", root / "ca" / "ca.crt"

    def reset():
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)

    result, log = stats.measure("ca", args, root, work, reset)
    assert result["new_key"] and stats.complete == {"ca/ca.key", "ca/ca.crt"}, (result, stats.complete)

    def trial(kill):
        reset()
        killed = kill()
        tree = Tree(root, [])
        stats.temps += len(tree.check_files({}, []))
        after_kill = snapshot(root)
        kept_key = key_path.read_bytes() if key_path.exists() else None
        had_cert = cert_path.exists()
        assert not had_cert or kept_key is not None, "a CA certificate without its key"
        result = ok("ca", args, work)
        if kept_key is not None:
            assert key_path.read_bytes() == kept_key and not result["new_key"], "the rerun replaced a CA key on disk"
            if not had_cert:
                assert result["reasons"] == ["CA certificate missing"], result["reasons"]
                stats.detected += 1
        stats.landed(killed, changed_between({}, after_kill))
        assert killed or not result["changed"], "the run ended before the kill, yet the rerun had work left"
        ca = x509.load_pem_x509_certificate(cert_path.read_bytes())
        assert same_key(load_key(key_path.read_bytes()), ca) and signed_by(ca, [ca])
        tree.check_files({}, [], allow_temps=False)
        assert_settled(root, [lambda: settle_ca(args)])

    for delay in kill_plan(stats.duration, 3, rng):
        trial(lambda: kill_after("ca", args, work, delay))
    for number in op_plan(stats.operations, stats.operations, rng):
        trial(lambda: run_counted("ca", args, work, root, number)[0] == -signal.SIGKILL)
    stats.done()
    print("  CA creation file operations: " + " | ".join(log))
    assert stats.mid >= stats.operations - 2 and stats.detected >= 1, stats.line()  # not: mkdir ca, the last fsync


# ---------------------------------------------------------------- the CA: rotation promotion

ROTATION_LEAVES = 3


@pytest.fixture(scope="module")
def rotation_tree(tmp_path_factory):
    """A tree in phase reissue of a CA rotation: leaves signed by ca/next, bundles with both CAs."""
    base = tmp_path_factory.mktemp("rotation-base")
    work, root = base / "work", base / "pki"
    entries = leaf_entries(root, ROTATION_LEAVES, key_type="ecdsa")
    ok("ca", ca_args(root), work)
    ok("certificate_set", set_args(root, entries), work)
    started = ok("ca_rotation", {"ca_dir": "%s/ca" % root, "state": "started", "key_type": "ecdsa"}, work)
    assert started["phase"] == "trust", started
    reissue = ok("ca_rotation", {"ca_dir": "%s/ca" % root, "state": "reissue"}, work)
    assert reissue["signing_cert"] == "%s/ca/next/ca.crt" % root, reissue
    result = ok("certificate_set", set_args(root, entries, signing="ca/next", trust=reissue["trust_extra"]), work)
    assert result["summary"]["reissued"] == ROTATION_LEAVES
    old = (root / "ca" / "ca.key").read_bytes(), (root / "ca" / "ca.crt").read_bytes()
    new = (root / "ca" / "next" / "ca.key").read_bytes(), (root / "ca" / "next" / "ca.crt").read_bytes()
    return {"root": root, "old": old, "new": new}


def role_leaf_args(root, entries, rotation):
    signing = os.path.relpath(os.path.dirname(rotation["signing_cert"]), str(root))
    return set_args(root, entries, signing=signing, trust=rotation["trust_extra"])


def test_sigkill_during_ca_rotation_promotion_loses_no_ca_and_the_next_run_finishes_it(tmp_path, rotation_tree):
    """ca_rotation state=promoted killed at every file operation (and by timer): both CA keys survive,
    and the next run of what role pki runs first (the ca module, then ca_rotation state=current) finishes
    an interrupted promotion instead of failing on ca.key (already new) beside ca.crt (still old)."""
    stats = Stats("CA rotation promotion")
    rng = random.Random("%s-promotion" % SEED)
    work, root = tmp_path / "work", tmp_path / "pki"
    source = rotation_tree["root"]
    entries = leaf_entries(root, ROTATION_LEAVES, key_type="ecdsa")
    args = {"ca_dir": "%s/ca" % root, "state": "promoted"}
    old_key, old_cert = rotation_tree["old"]
    new_key, new_cert = rotation_tree["new"]
    known = [x509.load_pem_x509_certificate(old_cert), x509.load_pem_x509_certificate(new_cert)]
    result, log = stats.measure("ca_rotation", args, root, work, lambda: copy_tree(source, root))
    assert not result["in_progress"], result

    def trial(kill):
        copy_tree(source, root)
        before = snapshot(root)
        killed = kill()
        tree = Tree(root, leaf_layout(entries, root))
        stats.temps += len(tree.check_files(before, known))
        after_kill = snapshot(root)
        keys = {data for rel, (data, _mode) in after_kill.items() if os.path.basename(rel) == "ca.key"}
        assert new_key in keys, "the new CA key is gone"
        assert old_key in keys, "the old CA key is gone (neither current nor retired)"
        # Check mode (a --check run of the role) neither fails on the half-promoted CA nor writes.
        frozen = snapshot(root)
        ensure_ca(validate_ca(ca_args(root)), check_mode=True)
        R.rotation(R.Layout(str(root / "ca")), "current", check_mode=True)
        assert snapshot(root) == frozen, "check mode wrote"
        ok("ca", ca_args(root), work)
        rotation = ok("ca_rotation", {"ca_dir": "%s/ca" % root, "state": "current"}, work)
        if rotation["in_progress"]:
            # The promotion had not moved the CA yet (at most the old one was copied to retired/): the
            # old CA is still current, phase reissue goes on, and promoting again finishes the job.
            assert rotation["phase"] == "reissue", rotation
            assert (root / "ca" / "ca.key").read_bytes() == old_key and (root / "ca" / "ca.crt").read_bytes() == old_cert
            assert not settle_leaves(role_leaf_args(root, entries, rotation))["changed"]
            rotation = ok("ca_rotation", args, work)
            assert rotation["changed"], rotation
            stats.resumed += 1
        assert not rotation["in_progress"], rotation
        assert (root / "ca" / "ca.key").read_bytes() == new_key and (root / "ca" / "ca.crt").read_bytes() == new_cert
        assert not (root / "ca" / "next").exists() and not (root / "ca" / "rotation.json").exists()
        retired = list((root / "ca" / "retired").glob("*/ca.key"))
        assert [p.read_bytes() for p in retired] == [old_key], retired
        assert (retired[0].parent / "ca.crt").read_bytes() == old_cert
        leaves = settle_leaves(role_leaf_args(root, entries, rotation))
        assert not any(item["reissued"] for item in leaves["certificates"]), "leaves of the new CA were re-issued"
        stats.landed(killed, changed_between(before, after_kill))
        tree.check_complete(known[1], new_cert)
        layout = R.Layout(str(root / "ca"))
        assert_settled(root, [lambda: settle_ca(ca_args(root)), lambda: R.rotation(layout, "current"),
                              lambda: settle_leaves(role_leaf_args(root, entries, rotation))])

    for number in op_plan(stats.operations, stats.operations, rng):
        trial(lambda: run_counted("ca_rotation", args, work, root, number)[0] == -signal.SIGKILL)
    for delay in kill_plan(stats.duration, 2, rng, start=stats.duration * 0.5):
        trial(lambda: kill_after("ca_rotation", args, work, delay))
    stats.done()
    print("  promotion file operations: " + " | ".join(log))
    assert stats.mid >= stats.operations - 3, stats.line()  # not: mkdir retired/, mkdir retired/FP, the last fsync


# ---------------------------------------------------------------- leftover temp files

def test_the_next_run_removes_only_the_writers_own_leftover_temp_files(tmp_path):
    """Leftovers of killed writes ('.NAME.XXXXXXXX.tmp' beside a file the module writes, also those of a
    backup copy) are listed in check mode, removed by the next run (reported: changed, with a warning),
    and nothing else is touched: not other dot files, not a symlink or folder with such a name, not such a
    name beside files the module does not write, and not the real files."""
    work, root = tmp_path / "work", tmp_path / "pki"
    entries = leaf_entries(root, 2, key_type="ecdsa")
    ok("ca", ca_args(root), work)
    ok("certificate_set", set_args(root, entries), work)
    ok("ca_rotation", {"ca_dir": "%s/ca" % root, "state": "started", "key_type": "ecdsa"}, work)
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"not ours")
    plugin = "plugins/Plugin00"
    leftovers = ["%s/.server.key.abcdefgh.tmp" % plugin, "%s/.server.crt.abc_1234.tmp" % plugin,
                 "%s/.ca.crt.zzzzzzzz.tmp" % plugin, "%s/.server.key.2026-01-02@03:04:05~.k2j4h6g8.tmp" % plugin,
                 "gateway/.client.key.0a1b2c3d.tmp", "ca/.ca.key.qwertyui.tmp", "ca/.ca.crt.12345678.tmp",
                 "ca/.rotation.json.abcdefgh.tmp"]
    decoys = ["%s/.server.key.short.tmp" % plugin, "%s/.server.key.ABCDEFGH.tmp" % plugin,
              "%s/server.key.abcdefgh.tmp" % plugin, "%s/.other.key.abcdefgh.tmp" % plugin,
              "%s/.server.key.abcdefgh.tmp.bak" % plugin, "%s/.server.key.abcdefghi.tmp" % plugin,
              "plugins/.server.key.abcdefgh.tmp", "ca/next/.rotation.json.abcdefgh.tmp", "gateway/.ca.crt.abcdefgh.tmpx"]
    for rel in leftovers + decoys:
        (root / rel).write_bytes(b"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg")
        os.chmod(str(root / rel), 0o600)
    (root / plugin / ".server.crt.symlinkx.tmp").symlink_to(outside)
    (root / plugin / ".server.crt.folderxx.tmp").mkdir()
    (root / plugin / ".server.crt.folderxx.tmp" / "keep").write_bytes(b"x")
    decoys += ["%s/.server.crt.folderxx.tmp/keep" % plugin]
    real = {rel: value for rel, value in snapshot(root).items() if not os.path.basename(rel).startswith(".")}

    rotation_args = {"ca_dir": "%s/ca" % root, "state": "current"}
    check = {"_ansible_check_mode": True}
    runs = [("ca", ca_args(root)), ("ca_rotation", rotation_args), ("certificate_set", set_args(root, entries))]
    for module, args in runs:
        result = ok(module, dict(args, **check), work)
        assert result["changed"], (module, result)
        shown = json.dumps([result.get("warnings"), result.get("actions")])  # warnings: str or dict by version
        assert "would remove" in shown, (module, result)
    assert all((root / rel).exists() for rel in leftovers), "check mode removed a file"
    for module, args in runs:
        result = ok(module, args, work)
        assert result["changed"], (module, result)
        shown = json.dumps([result.get("warnings"), result.get("actions")])
        assert "removed" in shown and "temp file" in shown, (module, result)
        if module == "certificate_set":
            assert result["summary"]["reissued"] == 0, result["certificates"]
        if module == "ca":
            assert not result["key_changed"] and not result["cert_changed"], result
    assert [rel for rel in leftovers if os.path.lexists(str(root / rel))] == []
    assert [rel for rel in decoys if not (root / rel).exists()] == []
    assert (root / plugin / ".server.crt.symlinkx.tmp").is_symlink() and outside.read_bytes() == b"not ours"
    assert {rel: value for rel, value in snapshot(root).items() if not os.path.basename(rel).startswith(".")} == real
    for module, args in runs:
        assert ok(module, args, work)["changed"] is False, module


def test_at_least_forty_kill_points_in_total():
    """Every scenario checks its share when it ends (Stats.done), so the total needs no other test to have run."""
    assert sum(tried for tried, _mid in KILL_FLOORS.values()) >= 40
    assert sum(mid for _tried, mid in KILL_FLOORS.values()) >= 30
