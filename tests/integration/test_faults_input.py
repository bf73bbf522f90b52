"""Bad input: every public module option and role variable, with wrong types, out-of-range values and hostile
names, plus corrupt PEM files, wrong passphrases, a CA key that does not match its certificate, a read-only
folder and a full disk.

Every case must fail (module failure, or the play failing for that host), with a message that names the input
(the option or variable, or the file), and must leave every existing file as it was (bytes and mode; new files
may only be lock files and empty folders), and nothing may run a shell word of the input (no /tmp/pwned, and
the folder ``x`` in the working directory survives ``;rm -rf x``).

How the cases run, to keep the file fast on two cores:

* modules: each case is its own process, ``python plugins/modules/NAME.py ARGS.json`` with
  ``{"ANSIBLE_MODULE_ARGS": {...}}`` (AnsibleModule reads a file path given as its first argument) and the
  collections root on PYTHONPATH, several at a time, each in its own copy of a PKI tree made by role pki;
* role variables checked by meta/argument_specs.yml: one ansible-playbook run per role, one inventory host
  per case (validation runs per host). Roles that change a host (plugin_server, gateway, verify,
  rotate_schedule) run with --tags limited to a tag no task has: only the validation (tagged always) runs;
  pki runs in full (it only writes below pki_dir, which each case points at a folder that must stay absent);
* role preflight checks: plugin_server, gateway and rotate_schedule check per host, so one run per role
  (tasks_from: preflight, or rotate_schedule's preflight tag), one host per case; pki's checks run once per
  play, so each pki case is its own run, several at a time; likewise rotate.yml's rotate_force;
* faults of the file system: a read-only tmpfs, ``chattr +i`` and a full 64k tmpfs (root ignores mode
  bits, so chmod 0555 would prove nothing here); where they cannot be set up they skip, and with CI=true
  that skip fails the run (tests/skip_policy.py): this kind of machine can set them up.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from integration_support import COLLECTIONS, MODULES, PLAYBOOKS, PYTHON, REPO, ansible_env


ANSIBLE_PLAYBOOK = str(REPO / ".venv" / "bin" / "ansible-playbook")
ROLE_MAIN = PLAYBOOKS / "faults_role_main.yml"
ROLE_PREFLIGHT = PLAYBOOKS / "faults_role_preflight.yml"
ROTATE = REPO / "playbooks" / "rotate.yml"
REVOKE = REPO / "playbooks" / "revoke.yml"
PWNED = Path("/tmp/pwned")
SHELL = "$(touch /tmp/pwned)"
RMRF = ";rm -rf x"
LONG = "n" * 300
PASS = "right-pass"
NO_TAG = "fault_input_no_such_tag"
WORKERS = 3
COUNTS = {}  # area -> number of cases, printed at the end


# ------------------------------------------------------------------------------------------------ helpers

def snapshot(root):
    """{relative path: (kind, mode, sha256 or link)} of everything below ROOT (symlinks not followed)."""
    out = {}
    root = str(root)
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            rel = os.path.relpath(path, root)
            mode = stat.S_IMODE(info.st_mode)
            if stat.S_ISLNK(info.st_mode):
                out[rel] = ("link", mode, os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                out[rel] = ("dir", mode, None)
            else:
                with open(path, "rb") as handle:
                    out[rel] = ("file", mode, hashlib.sha256(handle.read()).hexdigest())
    return out


def tree_problems(before, after):
    """What changed: lost or altered entries, and additions other than lock files and empty folders."""
    problems = ["lost: %s" % rel for rel in sorted(set(before) - set(after))]
    problems += ["changed: %s %s -> %s" % (rel, before[rel], after[rel]) for rel in sorted(before) if rel in after
                 and after[rel] != before[rel]]
    for rel in sorted(set(after) - set(before)):
        kind = after[rel][0]
        inside = [other for other in after if other.startswith(rel + "/") and other not in before]
        if not (kind == "file" and os.path.basename(rel) == ".lock") and not (kind == "dir" and all(
                os.path.basename(o) == ".lock" or after[o][0] == "dir" for o in inside)):
            problems.append("new: %s %s" % (rel, after[rel]))
    return problems


def sentinel(workdir):
    """The folder that ';rm -rf x' would remove, in the working directory of every run."""
    (workdir / "x").mkdir(parents=True, exist_ok=True)
    (workdir / "x" / "keep").write_text("keep\n")


def pwned_state():
    try:
        info = PWNED.stat()
        return (info.st_ino, info.st_mtime_ns)
    except FileNotFoundError:
        return None


PWNED_BEFORE = pwned_state()


def assert_no_shell(workdir):
    assert pwned_state() == PWNED_BEFORE, "%s appeared or changed: a shell ran part of the input" % PWNED
    assert (workdir / "x" / "keep").is_file(), "x/keep in %s is gone: a shell ran part of the input" % workdir


def expand(value, root):
    """Replace {P} (the case's PKI tree) in every string of VALUE."""
    if isinstance(value, str):
        return value.replace("{P}", str(root))
    if isinstance(value, list):
        return [expand(item, root) for item in value]
    if isinstance(value, dict):
        return {key: expand(item, root) for key, item in value.items()}
    return value


DROP = object()


def merged(base, **changes):
    """A copy of BASE with CHANGES (DROP removes an option)."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if value is DROP:
            out.pop(key, None)
        else:
            out[key] = value
    return out


@dataclass
class Outcome:
    rc: int
    stdout: str
    stderr: str
    data: dict = None
    before: dict = None
    after: dict = None
    workdir: Path = None
    extra: dict = field(default_factory=dict)


def run_module(name, args, workdir, check=False):
    """Run module NAME as Ansible does on the controller: its file as a process, args in a JSON file."""
    args_file = workdir.parent / ("%s.args.json" % workdir.name)
    payload = dict(args, _ansible_check_mode=check)
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": payload}))
    env = dict(os.environ, PYTHONPATH=str(COLLECTIONS), LC_ALL="C.UTF-8")
    proc = subprocess.run([PYTHON, str(MODULES / ("%s.py" % name)), str(args_file)], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        data = None
    return Outcome(proc.returncode, proc.stdout, proc.stderr, data)


def run_ansible(playbook, inventory, workdir, extra_vars=None, args=()):
    """ansible-playbook with the JSON callback; returns rc, the parsed output and per-host failures."""
    cmd = [ANSIBLE_PLAYBOOK, str(playbook), "-i", str(inventory)]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    cmd += list(args)
    env = ansible_env(ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
                      ANSIBLE_DEPRECATION_WARNINGS="0")
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=600, check=False)
    outcome = Outcome(proc.returncode, proc.stdout, proc.stderr)
    try:
        outcome.data = json.loads(proc.stdout)
    except ValueError:
        outcome.data = None
    outcome.extra["hosts"] = host_results(outcome.data) if outcome.data else {}
    return outcome


def _result_text(result):
    parts = [str(result.get("msg") or "")]
    for item in result.get("results") or []:
        if isinstance(item, dict) and item.get("failed"):
            parts.append(str(item.get("msg") or ""))
    parts += [str(error) for error in result.get("argument_errors") or []]
    return "\n".join(parts)


def host_results(data):
    """{host: {'tasks': [names run before the failure], 'failed_task': name, 'text': message, 'changed': bool}}."""
    out = {}
    for play in data.get("plays", []):
        for task in play.get("tasks", []):
            name = task["task"]["name"]
            for host, result in task.get("hosts", {}).items():
                entry = out.setdefault(host, {"tasks": [], "failed_task": None, "text": "", "changed": False})
                if entry["failed_task"] is not None:
                    continue
                if result.get("skipped"):
                    continue
                entry["changed"] = entry["changed"] or bool(result.get("changed"))
                if result.get("failed") or result.get("unreachable"):
                    entry["failed_task"], entry["text"] = name, _result_text(result)
                else:
                    entry["tasks"].append(name)
    for host, stats in (data.get("stats") or {}).items():
        out.setdefault(host, {"tasks": [], "failed_task": None, "text": "", "changed": False})["stats"] = stats
    return out


def in_parallel(function, items, workers=WORKERS):
    """{key: function(item)} over ITEMS (key, item), several at a time; an exception is kept as the result."""
    def one(pair):
        key, item = pair
        try:
            return key, function(key, item)
        except Exception as exc:  # pylint: disable=broad-except
            return key, exc
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(pool.map(one, items))


def localhost_vars():
    return {"ansible_connection": "local", "ansible_python_interpreter": PYTHON}


def write_inventory(path, hosts, groups=None):
    """A YAML inventory: HOSTS {name: vars}, all local; GROUPS {group: [hosts]}."""
    tree = {"all": {"vars": localhost_vars(), "hosts": hosts}}
    if groups:
        tree["all"]["children"] = {group: {"hosts": {h: {} for h in members}} for group, members in groups.items()}
    path.write_text(yaml.safe_dump(tree, allow_unicode=True, width=1000))
    return path


def count(area, cases):
    COUNTS[area] = len(cases)
    return cases


@pytest.fixture(scope="module", autouse=True)
def _print_counts(request):
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    lines = ["bad-input cases: %d in all" % sum(COUNTS.values())] + ["  %-32s %d" % (area, n) for area, n in COUNTS.items()]
    if reporter is None or capture is None:
        print("\n".join(lines))
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)


# ------------------------------------------------------------------------------------------------ golden trees

PKI_SETTINGS = {"pki_plugins": ["Alpha"], "pki_key_type": "ecdsa"}


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    """PKI trees made by role pki (plain, and with an encrypted CA key), a foreign CA, and a work dir each."""
    base = tmp_path_factory.mktemp("faults-golden")
    inventory = base / "localhost.yml"
    write_inventory(inventory, {"localhost": {}})
    trees = {"plain": {}, "enc": {"pki_ca_passphrase": PASS}}

    def make(name, settings):
        work = base / ("work-" + name)
        sentinel(work)
        res = run_ansible(PLAYBOOKS / "pki.yml", inventory, work,
                          dict(PKI_SETTINGS, pki_dir=str(base / name / "certs/mcp"), **settings))
        assert res.rc == 0, res.stdout[-3000:] + res.stderr[-2000:]
        return base / name / "certs/mcp"

    made = in_parallel(make, list(trees.items()), workers=2)
    for value in made.values():
        if isinstance(value, Exception):
            raise value
    other = base / "other"
    other.mkdir()
    res = run_module("ca", {"key_path": str(other / "ca/ca.key"), "cert_path": str(other / "ca/ca.crt"),
                            "key_type": "ecdsa", "subject": "/CN=Foreign-CA"}, other)
    assert res.rc == 0, res.stdout + res.stderr
    made["other"] = other / "ca"
    return made


def copy_tree(golden, tree, workdir):
    """WORKDIR/certs/mcp: a copy of golden tree TREE (modes kept)."""
    target = workdir / "certs" / "mcp"
    shutil.copytree(golden[tree], target, symlinks=True)
    return target


# ------------------------------------------------------------------------------------------------ module cases

P = "{P}"
ALPHA = {
    "key_path": P + "/plugins/Alpha/server.key",
    "cert_path": P + "/plugins/Alpha/server.crt",
    "ca_copy_path": P + "/plugins/Alpha/ca.crt",
    "subject": "/CN=mcp-plugin-Alpha/O=MCPGateway/OU=Plugins",
    "sans": ["DNS:Alpha", "DNS:mcp-plugin-Alpha", "DNS:localhost"],
}
SIGNER = {"ca_cert": P + "/ca/ca.crt", "ca_key": P + "/ca/ca.key", "key_type": "ecdsa"}
BASE = {
    "ca": {"key_path": P + "/ca/ca.key", "cert_path": P + "/ca/ca.crt", "key_type": "ecdsa", "valid_days": 3650},
    "certificate": dict(SIGNER, **ALPHA),
    "certificate_set": dict(SIGNER, certificates=[dict(ALPHA, name="Alpha")]),
    "certificate_info": {"ca_cert": P + "/ca/ca.crt",
                         "certificates": [{"name": "Alpha", "cert_path": ALPHA["cert_path"], "key_path": ALPHA["key_path"]}]},
    "ca_rotation": {"ca_dir": P + "/ca", "key_type": "ecdsa"},
}


def item(**changes):
    """certificate_set options with the one item changed."""
    return merged(BASE["certificate_set"], certificates=[merged(BASE["certificate_set"]["certificates"][0], **changes)])


# Mutations of a case's tree before it runs (the snapshot is taken after them).
def truncate_ca_key(root):
    path = root / "ca/ca.key"
    path.write_bytes(path.read_bytes()[:70])


def garbage_ca_cert(root):
    (root / "ca/ca.crt").write_bytes(b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")


def cert_as_ca_key(root):
    (root / "ca/ca.key").write_bytes((root / "ca/ca.crt").read_bytes())


def foreign_ca_key(root, golden):
    (root / "ca/ca.key").write_bytes((golden["other"] / "ca.key").read_bytes())


def ca_key_is_folder(root):
    (root / "ca/ca.key").unlink()
    (root / "ca/ca.key").mkdir()


def junk_file(root):
    (root / "junk.pem").write_bytes(b"\x00\x01 garbage, not PEM at all \xff\n")


def rotation_not_json(root):
    (root / "ca/rotation.json").write_text("{not json\n")


def rotation_wrong_shape(root):
    (root / "ca/rotation.json").write_text('{"phase": "later"}\n')


@dataclass
class ModuleCase:
    id: str
    module: str
    args: dict
    needles: tuple
    setup: object = None
    tree: str = "plain"
    xfail: str = None


def mc(case_id, module, args, *needles, setup=None, tree="plain", xfail=None):
    return ModuleCase(case_id, module, args, needles, setup, tree, xfail)


CA, CERT, SET, INFO, ROT = (BASE[name] for name in ("ca", "certificate", "certificate_set", "certificate_info", "ca_rotation"))
TOO_LONG_DIR = P + "/" + "k" * 300

MODULE_CASES = count("module options", [
    # ---- ca: paths
    mc("ca-key_path-missing", "ca", merged(CA, key_path=DROP), "key_path"),
    mc("ca-key_path-folder", "ca", merged(CA, key_path=P + "/ca/"), "key_path: must be a file path", P + "/ca/"),
    mc("ca-key_path-nul", "ca", merged(CA, key_path=P + "/ca/ca\x00.key"), "key_path: must not contain a NUL"),
    mc("ca-key_path-300-chars", "ca", merged(CA, key_path=TOO_LONG_DIR + "/ca.key", cert_path=TOO_LONG_DIR + "/ca.crt"),
       "File name too long", "k" * 100),
    mc("ca-cert_path-same-as-key", "ca", merged(CA, cert_path=P + "/ca/ca.key"), "key_path and cert_path must differ"),
    # ---- ca: subject
    mc("ca-subject-no-slash", "ca", merged(CA, subject="CN=x"), "subject: must start with '/'"),
    mc("ca-subject-300-chars", "ca", merged(CA, subject="/CN=" + LONG), "subject: bad value for CN", "300"),
    mc("ca-subject-nul", "ca", merged(CA, subject="/CN=good.example\x00.evil"), "subject: control character"),
    mc("ca-subject-shell", "ca", merged(CA, subject=SHELL), "subject: must start with '/'", SHELL),
    # ---- ca: choices, numbers, owners, modes
    mc("ca-regenerate-shell", "ca", merged(CA, regenerate=RMRF), "regenerate", RMRF),
    mc("ca-key_type-choice", "ca", merged(CA, key_type="dsa"), "key_type", "dsa"),
    mc("ca-key_size-rsa-1024", "ca", merged(CA, key_type="rsa", key_size=1024), "key_size 1024 is not valid for key_type rsa"),
    mc("ca-valid_days-huge", "ca", merged(CA, valid_days=10 ** 12), "valid_days must be at most", str(10 ** 12)),
    mc("ca-owner-id-too-big", "ca", merged(CA, owner="99999999999999999999"), "owner: user id 99999999999999999999 is out of range"),
    mc("ca-owner-id-minus-one", "ca", merged(CA, owner="4294967295"), "owner: user id 4294967295 is out of range"),
    mc("ca-owner-nul", "ca", merged(CA, owner="root\x00x"), "owner: unknown user"),
    mc("ca-group-semicolon", "ca", merged(CA, group=RMRF), "group: unknown group", RMRF),
    mc("ca-key_mode-out-of-range", "ca", merged(CA, key_mode="77777"), "key_mode: invalid mode '77777'"),
    mc("ca-cert_mode-shell", "ca", merged(CA, cert_mode=SHELL), "cert_mode: invalid mode", SHELL),
    mc("ca-lock_timeout-nan", "ca", merged(CA, lock_timeout="nan"), "lock_timeout must be a number of seconds"),
    # ---- ca: the files
    mc("ca-passphrase-wrong", "ca", merged(CA, passphrase="wrong-pass"), "cannot open CA key " + P + "/ca/ca.key",
       "wrong passphrase", tree="enc"),
    mc("ca-passphrase-missing", "ca", CA, "cannot open CA key " + P + "/ca/ca.key", "no passphrase", tree="enc"),
    mc("ca-file-key-truncated", "ca", CA, "cannot open CA key " + P + "/ca/ca.key", "not a valid PEM private key",
       setup=truncate_ca_key),
    mc("ca-file-cert-garbage", "ca", CA, "CA certificate " + P + "/ca/ca.crt is unreadable", setup=garbage_ca_cert),
    mc("ca-file-cert-where-the-key-is", "ca", CA, "cannot open CA key " + P + "/ca/ca.key", setup=cert_as_ca_key),
    mc("ca-file-key-of-another-ca", "ca", CA, "CA key " + P + "/ca/ca.key does not match CA certificate", setup=foreign_ca_key),
    mc("ca-file-key-is-a-folder", "ca", CA, "cannot read CA key " + P + "/ca/ca.key", "Is a directory", setup=ca_key_is_folder),
    mc("ca-file-leaf-as-ca", "ca", merged(CA, key_path=ALPHA["key_path"], cert_path=ALPHA["cert_path"]),
       "CA certificate " + ALPHA["cert_path"] + " is not self-signed"),
    # ---- certificate: paths and names
    mc("cert-cert_path-300-chars", "certificate", merged(CERT, cert_path=P + "/plugins/Alpha/" + LONG), "File name too long", LONG),
    mc("cert-ca_copy_path-is-the-key", "certificate", merged(CERT, ca_copy_path=ALPHA["key_path"]),
       "key_path, cert_path and ca_copy_path must be different files"),
    mc("cert-ca_copy_path-nul", "certificate", merged(CERT, ca_copy_path="a\x00b"), "ca_copy_path: must not contain a NUL"),
    mc("cert-subject-nul", "certificate", merged(CERT, subject="/CN=mcp-plugin-Alpha\x00.evil"), "subject: control character"),
    mc("cert-sans-shell", "certificate", merged(CERT, sans=["DNS:" + SHELL]), "sans[0]", "is not a valid DNS name"),
    mc("cert-sans-semicolon", "certificate", merged(CERT, sans=["a" + RMRF]), "sans[0]", "is not a valid DNS name"),
    mc("cert-sans-dotdot", "certificate", merged(CERT, sans=["../x"]), "sans[0]: '../x' is not a valid DNS name"),
    mc("cert-sans-300-chars", "certificate", merged(CERT, sans=["DNS:" + LONG]), "sans[0]", "is not a valid DNS name"),
    mc("cert-sans-non-ascii", "certificate", merged(CERT, sans=["DNS:plügin.example"]), "sans[0]: 'DNS:plügin.example' is not a valid"),
    mc("cert-profile-choice", "certificate", merged(CERT, profile="both"), "profile", "both"),
    mc("cert-valid_days-huge", "certificate", merged(CERT, valid_days=4000000), "valid_days must be at most", "4000000"),
    mc("cert-owner-unknown", "certificate", merged(CERT, owner="../x"), "owner: unknown user '../x'"),
    # ---- certificate: the CA files
    mc("cert-ca_cert-missing", "certificate", merged(CERT, ca_cert=P + "/ca/nope.crt"), "CA certificate " + P + "/ca/nope.crt does not exist"),
    mc("cert-ca_cert-garbage", "certificate", merged(CERT, ca_cert=P + "/junk.pem"), "CA certificate " + P + "/junk.pem is unreadable",
       setup=junk_file),
    mc("cert-ca_cert-is-the-key", "certificate", merged(CERT, ca_cert=P + "/ca/ca.key"), "CA certificate " + P + "/ca/ca.key is unreadable"),
    mc("cert-ca_cert-not-a-ca", "certificate", merged(CERT, ca_cert=P + "/gateway/client.crt", ca_key=P + "/gateway/client.key"),
       "CA certificate " + P + "/gateway/client.crt is not a CA certificate"),
    mc("cert-ca_key-truncated", "certificate", CERT, "cannot open CA key " + P + "/ca/ca.key", setup=truncate_ca_key),
    mc("cert-ca_key-is-the-cert", "certificate", merged(CERT, ca_key=P + "/ca/ca.crt"), "cannot open CA key " + P + "/ca/ca.crt"),
    mc("cert-ca_key-of-another-ca", "certificate", CERT, "CA key " + P + "/ca/ca.key does not match CA certificate", setup=foreign_ca_key),
    mc("cert-ca_passphrase-wrong", "certificate", merged(CERT, ca_passphrase="wrong-pass"), "cannot open CA key " + P + "/ca/ca.key",
       "wrong passphrase", tree="enc"),
    mc("cert-ca_trust-missing", "certificate", merged(CERT, ca_trust=[P + "/ca/next.crt"]), "ca_trust[0]: " + P + "/ca/next.crt does not exist"),
    # ---- certificate_set
    mc("set-certificates-missing", "certificate_set", merged(SET, certificates=DROP), "certificates"),
    mc("set-certificates-string", "certificate_set", merged(SET, certificates="abc"), "certificates",
       xfail="ansible-core: a string where a list of dicts with no_log sub-options is expected fails in AnsibleModule's "
             "no_log scan with 'dictionary requested, could not parse JSON or key=value', naming no option"),
    mc("set-item-not-a-dict", "certificate_set", merged(SET, certificates=[42]), "certificates"),
    mc("set-name-dotdot", "certificate_set", item(name="../x"), "certificates[0]: name: invalid certificate name '../x'"),
    mc("set-name-slash", "certificate_set", item(name="a/b"), "certificates[0]: name: invalid certificate name 'a/b'"),
    mc("set-name-empty", "certificate_set", item(name=""), "certificates[0]: name: invalid certificate name ''"),
    mc("set-name-300-chars", "certificate_set", item(name=LONG), "certificates[0]: name:", "at most 63 characters"),
    mc("set-name-non-ascii", "certificate_set", item(name="plügin"), "certificates[0]: name: invalid certificate name 'plügin'"),
    mc("set-name-shell", "certificate_set", item(name=SHELL), "certificates[0]: name: invalid certificate name", SHELL),
    mc("set-name-semicolon", "certificate_set", item(name=RMRF), "certificates[0]: name: invalid certificate name", RMRF),
    mc("set-name-duplicate", "certificate_set",
       merged(SET, certificates=SET["certificates"] + [merged(SET["certificates"][0], key_path=P + "/b.key", cert_path=P + "/b.crt")]),
       "certificates[1].name: duplicate certificate name 'Alpha'"),
    mc("set-key_path-twice", "certificate_set",
       merged(SET, certificates=SET["certificates"] + [merged(SET["certificates"][0], name="Beta", cert_path=P + "/b.crt")]),
       "certificates[1].key_path:", "is already used by certificates[0].key_path"),
    mc("set-workers-zero", "certificate_set", merged(SET, workers=0), "workers must be >= 1, got 0"),
    mc("set-ca_key-truncated", "certificate_set", SET, "cannot open CA key " + P + "/ca/ca.key", setup=truncate_ca_key),
    mc("set-ca_passphrase-wrong", "certificate_set", merged(SET, ca_passphrase="wrong-pass"), "cannot open CA key", "wrong passphrase",
       tree="enc"),
    # ---- certificate_info (read-only: only its own options can fail it; unreadable files are reported)
    mc("info-nothing-to-report", "certificate_info", {}, "certificates, paths"),
    mc("info-renew_before_days-negative", "certificate_info", merged(INFO, renew_before_days=-1), "renew_before_days must be >= 0"),
    mc("info-paths-folder", "certificate_info", {"paths": [P + "/ca/"]}, "cert_path: must be a file path", P + "/ca/"),
    mc("info-paths-nul", "certificate_info", {"paths": [P + "/ca/ca\x00.crt"]}, "cert_path: must not contain a NUL"),
    mc("info-ca_cert-nul", "certificate_info", merged(INFO, ca_cert="\x00"), "ca_cert: must not contain a NUL"),
    # ---- ca_rotation
    mc("rot-ca_dir-nul", "ca_rotation", merged(ROT, ca_dir=P + "/c\x00a"), "ca_dir: must not contain a NUL"),
    mc("rot-ca_dir-is-a-file", "ca_rotation", merged(ROT, ca_dir=P + "/ca/ca.crt"), "ca_dir " + P + "/ca/ca.crt is not a folder"),
    mc("rot-state-shell", "ca_rotation", merged(ROT, state=SHELL), "state", SHELL),
    mc("rot-reissue-without-rotation", "ca_rotation", merged(ROT, state="reissue"), "no CA rotation is in progress in " + P + "/ca"),
    mc("rot-valid_days-negative", "ca_rotation", merged(ROT, valid_days=-1), "valid_days must be > 0, got -1"),
    mc("rot-state-file-not-json", "ca_rotation", ROT, P + "/ca/rotation.json is not valid JSON", setup=rotation_not_json),
    mc("rot-state-file-wrong-shape", "ca_rotation", ROT, P + "/ca/rotation.json must hold phase", setup=rotation_wrong_shape),
])


@pytest.fixture(scope="module")
def module_outcomes(golden, tmp_path_factory):
    """Every module case, run several at a time, each in its own copy of a tree: {case id: Outcome}."""
    base = tmp_path_factory.mktemp("faults-modules")

    def one(case_id, case):
        workdir = base / case_id
        sentinel(workdir)
        root = copy_tree(golden, case.tree, workdir)
        if case.setup is not None:
            if case.setup is foreign_ca_key:
                case.setup(root, golden)
            else:
                case.setup(root)
        before = snapshot(workdir)
        outcome = run_module(case.module, expand(case.args, root), workdir)
        outcome.before, outcome.after, outcome.workdir = before, snapshot(workdir), workdir
        outcome.extra["root"] = root
        return outcome

    return in_parallel(one, [(case.id, case) for case in MODULE_CASES], workers=4)


def assert_module_failed(outcome, needles, root):
    assert not isinstance(outcome, Exception), outcome
    assert "Traceback" not in outcome.stdout + outcome.stderr, outcome.stdout + outcome.stderr
    assert outcome.data is not None, "not a module result: %s %s" % (outcome.stdout[-2000:], outcome.stderr[-2000:])
    assert outcome.rc != 0 and outcome.data.get("failed") is True, outcome.data
    message = outcome.data.get("msg", "")
    for needle in needles:
        assert expand(needle, root) in message, "%r not in %r" % (expand(needle, root), message)
    assert tree_problems(outcome.before, outcome.after) == []
    assert_no_shell(outcome.workdir)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail else [])
                                  for c in MODULE_CASES])
def test_module_option(case, module_outcomes):
    outcome = module_outcomes[case.id]
    assert_module_failed(outcome, case.needles, outcome.extra["root"] if not isinstance(outcome, Exception) else "")


@pytest.mark.parametrize("module", sorted(BASE))
def test_module_baseline_is_a_no_op(module, golden, tmp_path):
    """The options every case starts from are valid and change nothing: a case fails because of what it changed."""
    sentinel(tmp_path)
    root = copy_tree(golden, "plain", tmp_path)
    before = snapshot(tmp_path)
    outcome = run_module(module, expand(BASE[module], root), tmp_path)
    assert outcome.rc == 0 and outcome.data and outcome.data.get("changed") is False, outcome.stdout + outcome.stderr
    assert tree_problems(before, snapshot(tmp_path)) == []


# ------------------------------------------------------------------------------------------------ role variables: types

@dataclass
class RoleCase:
    id: str
    vars: dict
    needles: tuple
    task: str = "Validating arguments against arg spec"


def rc_(case_id, variables, *needles, task="Validating arguments against arg spec"):
    return RoleCase(case_id, variables, needles, task)


PLUGIN = {"name": "Alpha", "port": 8000, "kind": "pkg.mod.Cls", "hooks": ["tool_pre_invoke"]}
GW_PLUGIN = {"name": "Alpha", "port": 8000}

ARGSPEC_CASES = {
    "pki": count("pki argument_specs", [
        rc_("pki-cert_days-str", {"pki_cert_days": "abc"}, "pki_cert_days"),
        rc_("pki-renew_before_days-list", {"pki_renew_before_days": [1]}, "pki_renew_before_days"),
        rc_("pki-ca_days-str", {"pki_ca_days": "ten years"}, "pki_ca_days"),
        rc_("pki-key_type-choice", {"pki_key_type": "dsa"}, "pki_key_type", "dsa"),
        rc_("pki-key_type-shell", {"pki_key_type": SHELL}, "pki_key_type", SHELL),
        rc_("pki-key_size-str", {"pki_key_size": "big"}, "pki_key_size"),
        rc_("pki-keep_key-not-bool", {"pki_keep_key": "maybe"}, "pki_keep_key"),
        rc_("pki-ca_rotate-not-bool", {"pki_ca_rotate": "sometimes"}, "pki_ca_rotate"),
        rc_("pki-workers-str", {"pki_workers": "many"}, "pki_workers"),
        rc_("pki-plugins-dict", {"pki_plugins": {"a": 1}}, "pki_plugins"),
        rc_("pki-clients-dict", {"pki_clients": {"a": 1}}, "pki_clients"),
    ]),
    "plugin_server": count("plugin_server argument_specs", [
        rc_("ps-plugins-str", {"plugin_server_plugins": "notalist"}, "plugin_server_plugins"),
        rc_("ps-tls_reload-not-bool", {"plugin_server_tls_reload": "sometimes"}, "plugin_server_tls_reload"),
        rc_("ps-plugins-port-str", {"plugin_server_plugins": [dict(PLUGIN, port="eighty")]}, "'port'", "plugin_server_plugins"),
        rc_("ps-plugins-name-missing", {"plugin_server_plugins": [{k: v for k, v in PLUGIN.items() if k != "name"}]},
            "name", "plugin_server_plugins"),
        rc_("ps-plugins-mode-choice", {"plugin_server_plugins": [dict(PLUGIN, mode="fast")]}, "mode", "fast", "plugin_server_plugins"),
        rc_("ps-plugins-config-str", {"plugin_server_plugins": [dict(PLUGIN, config="notadict")]}, "config", "plugin_server_plugins"),
        rc_("ps-plugins-transport-choice", {"plugin_server_plugins": [dict(PLUGIN, transport="quic")]}, "transport", "quic",
            "plugin_server_plugins"),
        rc_("ps-grpc_packages-dict", {"plugin_server_grpc_packages": {"grpcio": 1}}, "plugin_server_grpc_packages"),
        rc_("ps-enable_metrics-not-bool", {"plugin_server_enable_metrics": "maybe"}, "plugin_server_enable_metrics"),
        rc_("ps-log_level-choice", {"plugin_server_log_level": "VERBOSE"}, "plugin_server_log_level"),
        rc_("ps-env-list", {"plugin_server_env": [1, 2]}, "plugin_server_env"),
        rc_("ps-restart_sec-str", {"plugin_server_restart_sec": "soon"}, "plugin_server_restart_sec"),
        rc_("ps-health_timeout-dict", {"plugin_server_health_timeout": {"a": 1}}, "plugin_server_health_timeout"),
        rc_("ps-remove_absent-not-bool", {"plugin_server_remove_absent": "x"}, "plugin_server_remove_absent"),
        rc_("ps-remove_deferred-not-bool", {"plugin_server_remove_deferred": "x"}, "plugin_server_remove_deferred"),
        rc_("ps-tls_min_version-tls11", {"plugin_server_tls_min_version": "TLSv1.1"}, "plugin_server_tls_min_version"),
    ]),
    "gateway": count("gateway argument_specs", [
        rc_("gw-port-str", {"gateway_port": "https"}, "gateway_port"),
        rc_("gw-install-not-bool", {"gateway_install": "maybe"}, "gateway_install"),
        rc_("gw-mtls_settings_in-choice", {"gateway_mtls_settings_in": "toml"}, "gateway_mtls_settings_in"),
        rc_("gw-log_level-choice", {"gateway_log_level": "TRACE"}, "gateway_log_level"),
        rc_("gw-env_extra-list", {"gateway_env_extra": [1]}, "gateway_env_extra"),
        rc_("gw-restart_command-dict", {"gateway_restart_command": {"a": 1}}, "gateway_restart_command"),
        rc_("gw-plugins-port-str", {"gateway_plugins": [dict(GW_PLUGIN, port="x")]}, "'port'", "gateway_plugins"),
        rc_("gw-plugins-mode-choice", {"gateway_plugins": [dict(GW_PLUGIN, mode="fast")]}, "mode", "fast", "gateway_plugins"),
        rc_("gw-plugins-name-missing", {"gateway_plugins": [{"port": 8000}]}, "name", "gateway_plugins"),
        rc_("gw-plugins-transport-choice", {"gateway_plugins": [dict(GW_PLUGIN, transport="quic")]}, "transport", "quic",
            "gateway_plugins"),
        rc_("gw-https-not-bool", {"gateway_https": "maybe"}, "gateway_https"),
        rc_("gw-https_client_auth-choice", {"gateway_https_client_auth": "sometimes"}, "gateway_https_client_auth", "sometimes"),
        rc_("gw-https_tls_min_version-tls11", {"gateway_https_tls_min_version": "TLSv1.1"}, "gateway_https_tls_min_version"),
        rc_("gw-https_sans-dict", {"gateway_https_sans": {"DNS": "gw"}}, "gateway_https_sans"),
    ]),
    "verify": count("verify argument_specs", [
        rc_("verify-min_days_left-str", {"verify_min_days_left": "week"}, "verify_min_days_left"),
        rc_("verify-foreign_ca-not-bool", {"verify_foreign_ca": "maybe"}, "verify_foreign_ca"),
        rc_("verify-probe-not-bool", {"verify_probe": "x"}, "verify_probe"),
        rc_("verify-trust_check-not-bool", {"verify_trust_check": "sometimes"}, "verify_trust_check"),
        rc_("verify-handshake_counters-not-bool", {"verify_handshake_counters": "x"}, "verify_handshake_counters"),
        rc_("verify-gateway_service-not-bool", {"verify_gateway_service": "x"}, "verify_gateway_service"),
        rc_("verify-ca_key_search_exclude-dict", {"verify_ca_key_search_exclude": {"a": 1}}, "verify_ca_key_search_exclude"),
        rc_("verify-tool_call-not-bool", {"verify_tool_call": "perhaps"}, "verify_tool_call"),
        rc_("verify-tool_call_arguments-list", {"verify_tool_call_arguments": ["a"]}, "verify_tool_call_arguments"),
        rc_("verify-tool_call_expect-str", {"verify_tool_call_expect": "oh crud"}, "verify_tool_call_expect"),
        rc_("verify-frontdoor-not-bool", {"verify_frontdoor": "perhaps"}, "verify_frontdoor"),
        rc_("verify-frontdoor_client_auth-choice", {"verify_frontdoor_client_auth": "never"}, "verify_frontdoor_client_auth"),
    ]),
    "rotate_schedule": count("rotate_schedule argument_specs", [
        rc_("rs-state-choice", {"rotate_schedule_state": "maybe"}, "rotate_schedule_state"),
        rc_("rs-method-choice", {"rotate_schedule_method": "at"}, "rotate_schedule_method"),
        rc_("rs-hardening-choice", {"rotate_schedule_hardening": "paranoid"}, "rotate_schedule_hardening"),
        rc_("rs-timeout-str", {"rotate_schedule_timeout": "long"}, "rotate_schedule_timeout"),
        rc_("rs-environment-list", {"rotate_schedule_environment": [1]}, "rotate_schedule_environment"),
        rc_("rs-extra_args-dict", {"rotate_schedule_extra_args": {"a": 1}}, "rotate_schedule_extra_args"),
    ]),
}


def _batch(role, cases, base, playbook, host_vars, extra_vars=None, args=()):
    """One run of PLAYBOOK for ROLE, one inventory host per case (named after the case)."""
    workdir = base / role
    sentinel(workdir)
    hosts = {case.id: dict(host_vars(case), **case.vars) for case in cases}
    inventory = write_inventory(base / ("%s.yml" % role), hosts)
    before = snapshot(workdir)
    outcome = run_ansible(playbook, inventory, workdir, dict({"fault_role": role}, **(extra_vars or {})), args)
    outcome.before, outcome.after, outcome.workdir = before, snapshot(workdir), workdir
    return outcome


@pytest.fixture(scope="module")
def argspec_outcomes(tmp_path_factory):
    """Per role, one run through the role's main entry point with a host per case: {role: Outcome}."""
    base = tmp_path_factory.mktemp("faults-argspec")

    def one(role, cases):
        def host_vars(case):
            # pki: each host points at its own tree, which must never appear.
            return {"pki_dir": str(base / "trees" / case.id / "certs/mcp")} if role == "pki" else {}
        args = () if role == "pki" else ("--tags", NO_TAG)
        outcome = _batch(role, cases, base, ROLE_MAIN, host_vars, args=args)
        outcome.extra["trees"] = base / "trees"
        return outcome

    return in_parallel(one, list(ARGSPEC_CASES.items()))


def assert_host_failed(outcome, case, first=False):
    assert not isinstance(outcome, Exception), outcome
    assert outcome.rc != 0, outcome.stdout[-3000:]
    assert outcome.data is not None, outcome.stdout[-3000:] + outcome.stderr[-3000:]
    host = outcome.extra["hosts"].get(case.id)
    assert host is not None, "host %s not in the output: %s" % (case.id, outcome.stderr[-2000:])
    assert host["failed_task"] is not None, "no task failed for %s (ran: %s)" % (case.id, host["tasks"])
    assert case.task in host["failed_task"], (host["failed_task"], host["text"])
    for needle in case.needles:
        assert needle in host["text"], "%r not in %r" % (needle, host["text"])
    assert not host["changed"], host
    if first:
        assert host["tasks"] == [], "tasks ran before the argument validation: %s" % host["tasks"]
    assert_no_shell(outcome.workdir)
    assert tree_problems(outcome.before, outcome.after) == []


@pytest.mark.parametrize("role, case", [pytest.param(role, case, id=case.id) for role, cases in ARGSPEC_CASES.items() for case in cases])
def test_role_variable_type(role, case, argspec_outcomes):
    """A wrong type fails in the role's argument validation, its first task: before anything is written."""
    outcome = argspec_outcomes[role]
    assert_host_failed(outcome, case, first=True)
    if role == "pki":
        assert not (outcome.extra["trees"] / case.id).exists(), "pki wrote a tree for a host that failed validation"


# ------------------------------------------------------------------------------------------------ role variables: values (preflight)

def pf(case_id, variables, task, *needles):
    return RoleCase(case_id, variables, needles, task)


PS_SETTINGS = "Assert that the settings are well-formed"
PS_ENV = "Assert that plugin_server_env holds"
PS_PLUGIN = "Assert each plugin is complete"
GW_SETTINGS = "Assert that the settings are well-formed"
GW_ENV = "Assert that gateway_env_extra holds"
GW_PLUGIN_TASK = "Assert that every plugin has a valid name"
GW_FRONT = "Assert that the front door's settings are valid"


def ps_plugins(**changes):
    return {"plugin_server_plugins": [merged(PLUGIN, **changes)]}


def gw_plugins(*plugins):
    return {"gateway_plugins": list(plugins)}


PREFLIGHT_CASES = {
    "plugin_server": count("plugin_server preflight", [
        pf("ps-user-shell", {"plugin_server_user": SHELL}, PS_SETTINGS, "plugin_server_user", SHELL),
        pf("ps-group-semicolon", {"plugin_server_group": RMRF}, PS_SETTINGS, "plugin_server_group", RMRF),
        pf("ps-venv-blank", {"plugin_server_venv": "/opt/x" + RMRF}, PS_SETTINGS, "plugin_server_venv", RMRF),
        pf("ps-config_dir-etc", {"plugin_server_config_dir": "/etc"}, PS_SETTINGS, "plugin_server_config_dir", '"/etc"'),
        pf("ps-bind_host-unit-injection", {"plugin_server_bind_host": "0.0.0.0\nExecStartPre=/bin/touch /tmp/pwned"}, PS_SETTINGS,
           "plugin_server_bind_host", "ExecStartPre"),
        pf("ps-health_host-shell", {"plugin_server_health_host": SHELL}, PS_SETTINGS, "plugin_server_health_host", SHELL),
        pf("ps-cpex_version-semicolon", {"plugin_server_cpex_version": "0.1.4" + RMRF}, PS_SETTINGS, "plugin_server_cpex_version", RMRF),
        pf("ps-pip_index_url-extra-arg", {"plugin_server_pip_index_url": "https://x --trusted-host evil"}, PS_SETTINGS,
           "plugin_server_pip_index_url", "--trusted-host"),
        pf("ps-health_interval-injection", {"plugin_server_health_interval": "30s\nOnBootSec=1"}, PS_SETTINGS,
           "plugin_server_health_interval", "OnBootSec"),
        pf("ps-socket_backlog-zero", {"plugin_server_socket_backlog": 0}, PS_SETTINGS, "plugin_server_socket_backlog >= 1 (got 0)"),
        pf("ps-graceful_timeout-301", {"plugin_server_graceful_timeout": 301}, PS_SETTINGS, "plugin_server_graceful_timeout 0-300 (got 301)"),
        pf("ps-tls_ciphers-unit-injection", {"plugin_server_tls_ciphers": "ECDHE+AESGCM\nExecStartPre=/bin/touch /tmp/pwned"}, PS_SETTINGS,
           "plugin_server_tls_ciphers an OpenSSL cipher list without blanks"),
        pf("ps-tls_ciphers-no-forward-secrecy", {"plugin_server_tls_ciphers": "AES128-GCM-SHA256"}, "Assert that the TLS policy",
           "plugin_server_tls_ciphers refused", "without forward secrecy", "AES128-GCM-SHA256"),
        pf("ps-tls_ciphers-cbc", {"plugin_server_tls_ciphers": "ECDHE+AESGCM:ECDHE-ECDSA-AES128-SHA"}, "Assert that the TLS policy",
           "or an AEAD cipher: ECDHE-ECDSA-AES128-SHA"),
        pf("ps-tls_ciphers-unknown", {"plugin_server_tls_ciphers": "NO-SUCH-SUITE"}, "Assert that the TLS policy", "selects no cipher"),
        pf("ps-metrics_textfile_dir-relative", {"plugin_server_metrics_textfile_dir": "var/lib/node-exporter"},
           "Assert that the metrics folder", "plugin_server_metrics_textfile_dir must be empty or the absolute path",
           "var/lib/node-exporter"),
        pf("ps-metrics_textfile_dir-list", {"plugin_server_metrics_textfile_dir": ["/a"]},
           "Assert that the metrics folder", "plugin_server_metrics_textfile_dir must be empty"),
        pf("ps-metrics_textfile_dir-unit-injection", {"plugin_server_metrics_textfile_dir": "/var/lib/x\nExecStartPre=/bin/true"},
           "Assert that the metrics folder", "plugin_server_metrics_textfile_dir must be empty"),
        pf("ps-env-bad-name", {"plugin_server_env": {"BAD-NAME": "x"}}, PS_ENV, "plugin_server_env.BAD-NAME"),
        pf("ps-env-value-newline", {"plugin_server_env": {"A": "x\nB=evil"}}, PS_ENV, "plugin_server_env.A:"),
        pf("ps-plugin-name-dotdot", ps_plugins(name="../x"), PS_PLUGIN, "plugin ../x", "plugin_server_plugins"),
        pf("ps-plugin-name-empty", ps_plugins(name=""), PS_PLUGIN, "plugin_server_plugins needs a name"),
        pf("ps-plugin-name-300-chars", ps_plugins(name=LONG), PS_PLUGIN, "plugin " + LONG),
        pf("ps-plugin-name-non-ascii", ps_plugins(name="plügin"), PS_PLUGIN, "plugin plügin"),
        pf("ps-plugin-name-shell", ps_plugins(name=SHELL), PS_PLUGIN, "plugin " + SHELL),
        pf("ps-plugin-name-semicolon", ps_plugins(name=RMRF), PS_PLUGIN, "plugin " + RMRF),
        pf("ps-plugin-port-too-big", ps_plugins(port=70000), PS_PLUGIN, "plugin Alpha", "integer port 1-64535"),
        pf("ps-plugin-grpc-with-url", ps_plugins(transport="grpc", url="https://a:1/mcp"), "Assert each plugin's transport",
           "plugin Alpha", "A gRPC plugin has no url"),
        pf("ps-plugin-grpc-tls13", dict(ps_plugins(transport="grpc"), plugin_server_tls_min_version="TLSv1.3"),
           "Assert each plugin's transport", "plugin Alpha", "needs plugin_server_tls_min_version TLSv1.2"),
        pf("ps-plugin-grpc-no-packages", dict(ps_plugins(transport="grpc"), plugin_server_grpc_packages=[]),
           "Assert each plugin's transport", "plugin Alpha", "plugin_server_grpc_packages"),
        pf("ps-plugin-port-clash", {"plugin_server_plugins": [PLUGIN, dict(PLUGIN, name="Beta", port=9000)]}, "Assert no two plugins",
           "plugin Alpha", "also used by Beta"),
        pf("ps-pki_dir-absent", {"plugin_server_pki_dir": "/nonexistent/fault"}, "Assert the certificate tree exists",
           "/nonexistent/fault/plugins/Alpha/"),
        pf("ps-plugins-empty-would-empty-the-host", {"plugin_server_plugins": []}, "Refuse to empty the host",
           "plugin_server_plugins is empty", "plugin_server_remove_all: true"),
    ]),
    "gateway": count("gateway preflight", [
        pf("gw-user-shell", {"gateway_user": SHELL}, GW_SETTINGS, "gateway_user", SHELL),
        pf("gw-group-blank", {"gateway_group": "a b"}, GW_SETTINGS, "gateway_group", '"a b"'),
        pf("gw-config_dir-relative", {"gateway_config_dir": "etc/mcpgateway"}, GW_SETTINGS, "gateway_config_dir", '"etc/mcpgateway"'),
        pf("gw-listen_host-injection", {"gateway_listen_host": "127.0.0.1\nUser=root"}, GW_SETTINGS, "gateway_listen_host", "User=root"),
        pf("gw-port-too-big", {"gateway_port": 70000}, GW_SETTINGS, "gateway_port 1-65535 (got 70000)"),
        pf("gw-host_prefix-dotdot", {"gateway_plugin_host_prefix": "../"}, GW_SETTINGS, "gateway_plugin_host_prefix", '"../"'),
        pf("gw-version-semicolon", {"gateway_version": "1.1.0" + RMRF}, GW_SETTINGS, "gateway_version", RMRF),
        pf("gw-pip_index_url-file", {"gateway_pip_index_url": "file:///etc/passwd"}, GW_SETTINGS, "gateway_pip_index_url", "file:///etc/passwd"),
        pf("gw-shared-pip_index_url-file", {"mcp_pip_index_url": "file:///etc/shadow"}, GW_SETTINGS, "gateway_pip_index_url",
           "file:///etc/shadow"),
        pf("gw-env_extra-bad-name", {"gateway_env_extra": {"BAD KEY": "1"}}, GW_ENV, "gateway_env_extra.BAD KEY"),
        pf("gw-env_extra-value-newline", {"gateway_env_extra": {"A": "1\nPLUGINS_ENABLED=false"}}, GW_ENV, "gateway_env_extra.A:"),
        pf("gw-no-plugins", {"gateway_plugins": []}, "Assert that there is at least one plugin", "no plugins", "set gateway_plugins"),
        pf("gw-plugin-name-dotdot", gw_plugins(dict(GW_PLUGIN, name="../x")), GW_PLUGIN_TASK, "plugin ../x in gateway_plugins"),
        pf("gw-plugin-name-non-ascii", gw_plugins(dict(GW_PLUGIN, name="plügin")), GW_PLUGIN_TASK, "plugin plügin in gateway_plugins"),
        pf("gw-plugin-name-shell", gw_plugins(dict(GW_PLUGIN, name=SHELL)), GW_PLUGIN_TASK, "plugin " + SHELL + " in gateway_plugins"),
        pf("gw-plugin-host-slash", gw_plugins(dict(GW_PLUGIN, host="a/b")), GW_PLUGIN_TASK, "plugin Alpha in gateway_plugins", "https://a/b:8000"),
        pf("gw-plugin-url-http", gw_plugins({"name": "Alpha", "url": "http://x:1/mcp"}), GW_PLUGIN_TASK, "plugin Alpha", "http://x:1/mcp"),
        pf("gw-plugin-grpc-url-no-port", gw_plugins({"name": "Alpha", "transport": "grpc", "url": "https://x:1/mcp"}), GW_PLUGIN_TASK,
           "plugin Alpha", "a gRPC plugin is dialed at host:port and takes no url", "grpcs://mcp-plugin-Alpha:NO-PORT"),
        pf("gw-pki_dir-absent", {"gateway_pki_dir": "/nonexistent/fault"}, "Assert that the gateway's certificate files exist",
           "/nonexistent/fault/gateway/client.key is missing"),
        pf("gw-install-port-80", {"gateway_install": True, "gateway_port": 80}, "Assert that the settings fit together", "gateway_port must be >= 1024"),
        pf("gw-passphrase-jinja", {}, "Assert that the settings fit together", "Jinja opening brace"),
        pf("gw-restart_command-with-install", {"gateway_install": True, "gateway_restart_command": ["/bin/true"]},
           "Assert that the settings fit together", "gateway_restart_command is for a gateway this collection does not install"),
        pf("gw-https-without-install", {"gateway_https": True}, GW_FRONT, "needs gateway_install true"),
        pf("gw-https-encrypted-key-require", {"gateway_https": True, "gateway_install": True,
                                              "gateway_client_key_passphrase": "secret-pass"}, GW_FRONT,
           "the gateway's client key must not be encrypted", "gateway_https_client_auth optional"),
        pf("gw-https-ciphers-injection", {"gateway_https_tls_ciphers": "ECDHE+AESGCM\nExecStartPre=/bin/true"}, GW_FRONT,
           "gateway_https_tls_ciphers an OpenSSL cipher string"),
        pf("gw-https-sans-string", {"gateway_https_sans": "gw.example.com"}, GW_FRONT, "gateway_https_sans a list"),
        pf("gw-https-no-frontdoor-certificate", {"gateway_https": True, "gateway_install": True},
           "Assert that the gateway's certificate files exist", "/frontdoor/gw-https-no-frontdoor-certificate/server.key is missing"),
        pf("gw-loaded_record-relative", {"gateway_loaded_record": "var/x.sha256"}, "Assert that the settings fit together",
           'gateway_loaded_record must be an absolute path (got "var/x.sha256")'),
    ]),
}


@pytest.fixture(scope="module")
def preflight_outcomes(golden, tmp_path_factory):
    """plugin_server and gateway preflight, one run each, a host per case: {role: Outcome}."""
    base = tmp_path_factory.mktemp("faults-preflight")
    tree = str(golden["plain"])

    def one(role, cases):
        def host_vars(case):
            if role == "plugin_server":
                return {"plugin_server_pki_dir": tree, "plugin_server_plugins": [PLUGIN]}
            return {"gateway_pki_dir": tree, "gateway_plugins": [GW_PLUGIN]}
        workdir = base / role
        sentinel(workdir)
        hosts = {case.id: dict(host_vars(case), **case.vars) for case in cases}
        inventory = write_inventory(base / ("%s.yml" % role), hosts)
        if "gw-passphrase-jinja" in hosts:
            # A passphrase with '{{' must reach the role as it is: only YAML's !unsafe keeps Ansible from templating it.
            text = inventory.read_text().replace("gw-passphrase-jinja:\n", "gw-passphrase-jinja:\n      gateway_client_key_passphrase: !unsafe 'a{{b'\n", 1)
            inventory.write_text(text)
        before = snapshot(workdir)
        outcome = run_ansible(ROLE_PREFLIGHT, inventory, workdir, {"fault_role": role})
        outcome.before, outcome.after, outcome.workdir = before, snapshot(workdir), workdir
        return outcome

    return in_parallel(one, list(PREFLIGHT_CASES.items()))


@pytest.mark.parametrize("role, case", [pytest.param(role, case, id=case.id) for role, cases in PREFLIGHT_CASES.items() for case in cases])
def test_role_preflight_value(role, case, preflight_outcomes):
    assert_host_failed(preflight_outcomes[role], case)


def test_preflight_baseline_passes(golden, tmp_path):
    """The settings every preflight case starts from pass both preflights (so each case fails for its own value)."""
    tree = str(golden["plain"])
    sentinel(tmp_path)
    for role, host in (("plugin_server", {"plugin_server_pki_dir": tree, "plugin_server_plugins": [PLUGIN]}),
                       ("gateway", {"gateway_pki_dir": tree, "gateway_plugins": [GW_PLUGIN]})):
        inventory = write_inventory(tmp_path / ("%s.yml" % role), {"good": host})
        outcome = run_ansible(ROLE_PREFLIGHT, inventory, tmp_path, {"fault_role": role})
        assert outcome.rc == 0, outcome.stdout[-4000:]
        assert not outcome.extra["hosts"]["good"]["changed"]


# ------------------------------------------------------------------------------------------------ role pki: values, one run each

@dataclass
class PkiCase:
    id: str
    vars: dict
    task: str
    needles: tuple
    tree: str = None      # None: a fresh pki_dir (must stay absent); "plain"/"enc": a copy of that tree
    setup: object = None  # a mutation of the tree, or a file to write: (relative name, text)


PKI_CONSISTENT = "Assert that the PKI settings are consistent"
PKI_VALID = "Assert that the key size, the workers"
PKI_PLAN = "Plan the certificate tree"
PKI_CA = "Ensure the CA key and certificate"
PKI_LEAVES = "Ensure the gateway client, plugin server, front door and MCP client certificates"
PKI_CONFIG = "Read the upstream plugins config"


def pk(case_id, variables, task, *needles, tree=None, setup=None):
    return PkiCase(case_id, variables, task, needles, tree, setup)


def config_file(text):
    return ("plugins-config.yaml", text)


PKI_CASES = count("pki values", [
    pk("pki-cert_days-zero", {"pki_cert_days": 0}, PKI_CONSISTENT, "pki_cert_days must be > 0 (got 0)"),
    pk("pki-cert_days-huge", {"pki_cert_days": 10 ** 12}, PKI_CONSISTENT, "pki_cert_days must be shorter than the CA's validity"),
    pk("pki-ca_days-huge", {"pki_ca_days": 10 ** 12}, PKI_CA, "valid_days must be at most", str(10 ** 12)),
    pk("pki-ca_days-shorter-than-leaves", {"pki_ca_days": 100}, PKI_CONSISTENT,
       "pki_cert_days must be shorter than the CA's validity, pki_ca_days (got 100"),
    pk("pki-ca_days-negative", {"pki_ca_days": -1}, PKI_CONSISTENT, "pki_ca_days (got -1"),
    pk("pki-removed-group-variable", {"verify_gateway_group": "edge", "pki_plugin_hosts_group": "x"},
       "Refuse the group-name variables of earlier versions",
       "pki_plugin_hosts_group, verify_gateway_group: no longer exist", "mcp_gateways and mcp_plugin_servers"),
    pk("pki-renew-negative", {"pki_renew_before_days": -1}, PKI_CONSISTENT, "pki_renew_before_days must be >= 0", "(got -1)"),
    pk("pki-key_size-negative", {"pki_key_size": -1}, PKI_VALID, "pki_key_size (got -1)"),
    pk("pki-workers-negative", {"pki_workers": -1}, PKI_VALID, "pki_workers (got -1)"),
    pk("pki-plugins-and-config", {"pki_plugin_config": "{W}/plugins-config.yaml"}, PKI_CONSISTENT,
       "at most one of pki_plugins and pki_plugin_config"),
    pk("pki-plugin_config-absent", {"pki_plugins": [], "pki_plugin_config": "/nonexistent/fault/plugins.yaml"}, PKI_CONFIG,
       "/nonexistent/fault/plugins.yaml"),
    pk("pki-plugin_config-not-a-mapping", {"pki_plugins": [], "pki_plugin_config": "{W}/plugins-config.yaml"}, PKI_CONFIG,
       "{W}/plugins-config.yaml: expected a YAML mapping", setup=config_file("- a\n- b\n")),
    pk("pki-plugin_config-hostile-name", {"pki_plugins": [], "pki_plugin_config": "{W}/plugins-config.yaml"}, PKI_PLAN,
       "plugin name '../x' contains a path separator", setup=config_file("plugins:\n  - {name: ../x, kind: external}\n")),
    pk("pki-plugins-dotdot", {"pki_plugins": ["../x"]}, PKI_PLAN, "plugins[0]: plugin name '../x' contains a path separator"),
    pk("pki-plugins-empty", {"pki_plugins": [""]}, PKI_PLAN, "plugins[0]: the plugin name is empty"),
    pk("pki-plugins-300-chars", {"pki_plugins": [LONG]}, PKI_PLAN, "plugins[0]: plugin name '%s' is not a valid certificate name" % LONG),
    pk("pki-plugins-non-ascii", {"pki_plugins": ["plügin"]}, PKI_PLAN, "plugin name 'plügin' is not a valid certificate name"),
    pk("pki-plugins-shell", {"pki_plugins": [SHELL]}, PKI_PLAN, "plugin name '%s'" % SHELL),
    pk("pki-plugins-semicolon", {"pki_plugins": [RMRF]}, PKI_PLAN, "plugin name '%s' is not a valid certificate name" % RMRF),
    pk("pki-plugins-case-duplicate", {"pki_plugins": ["Alpha", "alpha"]}, PKI_PLAN, "plugins[1]: plugin name 'alpha' repeats plugins[0]"),
    pk("pki-plugins-sans-shell", {"pki_plugins": [{"name": "Alpha", "sans": ["DNS:" + SHELL]}]}, PKI_LEAVES,
       "certificates[1]: sans[3]", "is not a valid DNS name", tree="plain"),
    pk("pki-clients-dotdot", {"pki_clients": ["../x"]}, PKI_PLAN, "pki_clients[0]: client name '../x' must be 1-56 letters"),
    pk("pki-clients-dotted", {"pki_clients": ["ci.bot"]}, PKI_PLAN, "client name 'ci.bot' must be"),
    pk("pki-clients-case-duplicate", {"pki_clients": ["ci", "CI"]}, PKI_PLAN, "pki_clients[1]: client name 'CI' repeats pki_clients[0]"),
    pk("pki-clients-subject-shell", {"pki_clients": [{"name": "ci", "subject": SHELL}]}, PKI_PLAN,
       "pki_clients[0]: subject '%s' must be in openssl form" % SHELL),
    pk("pki-clients-unknown-key", {"pki_clients": [{"name": "ci", "sans": ["DNS:x"]}]}, PKI_PLAN, "unknown key(s) sans"),
    pk("pki-clients_ca_subject-shell", {"pki_clients_ca_subject": SHELL}, PKI_VALID, "pki_clients_ca_subject", SHELL),
    pk("pki-subject_prefix-dotdot", {"pki_plugin_subject_prefix": "../"}, PKI_VALID, "pki_plugin_subject_prefix (got \"../\")"),
    pk("pki-ca_subject-no-slash", {"pki_ca_subject": "ContextForge"}, PKI_VALID, "pki_ca_subject", "\"ContextForge\""),
    pk("pki-ca_subject-300-chars", {"pki_ca_subject": "/CN=" + LONG}, PKI_CA, "subject: bad value for CN", "/CN=" + LONG),
    pk("pki-gateway_subject-shell", {"pki_gateway_subject": SHELL}, PKI_VALID, "pki_gateway_subject", SHELL),
    pk("pki-ca_passphrase-wrong", {"pki_ca_passphrase": "wrong-pass"}, PKI_CA, "cannot open CA key {P}/ca/ca.key: wrong passphrase",
       tree="enc"),
    pk("pki-file-ca-key-truncated", {}, PKI_CA, "cannot open CA key {P}/ca/ca.key: not a valid PEM private key", tree="plain",
       setup=truncate_ca_key),
    pk("pki-file-ca-key-of-another-ca", {}, PKI_CA, "CA key {P}/ca/ca.key does not match CA certificate {P}/ca/ca.crt", tree="plain",
       setup=foreign_ca_key),
])


def _expand_w(value, workdir, root):
    if isinstance(value, str):
        return value.replace("{W}", str(workdir)).replace("{P}", str(root))
    if isinstance(value, list):
        return [_expand_w(v, workdir, root) for v in value]
    if isinstance(value, dict):
        return {k: _expand_w(v, workdir, root) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def pki_outcomes(golden, tmp_path_factory):
    """Each pki case as its own run of role pki on localhost, several at a time: {case id: Outcome}."""
    base = tmp_path_factory.mktemp("faults-pki")
    inventory = write_inventory(base / "localhost.yml", {"localhost": {}})

    def one(case_id, case):
        workdir = base / case_id
        sentinel(workdir)
        root = workdir / "certs" / "mcp"
        if case.tree:
            copy_tree(golden, case.tree, workdir)
        if isinstance(case.setup, tuple):
            (workdir / case.setup[0]).write_text(case.setup[1])
        elif case.setup is foreign_ca_key:
            case.setup(root, golden)
        elif case.setup is not None:
            case.setup(root)
        settings = dict(PKI_SETTINGS, pki_dir=str(root))
        settings.update(_expand_w(case.vars, workdir, root))
        before = snapshot(workdir)
        outcome = run_ansible(PLAYBOOKS / "pki.yml", inventory, workdir, settings)
        outcome.before, outcome.after, outcome.workdir = before, snapshot(workdir), workdir
        outcome.extra["root"] = root
        return outcome

    return in_parallel(one, [(case.id, case) for case in PKI_CASES])


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in PKI_CASES])
def test_pki_role_value(case, pki_outcomes):
    outcome = pki_outcomes[case.id]
    assert not isinstance(outcome, Exception), outcome
    expanded = RoleCase("localhost", {}, tuple(_expand_w(n, outcome.workdir, outcome.extra["root"]) for n in case.needles), case.task)
    assert_host_failed(outcome, expanded)
    if case.tree is None:
        assert not outcome.extra["root"].exists(), "role pki created %s for a bad input" % outcome.extra["root"]


