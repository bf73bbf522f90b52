"""Concurrency: several real runs against one PKI tree at once make one CA and never interleave files.

The module runs are real processes (``python plugins/modules/NAME.py ARGS.json``, as Ansible runs a
module); the role runs are real ``ansible-playbook`` runs. To make the runs meet for certain, the test
holds the run lock ``ca/.lock`` itself while they start, waits until every run has opened the lock
file (it is then waiting for it, /proc/PID/fd shows), checks that nothing was written meanwhile, and
lets go: from then on they compete for the lock only with each other.

After that: exactly one CA (one key; every run reports the same CA), every leaf signed by it
(``openssl verify -x509_strict``), every key beside its own certificate, no temp file; the runs that
came second found the work done. A run that waits longer than ``lock_timeout`` fails with a message
naming the lock, having written nothing.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from integration_support import COLLECTIONS, MODULES, PLAYBOOKS, PYTHON, ca_args, leaf_entries, run_playbook, set_args
from ansible_collections.mcpgateway.mtls.plugins.module_utils import _io


pytestmark = pytest.mark.slow


# ---------------------------------------------------------------- running modules

def module_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(COLLECTIONS) + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def start_module(module, args, work, check_mode=False):
    work.mkdir(parents=True, exist_ok=True)
    path = work / ("%s.%d.json" % (module, time.monotonic_ns()))
    if check_mode:
        args = dict(args, _ansible_check_mode=True)
    path.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    return subprocess.Popen([PYTHON, str(MODULES / (module + ".py")), str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=module_env())


def finish(proc, timeout=120):
    """(rc, result dict with '_out', seconds since start is not known here)."""
    out, _err = proc.communicate(timeout=timeout)
    start = out.find("{")
    try:
        result = json.loads(out[start:]) if start >= 0 else {}
    except ValueError:
        result = {}
    result["_out"] = out
    return proc.returncode, result


def run_module(module, args, work, timeout=120):
    return finish(start_module(module, args, work), timeout)


def ok(module, args, work):
    rc, result = run_module(module, args, work)
    assert rc == 0 and not result.get("failed"), result["_out"]
    return result


# ---------------------------------------------------------------- the lock

def lock_openers(lock_path):
    """PIDs of other processes that have LOCK_PATH open (a run waiting for, or holding, the lock)."""
    lock_path = os.path.realpath(str(lock_path))
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        folder = "/proc/%s/fd" % entry
        try:
            for fd in os.listdir(folder):
                if os.readlink(os.path.join(folder, fd)) == lock_path:
                    pids.add(int(entry))
                    break
        except OSError:
            continue
    return pids


def wait_for_waiters(lock_path, count, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = lock_openers(lock_path)
        if len(pids) >= count:
            return pids
        time.sleep(0.05)
    raise AssertionError("only %d of %d runs reached the lock %s" % (len(lock_openers(lock_path)), count, lock_path))


class HeldLock:
    """The run lock of FOLDER, held by this test process (as another run would hold it)."""

    def __init__(self, folder):
        os.makedirs(str(folder), mode=0o700, exist_ok=True)
        self.path = Path(folder) / _io.LOCK_NAME
        self.lock = _io.RunLock(str(folder), timeout=5).acquire()

    def release(self):
        self.lock.release()


def run_while_locked(root, work, runs):
    """Start RUNS ((module, args) pairs) while this test holds ROOT/ca's lock: each must be seen waiting
    for it and nothing may be written meanwhile; then let go and return each run's (rc, result)."""
    before = snapshot(root)
    held = HeldLock(root / "ca")
    try:
        procs = [start_module(module, args, work) for module, args in runs]
        assert wait_for_waiters(held.path, len(procs)) == {proc.pid for proc in procs}
        time.sleep(0.3)
        assert snapshot(root) == before, "a run wrote while another held the lock"
    finally:
        held.release()
    return [finish(proc) for proc in procs]


