"""The playbooks run by a non-root controller user whose inventory sets `ansible_become: true` for all hosts (in
group_vars/all, as production inventories do): every controller-side task must run as that user, never under sudo
on the controller (the user has no sudo rights there, so a task that used become would fail), and the PKI tree
must stay the user's.

The user is made on this machine (the controller) for the test; the molecule inventory, the PKI tree and the
ssh key are copied into its home, the hosts are reached over ssh with become as in every other test.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from molecule_support import PKI, REPO, recap

USER = "mcp-ctl"


@pytest.fixture(scope="module")
def controller_user():
    """USER's home with a copy of the molecule inventory (ansible_become: true in group_vars/all, pki_dir and the
    ssh key in the home), the PKI tree and the key, all owned by USER."""
    if subprocess.run(["id", USER], capture_output=True, check=False).returncode != 0:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", USER], check=True, capture_output=True)
    entry = pwd.getpwnam(USER)
    home = Path(entry.pw_dir)
    work = home / "mtls"
    shutil.rmtree(work, ignore_errors=True)
    inventory = work / "inventory"
    shutil.copytree(Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent, inventory)
    shutil.copytree(PKI, work / "certs/mcp")
    key = work / "id_ed25519"
    shutil.copy2(REPO / ".build/lab/ssh/id_ed25519", key)
    all_vars = inventory / "group_vars/all"
    data = yaml.safe_load(all_vars.read_text())
    data.update(ansible_become=True, pki_dir=str(work / "certs/mcp"))
    all_vars.write_text(yaml.safe_dump(data))
    for host_vars in (inventory / "host_vars").iterdir():
        data = yaml.safe_load(host_vars.read_text())
        data["ansible_ssh_private_key_file"] = str(key)
        host_vars.write_text(yaml.safe_dump(data))
    subprocess.run(["chown", "-R", f"{USER}:", str(work)], check=True)
    os.chmod(key, 0o600)
    return home, work, inventory / Path(os.environ["MOLECULE_INVENTORY_FILE"]).name


def run_as_user(home, *args):
    env = {
        "HOME": str(home), "USER": USER, "LOGNAME": USER, "PATH": f"{REPO / '.venv/bin'}:/usr/bin:/bin",
        "LANG": "C.UTF-8", "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_COLLECTIONS_PATH": os.environ["ANSIBLE_COLLECTIONS_PATH"],
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(home / ".ansible/cp"),
    }
    # The project's venv links to an interpreter under /root, which USER cannot run: Debian's own python3 (the same
    # 3.11) runs ansible-playbook from the venv's packages instead, and Ansible runs the controller's modules with it.
    site_packages = next((REPO / ".venv/lib").glob("python3*/site-packages"))
    env["PYTHONPATH"] = str(site_packages)
    cmd = ["runuser", "-u", USER, "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()],
           "/usr/bin/python3", str(REPO / ".venv/bin/ansible-playbook"), *args]
    return subprocess.run(cmd, cwd=str(home), capture_output=True, text=True, timeout=1200, check=False)


def test_site_as_a_non_root_controller_user_with_become_for_all(controller_user):
    home, work, inventory = controller_user
    # The user cannot sudo on the controller: become there would fail.
    denied = subprocess.run(["runuser", "-u", USER, "--", "sudo", "-n", "true"], capture_output=True, text=True, check=False)
    assert denied.returncode != 0, "the test user must not have sudo rights on the controller"
    run = run_as_user(home, "-i", str(inventory), str(REPO / "site.yml"))
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-5000:]
    hosts = recap(run.stdout)
    assert set(hosts) >= {"mcp-mol-gw", "mcp-mol-plug1", "mcp-mol-plug2"}, hosts
    assert all(h["changed"] == 0 for h in hosts.values()), hosts  # the copied tree is the deployed one
    uid = pwd.getpwnam(USER).pw_uid
    foreign = [str(p) for p in (work / "certs").rglob("*") if p.stat().st_uid != uid]
    assert foreign == [], f"files in the PKI tree not owned by {USER}: {foreign}"