# ------------------------------------------------------------------------------------------------ role verify: values

VERIFY_CASES = count("verify values", [
    pk("verify-pki_dir-absent", {"verify_pki_dir": "/nonexistent/fault/certs/mcp"}, "Assert that every check passed",
       "/nonexistent/fault/certs/mcp/ca/ca.crt"),
    pk("verify-min_days_left-negative", {"verify_min_days_left": -1}, "Assert that the verify settings are in range",
       "verify_min_days_left must be a number of days >= 0", "-1"),
    pk("verify-ca_key_search_dirs-removed", {"verify_ca_key_search_dirs": ["/etc"]}, "Refuse the removed variable verify_ca_key_search_dirs",
       "verify_ca_key_search_dirs was removed", "verify_ca_key_search_exclude"),
])


@pytest.fixture(scope="module")
def verify_outcomes(golden, tmp_path_factory):
    """Role verify's controller checks only (tag verify_pki: read-only, on the controller), one run per case."""
    base = tmp_path_factory.mktemp("faults-verify")
    inventory = write_inventory(base / "localhost.yml", {"localhost": {}})

    def one(case_id, case):
        workdir = base / case_id
        sentinel(workdir)
        settings = dict({"fault_role": "verify", "verify_pki_dir": str(golden["plain"])}, **case.vars)
        before = snapshot(workdir)
        outcome = run_ansible(ROLE_MAIN, inventory, workdir, settings, ("--tags", "verify_pki"))
        outcome.before, outcome.after, outcome.workdir = before, snapshot(workdir), workdir
        return outcome

    tree_before = snapshot(golden["plain"])
    outcomes = in_parallel(one, [(case.id, case) for case in VERIFY_CASES])
    assert snapshot(golden["plain"]) == tree_before, "role verify changed the tree it checked"
    return outcomes