# ---------------------------------------------------------------- the tree

def snapshot(root):
    out = {}
    for folder, _dirs, files in os.walk(str(root)):
        for name in files:
            path = os.path.join(folder, name)
            out[os.path.relpath(path, str(root))] = (Path(path).read_bytes(), stat.S_IMODE(os.lstat(path).st_mode))
    return out


def public(key_or_cert):
    return key_or_cert.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)


def check_tree(root, entries, ca_dir="ca", bundle=None):
    """One CA in ROOT/CA_DIR, its key beside it; every leaf's key matches its certificate, which the CA
    signed (openssl verify -x509_strict); every CA copy is BUNDLE (default: the CA certificate); modes;
    no temp file. Returns the CA certificate."""
    root = Path(root)
    files = snapshot(root)
    for rel, (data, mode) in files.items():
        name = os.path.basename(rel)
        assert not (name.startswith(".") and name != ".lock"), "temp or stray file " + rel
        if name.endswith(".key"):
            assert mode == 0o600, rel
            serialization.load_pem_private_key(data, None)  # complete, consistent key
        elif name != ".lock":
            assert mode == 0o644, rel
    ca_pem = (root / ca_dir / "ca.crt").read_bytes()
    ca = x509.load_pem_x509_certificate(ca_pem)
    assert public(serialization.load_pem_private_key((root / ca_dir / "ca.key").read_bytes(), None)) == public(ca)
    certs = []
    for entry in entries:
        key = serialization.load_pem_private_key(Path(entry["key_path"]).read_bytes(), None)
        cert = x509.load_pem_x509_certificate(Path(entry["cert_path"]).read_bytes())
        assert public(key) == public(cert), "%s: the key is not the certificate's" % entry["name"]
        assert Path(entry["ca_copy_path"]).read_bytes() == (bundle or ca_pem), entry["ca_copy_path"]
        certs.append(entry["cert_path"])
    out = subprocess.run(["openssl", "verify", "-x509_strict", "-CAfile", str(root / ca_dir / "ca.crt")] + certs,
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.count(": OK") == len(certs), out.stdout + out.stderr
    return ca


def in_threads(jobs):
    """Run the callables JOBS at once in threads; their results, in order (an exception is re-raised)."""
    results = [None] * len(jobs)
    errors = []

    def run(index, job):
        try:
            results[index] = job()
        except BaseException as exc:  # noqa: B902 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(index, job)) for index, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(900)
    if errors:
        raise errors[0]
    return results


# ---------------------------------------------------------------- module runs

LEAVES = 8


def test_four_concurrent_ca_and_certificate_set_runs_make_one_ca_and_issue_each_leaf_once(tmp_path):
    """Four runs of what role pki does (the ca module, then certificate_set) on an empty tree, at once."""
    root, work = tmp_path / "pki", tmp_path / "work"
    entries = leaf_entries(root, LEAVES, key_type="rsa", key_size=2048)
    held = HeldLock(root / "ca")
    chains = 4

    def chain():
        rc, made = run_module("ca", ca_args(root, key_type="rsa", key_size=2048), work)
        assert rc == 0, made["_out"]
        rc, leaves = run_module("certificate_set", set_args(root, entries), work)
        assert rc == 0, leaves["_out"]
        return made, leaves

    results = []
    runner = threading.Thread(target=lambda: results.extend(in_threads([chain] * chains)))
    runner.start()
    try:
        wait_for_waiters(held.path, chains)
        time.sleep(0.3)
        assert set(snapshot(root)) == {"ca/.lock"}, "a run wrote while another held the lock"
    finally:
        held.release()
    runner.join(600)
    assert len(results) == chains
    made = [ca for ca, _leaves in results]
    issued = [leaves["summary"]["reissued"] for _ca, leaves in results]
    assert sorted(ca["new_key"] for ca in made) == [False] * (chains - 1) + [True], made
    assert len({ca["fingerprint_sha256"] for ca in made}) == 1, "the runs saw different CAs"
    assert sorted(issued) == [0] * (chains - 1) + [LEAVES], issued
    assert sum(1 for _ca, leaves in results if leaves["changed"]) == 1
    ca = check_tree(root, entries)
    assert ca.fingerprint(ca.signature_hash_algorithm).hex(":").upper() == made[0]["fingerprint_sha256"]


def test_runs_that_wait_longer_than_lock_timeout_fail_naming_the_lock_and_write_nothing(tmp_path):
    root, work = tmp_path / "pki", tmp_path / "work"
    ok("ca", ca_args(root), work)
    entries = leaf_entries(root, 2, key_type="ecdsa")
    ok("certificate_set", set_args(root, entries), work)
    before = snapshot(root)
    held = HeldLock(root / "ca")
    lock = str(root / "ca" / ".lock")
    try:
        begin = time.monotonic()
        procs = [
            start_module("ca", ca_args(root, regenerate="always", lock_timeout=1), work),
            start_module("certificate_set", set_args(root, entries, force=True, lock_timeout=1), work),
            start_module("certificate", dict({k: v for k, v in entries[1].items() if k != "name"}, force=True,
                                             ca_cert="%s/ca/ca.crt" % root, ca_key="%s/ca/ca.key" % root,
                                             lock_timeout=1), work),
            start_module("ca_rotation", {"ca_dir": "%s/ca" % root, "state": "started", "lock_timeout": 1}, work),
        ]
        outcomes = [finish(proc, timeout=20) for proc in procs]
        elapsed = time.monotonic() - begin
    finally:
        held.release()
    for rc, result in outcomes:
        assert rc != 0 and result.get("failed"), result["_out"]
        assert "timed out after 1 s waiting for the lock %s" % lock in result["msg"], result["msg"]
    assert elapsed < 30, "the runs did not give up after lock_timeout"
    assert snapshot(root) == before, "a run that could not get the lock wrote something"


def test_ca_rotation_current_honours_lock_timeout(tmp_path):
    root, work = tmp_path / "pki", tmp_path / "work"
    ok("ca", ca_args(root), work)
    held = HeldLock(root / "ca")
    try:
        proc = start_module("ca_rotation", {"ca_dir": "%s/ca" % root, "state": "current", "lock_timeout": 1}, work)
        try:
            rc, result = finish(proc, timeout=8)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise AssertionError("ca_rotation state=current waited past lock_timeout=1") from None
    finally:
        held.release()
    assert rc != 0 and "waiting for the lock %s/ca/.lock" % root in result["msg"], result["_out"]


def test_three_concurrent_rotation_starts_make_exactly_one_new_ca(tmp_path):
    root, work = tmp_path / "pki", tmp_path / "work"
    ok("ca", ca_args(root), work)
    entries = leaf_entries(root, 2, key_type="ecdsa")
    ok("certificate_set", set_args(root, entries), work)
    current = snapshot(root)
    args = {"ca_dir": "%s/ca" % root, "state": "started", "key_type": "rsa", "key_size": 2048}
    outcomes = run_while_locked(root, work, [("ca_rotation", args)] * 3)
    for rc, result in outcomes:
        assert rc == 0, result["_out"]
    results = [result for _rc, result in outcomes]
    created = [r for r in results if r["changed"]]
    assert len(created) == 1, [r["actions"] for r in results]
    assert "new key" in created[0]["actions"][0], created[0]["actions"]
    assert {r["new_fingerprint"] for r in results} == {created[0]["new_fingerprint"]}
    assert {r["phase"] for r in results} == {"trust"}
    ca_dir = root / "ca"
    assert sorted(os.listdir(str(ca_dir / "next"))) == [".lock", "ca.crt", "ca.key"]
    new = x509.load_pem_x509_certificate((ca_dir / "next" / "ca.crt").read_bytes())
    assert public(serialization.load_pem_private_key((ca_dir / "next" / "ca.key").read_bytes(), None)) == public(new)
    state = json.loads((ca_dir / "rotation.json").read_text())
    assert state["new"] == new.fingerprint(new.signature_hash_algorithm).hex(":").upper() == created[0]["new_fingerprint"]
    for rel in ("ca/ca.key", "ca/ca.crt"):
        assert snapshot(root)[rel] == current[rel], rel + " changed"


def test_runs_in_two_phases_of_a_ca_rotation_never_pair_a_key_with_another_runs_certificate(tmp_path):
    """A run in phase trust (signing with ca/) and one in phase reissue (signing with ca/next/), both
    re-issuing every leaf at once, as when a run of site.yml meets rotate.yml's reissue stage: they
    must take the same lock, ca/.lock, so every leaf ends up as one run's key and certificate. Both
    start while the test holds ca/.lock and must be seen waiting for it before it is let go."""
    root, work = tmp_path / "pki", tmp_path / "work"
    entries = leaf_entries(root, 12, key_type="rsa", key_size=2048)
    ok("ca", ca_args(root), work)
    ok("certificate_set", set_args(root, entries, key_type="ecdsa"), work)
    ok("ca_rotation", {"ca_dir": "%s/ca" % root, "state": "started", "key_type": "ecdsa"}, work)
    trust = set_args(root, entries, signing="ca", trust=["%s/ca/next/ca.crt" % root], force=True)
    reissue = set_args(root, entries, signing="ca/next", trust=["%s/ca/ca.crt" % root], force=True)
    outcomes = run_while_locked(root, work, [("certificate_set", trust), ("certificate_set", reissue)])
    for rc, result in outcomes:
        assert rc == 0, result["_out"]
    signers = set()
    for entry in entries:
        key = serialization.load_pem_private_key(Path(entry["key_path"]).read_bytes(), None)
        cert = x509.load_pem_x509_certificate(Path(entry["cert_path"]).read_bytes())
        assert public(key) == public(cert), "%s: a key beside another run's certificate" % entry["name"]
        signers.add(cert.issuer.rfc4514_string() + cert.extensions.get_extension_for_class(
            x509.AuthorityKeyIdentifier).value.key_identifier.hex())
    assert len(signers) == 1, "leaves signed by both CAs: the runs interleaved"


# ---------------------------------------------------------------- role runs

def test_two_concurrent_playbook_runs_of_the_pki_role_make_one_ca(tmp_path):
    root = tmp_path / "certs" / "mcp"
    plugins = ["PluginA", "PluginB", "PluginC"]
    extra = {"pki_dir": str(root), "pki_plugins": plugins, "pki_key_type": "ecdsa"}
    held = HeldLock(root / "ca")
    runs = []
    runner = threading.Thread(target=lambda: runs.extend(in_threads([lambda: run_playbook(PLAYBOOKS / "pki.yml", extra)] * 2)))
    runner.start()
    try:
        wait_for_waiters(held.path, 2, timeout=180)
        time.sleep(0.3)
        assert set(snapshot(root)) == {"ca/.lock"}, "a run wrote while another held the lock"
    finally:
        held.release()
    runner.join(900)
    assert len(runs) == 2
    for run in runs:
        assert run.rc == 0, run.out
    # one run created the CA, its revocation list and the leaves (or they split them); the other found it all done
    assert sum(run.changed() for run in runs) == 3, [run.out for run in runs]
    entries = leaf_entries(root, 1)
    entries += [{"name": name, "key_path": "%s/plugins/%s/server.key" % (root, name),
                 "cert_path": "%s/plugins/%s/server.crt" % (root, name),
                 "ca_copy_path": "%s/plugins/%s/ca.crt" % (root, name)} for name in plugins]
    check_tree(root, entries)
    assert sorted(os.listdir(str(root / "plugins"))) == plugins