@pytest.mark.parametrize("case", VERIFY_CASES, ids=[c.id for c in VERIFY_CASES])
def test_verify_role_value(case, verify_outcomes):
    assert_host_failed(verify_outcomes[case.id], RoleCase("localhost", {}, case.needles, case.task))


# ------------------------------------------------------------------------------------------------ role rotate_schedule: values

RS_VALID = "Assert that the role runs on the controller"
RS_SET = "Assert that the inventory, the playbook and the schedule"
RS_ENV = "Assert that the environment carries no inline secret"
RS_EXIST = "Assert that the inventory, the playbook and ansible-playbook exist"

RS_CASES = count("rotate_schedule preflight", [
    pf("rs-inventory-empty", {"rotate_schedule_inventory": ""}, RS_SET, "rotate_schedule_inventory is required", "(got '')"),
    pf("rs-inventory-shell", {"rotate_schedule_inventory": SHELL}, RS_SET, "rotate_schedule_inventory", SHELL),
    pf("rs-inventory-absent", {"rotate_schedule_inventory": "/nonexistent/inv" + RMRF}, RS_EXIST, "/nonexistent/inv%s is MISSING" % RMRF),
    pf("rs-ansible_playbook-not-executable", {"rotate_schedule_ansible_playbook": "/etc/passwd"}, RS_EXIST,
       "ansible-playbook /etc/passwd is MISSING or not executable"),
    pf("rs-cron_schedule-semicolon", {"rotate_schedule_cron_schedule": "0 0 * * *" + RMRF}, RS_SET, "rotate_schedule_cron_schedule", RMRF),
    pf("rs-environment-bad-name", {"rotate_schedule_environment": {"BAD-NAME": "x"}}, RS_ENV, "rotate_schedule_environment.BAD-NAME"),
    pf("rs-environment-inline-secret", {"rotate_schedule_environment": {"MY_TOKEN": "x"}}, RS_ENV, "rotate_schedule_environment.MY_TOKEN"),
    pf("rs-timeout-negative", {"rotate_schedule_timeout": -1}, RS_VALID, "rotate_schedule_timeout and rotate_schedule_random_delay >= 0"),
    pf("rs-wrapper-relative", {"rotate_schedule_wrapper": "mcp-mtls-rotate"}, RS_VALID, "must be absolute:", "mcp-mtls-rotate"),
    pf("rs-log_dir-dotdot", {"rotate_schedule_log_dir": "../log"}, RS_VALID, "must be absolute:", "../log"),
    pf("rs-read_write_paths-relative", {"rotate_schedule_read_write_paths": ["certs"]}, RS_SET, "not: certs",
       "rotate_schedule_read_write_paths"),
    pf("rs-accuracy_sec-injection", {"rotate_schedule_accuracy_sec": "1s\nExecStart=/bin/true"}, RS_VALID, "rotate_schedule_accuracy_sec",
       "ExecStart"),
    pf("rs-on_calendar-newline", {"rotate_schedule_on_calendar": "daily\nPersistent=false"}, RS_VALID, "rotate_schedule_on_calendar",
       "Persistent=false"),
    pf("rs-connection-not-local", {"ansible_connection": "ssh", "ansible_host": "127.0.0.1"}, RS_VALID, "got connection ssh"),
    pf("rs-cron_dir-absent", {"rotate_schedule_cron_dir": "/nonexistent/cron.d"}, "Assert that the cron folder exists",
       "/nonexistent/cron.d does not exist"),
])


@pytest.fixture(scope="module")
def rotate_schedule_outcome(tmp_path_factory):
    """rotate_schedule's validation and preflight only (its preflight tag), every path in a temp folder, a host per case."""
    base = tmp_path_factory.mktemp("faults-rotate-schedule")
    for sub in ("cron.d", "systemd", "sbin", "run"):
        (base / sub).mkdir()
    inv = base / "scheduled-inventory.ini"
    inv.write_text("localhost ansible_connection=local\n")

    def host_vars(case):
        return {"rotate_schedule_method": "cron", "rotate_schedule_inventory": str(inv),
                "rotate_schedule_playbook": str(REPO / "playbooks" / "check.yml"),
                "rotate_schedule_cron_dir": str(base / "cron.d"), "rotate_schedule_systemd_dir": str(base / "systemd"),
                "rotate_schedule_wrapper": str(base / "sbin/mcp-mtls-rotate"), "rotate_schedule_log_dir": str(base / "log"),
                "rotate_schedule_lock_file": str(base / "run/rotate.lock"), "rotate_schedule_read_write_paths": [str(base)]}

    outcome = _batch("rotate_schedule", RS_CASES, base, ROLE_MAIN, host_vars, args=("--tags", "rotate_schedule_preflight"))
    outcome.extra["base"] = base
    return outcome


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in RS_CASES])
def test_rotate_schedule_value(case, rotate_schedule_outcome):
    assert_host_failed(rotate_schedule_outcome, case)
    base = rotate_schedule_outcome.extra["base"]
    assert not (base / "sbin/mcp-mtls-rotate").exists() and not (base / "log").exists() and list((base / "cron.d").iterdir()) == []


# ------------------------------------------------------------------------------------------------ playbook rotate.yml: settings

ROTATE_CASES = count("rotate.yml settings", [
    ("force-unknown-word", ("rotate_force", "all")),
    ("force-wrong-case", ("rotate_force", "CA")),
    ("force-shell", ("rotate_force", SHELL)),
    ("force-semicolon", ("rotate_force", "leaves" + RMRF)),
    ("force-list", ("rotate_force", ["ca"])),
    ("force-bool", ("rotate_force", True)),
    ("batch-zero", ("rotate_batch", 0)),
    ("batch-negative", ("rotate_batch", -2)),
    ("batch-zero-percent", ("rotate_batch", "0%")),
    ("batch-over-100-percent", ("rotate_batch", "150%")),
    ("batch-fraction", ("rotate_batch", "1.5")),
    ("batch-shell", ("rotate_batch", SHELL)),
    ("max-fail-word", ("rotate_max_fail_percentage", "x")),
    ("max-fail-over-100", ("rotate_max_fail_percentage", 101)),
    ("max-fail-percent-sign", ("rotate_max_fail_percentage", "10%")),
])
ROTATE_RULES = {
    "rotate_force": "rotate_force must be '', 'leaves' or 'ca', got {}",
    "rotate_batch": "rotate_batch must be a number of hosts >= 1 or a percentage from 1% to 100%, got {}",
    "rotate_max_fail_percentage": "rotate_max_fail_percentage must be a whole number from 0 to 100, got {}",
}


@pytest.fixture(scope="module")
def rotate_outcomes(tmp_path_factory):
    base = tmp_path_factory.mktemp("faults-rotate")

    def one(case_id, case):
        setting, value = case
        workdir = base / case_id
        sentinel(workdir)
        pki_dir = workdir / "certs" / "mcp"
        inventory = write_inventory(workdir.parent / ("%s.yml" % case_id), {"g1": {"pki_dir": str(pki_dir)}},
                                    groups={"mcp_gateways": ["g1"]})
        before = snapshot(workdir)
        outcome = run_ansible(ROTATE, inventory, workdir, {setting: value})
        outcome.before, outcome.after, outcome.workdir = before, snapshot(workdir), workdir
        return outcome

    return in_parallel(one, ROTATE_CASES)


@pytest.mark.parametrize("case_id, setting, value", [pytest.param(i, setting, value, id=i) for i, (setting, value) in ROTATE_CASES])
def test_rotate_settings(case_id, setting, value, rotate_outcomes):
    """A bad rotate_force, rotate_batch or rotate_max_fail_percentage stops rotate.yml at its first task,
    named with its rule and the value given (and no other setting named): no PKI, no report, no host touched."""
    outcome = rotate_outcomes[case_id]
    case = RoleCase("g1", {}, (ROTATE_RULES[setting].format(json.dumps(value)),), "Validate the rotation settings")
    assert_host_failed(outcome, case, first=True)
    host = outcome.extra["hosts"]["g1"]
    assert all(other not in host["text"] for other in ROTATE_RULES if other != setting), host["text"]
    assert list(outcome.workdir.iterdir()) == [outcome.workdir / "x"], list(outcome.workdir.iterdir())


# ------------------------------------------------------------------------------------------------ playbook revoke.yml: input

REVOKE_CASES = count("revoke.yml input", [
    ("missing", None, "revoke must name the leaf to revoke: -e revoke=gateway, -e revoke=PLUGIN (one of: Alpha) or "
                      "-e revoke=client.NAME"),
    ("empty", "", "revoke must name the leaf to revoke"),
    ("list", ["gateway"], "revoke must name the leaf to revoke"),
    ("the-ca", "ca", "revoke=ca: the CA cannot be revoked by its own revocation list"),
    ("unknown-plugin", "NoSuch", 'revoke="NoSuch" is neither gateway, nor a plugin of the plan (Alpha), nor an MCP '
                                 "client of pki_clients ()"),
    ("shell", SHELL, "is neither gateway, nor a plugin of the plan"),
    ("path", "../gateway", 'revoke="../gateway" is neither gateway, nor a plugin of the plan'),
    ("unknown-client", "client.nobody", 'revoke="client.nobody" is neither gateway'),
    ("front-door", "frontdoor.g1", "revoke=frontdoor.g1: a front door certificate is not revoked here"),
])


@pytest.fixture(scope="module")
def revoke_outcomes(tmp_path_factory):
    base = tmp_path_factory.mktemp("faults-revoke")

    def one(case_id, case):
        value = case[0]
        workdir = base / case_id
        sentinel(workdir)
        pki_dir = workdir / "certs" / "mcp"
        inventory = write_inventory(workdir.parent / ("%s.yml" % case_id),
                                    {"g1": {"pki_dir": str(pki_dir)},
                                     "p1": {"pki_dir": str(pki_dir), "plugin_server_plugins": [{"name": "Alpha", "port": 8000}]}},
                                    groups={"mcp_gateways": ["g1"], "mcp_plugin_servers": ["p1"]})
        before = snapshot(workdir)
        outcome = run_ansible(REVOKE, inventory, workdir, {} if value is None else {"revoke": value})
        outcome.before, outcome.after, outcome.workdir = before, snapshot(workdir), workdir
        return outcome

    return in_parallel(one, [(i, (value,)) for i, value, _message in REVOKE_CASES])


@pytest.mark.parametrize("case_id, value, message", [pytest.param(*case, id=case[0]) for case in REVOKE_CASES])
def test_revoke_input(case_id, value, message, revoke_outcomes):
    """A missing, empty or unknown leaf, or the CA, stops revoke.yml at its first task, naming the input and what
    can be revoked: no PKI, no copy, no host touched."""
    outcome = revoke_outcomes[case_id]
    case = RoleCase("g1", {}, (message,), "Check what to revoke")
    assert_host_failed(outcome, case, first=True)
    assert list(outcome.workdir.iterdir()) == [outcome.workdir / "x"], list(outcome.workdir.iterdir())


# ------------------------------------------------------------------------------------------------ file system faults

def _sh(*argv):
    return subprocess.run(list(argv), capture_output=True, text=True, check=False)


@pytest.fixture
def fs_area(tmp_path):
    """Mount points and immutable folders made by a test; all undone afterwards, whatever happened."""
    mounts, immutable = [], []

    class Area:
        root = tmp_path

        @staticmethod
        def tmpfs(path, size="64k"):
            path.mkdir(parents=True, exist_ok=True)
            res = _sh("mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size, "tmpfs", str(path))
            if res.returncode != 0:
                pytest.skip("cannot mount a tmpfs here (%s): read-only and full-disk cases need it" % res.stderr.strip())
            mounts.append(path)
            return path

        @staticmethod
        def read_only(path):
            res = _sh("mount", "-o", "remount,ro", str(path))
            assert res.returncode == 0, res.stderr

        @staticmethod
        def chattr(path):
            res = _sh("chattr", "+i", str(path))
            if res.returncode != 0:
                pytest.skip("chattr +i does not work here (%s)" % res.stderr.strip())
            immutable.append(path)

    yield Area
    for path in reversed(immutable):
        _sh("chattr", "-i", str(path))
    for path in reversed(mounts):
        if _sh("umount", str(path)).returncode != 0:
            _sh("umount", "-l", str(path))


def fill(folder):
    """Write a filler file until the file system is full (unbuffered: the last short write is the full one)."""
    chunk = b"\0" * 4096
    with open(folder / "filler", "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(chunk)
        except OSError:
            pass
        try:
            while True:
                handle.write(b"\0")
        except OSError:
            pass


FORCE = {"force": True}


def _fs_module(area, golden, kind):
    """Set up fault KIND; return (module, args, needles, workdir)."""
    work = area.root / "work"
    sentinel(work)
    if kind == "ro-new-ca":
        mount = area.tmpfs(work / "m")
        area.read_only(mount)
        return "ca", merged(CA, key_path=str(mount / "ca/ca.key"), cert_path=str(mount / "ca/ca.crt")), \
            ("cannot create directory %s/ca" % mount, "Read-only file system"), work
    if kind == "ro-existing-tree":
        mount = area.tmpfs(work / "m", "1m")
        root = copy_tree(golden, "plain", mount)
        area.read_only(mount)
        return "certificate", expand(merged(CERT, **FORCE), root), \
            ("cannot open lock file %s/ca/.lock" % root, "Read-only file system"), work
    root = copy_tree(golden, "plain", work)
    if kind == "immutable-leaf-folder":
        area.chattr(root / "plugins/Alpha")
        return "certificate", expand(merged(CERT, **FORCE), root), \
            ("cannot write %s/plugins/Alpha/server.key" % root, "Operation not permitted"), work
    if kind == "immutable-ca-folder":
        area.chattr(root / "ca")
        return "ca", expand(merged(CA, subject="/CN=Renamed-CA"), root), \
            ("cannot write %s/ca/ca.crt" % root, "Operation not permitted"), work
    raise AssertionError(kind)


def _fs_full(area, golden, kind):
    work = area.root / "work"
    sentinel(work)
    mount = area.tmpfs(work / "m", "64k")
    if kind == "full-new-ca":
        fill(mount)
        return "ca", merged(CA, key_path=str(mount / "ca/ca.key"), cert_path=str(mount / "ca/ca.crt")), \
            ("cannot write %s/ca/ca.key" % mount, "No space left on device"), work
    root = copy_tree(golden, "plain", mount)
    fill(mount)
    return "certificate", expand(merged(CERT, **FORCE), root), \
        ("cannot write %s/plugins/Alpha/server.key" % root, "No space left on device"), work


FS_MODULE_CASES = ["ro-new-ca", "ro-existing-tree", "immutable-leaf-folder", "immutable-ca-folder", "full-new-ca", "full-existing-tree"]
FS_ROLE_CASES = ["role-ro-tree", "role-immutable-leaf-folders", "role-full-disk"]
count("file system faults", FS_MODULE_CASES + FS_ROLE_CASES)


@pytest.mark.parametrize("kind", FS_MODULE_CASES)
def test_module_file_system_fault(kind, fs_area, golden):
    setup = _fs_full if kind.startswith("full-") else _fs_module
    module, args, needles, work = setup(fs_area, golden, kind)
    before = snapshot(work)
    outcome = run_module(module, args, work)
    outcome.before, outcome.after, outcome.workdir = before, snapshot(work), work
    assert_module_failed(outcome, needles, "")


@pytest.mark.parametrize("kind", FS_ROLE_CASES)
def test_pki_role_file_system_fault(kind, fs_area, golden):
    """Role pki with pki_force_renew on a tree it cannot write: the play fails naming the file, the tree stays."""
    work = fs_area.root / "work"
    sentinel(work)
    if kind == "role-immutable-leaf-folders":
        # Both leaf folders: with one of them writable, that leaf would (rightly) be renewed.
        root = copy_tree(golden, "plain", work)
        fs_area.chattr(root / "plugins/Alpha")
        fs_area.chattr(root / "gateway")
        task, needles = PKI_LEAVES, ("cannot write %s/" % root, "Operation not permitted")
    else:
        mount = fs_area.tmpfs(work / "m", "1m" if kind == "role-ro-tree" else "64k")
        root = copy_tree(golden, "plain", mount)
        if kind == "role-ro-tree":
            fs_area.read_only(mount)
            task, needles = PKI_CA, ("cannot open lock file %s/ca/.lock" % root, "Read-only file system")
        else:
            fill(mount)
            task, needles = PKI_LEAVES, ("cannot write %s/" % root, "No space left on device")
    inventory = write_inventory(fs_area.root / "localhost.yml", {"localhost": {}})
    before = snapshot(work)
    outcome = run_ansible(PLAYBOOKS / "pki.yml", inventory, work, dict(PKI_SETTINGS, pki_dir=str(root), pki_force_renew=True))
    outcome.before, outcome.after, outcome.workdir = before, snapshot(work), work
    assert_host_failed(outcome, RoleCase("localhost", {}, needles, task))
