"""The built collection tarball installs and runs on its own (not from the checkout)."""

from __future__ import annotations

import subprocess
import tarfile

from integration_support import LOCALHOST, REPO, ansible_env

VENV = REPO / ".venv" / "bin"


def test_built_tarball_installs_and_runs_the_pki_role(tmp_path):
    dist = tmp_path / "dist"
    build = subprocess.run([str(VENV / "ansible-galaxy"), "collection", "build", "--output-path", str(dist), str(REPO)],
                           capture_output=True, text=True, check=False, env=ansible_env())
    assert build.returncode == 0, build.stdout + build.stderr
    tarball = next(dist.glob("mcpgateway-mtls-*.tar.gz"))
    names = tarfile.open(tarball).getnames()
    assert "plugins/modules/certificate_set.py" in names and "roles/pki/tasks/main.yml" in names
    assert not [n for n in names if n.startswith(("tests/", ".venv", ".build", "bench/", "molecule/", "lab/cache"))], \
        "build_ignore leaks development files into the artifact"
    assert not [n for n in names if n.endswith(".key")], "no key may ship in the artifact"

    # Only the installed copy is on the collections path (the checkout's ansible.cfg is not used).
    dest = tmp_path / "collections"
    empty_cfg = tmp_path / "ansible.cfg"
    empty_cfg.write_text("[defaults]\n")
    env = ansible_env(ANSIBLE_CONFIG=str(empty_cfg), ANSIBLE_COLLECTIONS_PATH=str(dest))
    install = subprocess.run([str(VENV / "ansible-galaxy"), "collection", "install", "-p", str(dest), str(tarball)],
                             capture_output=True, text=True, check=False, env=env)
    assert install.returncode == 0, install.stdout + install.stderr
    assert (dest / "ansible_collections/mcpgateway/mtls/MANIFEST.json").exists(), install.stdout

    play = tmp_path / "play.yml"
    play.write_text(
        "- hosts: localhost\n  gather_facts: false\n  roles:\n    - role: mcpgateway.mtls.pki\n"
        "      vars:\n        pki_plugins: [Installed]\n        pki_key_type: ecdsa\n"
        f"        pki_dir: {tmp_path}/certs/mcp\n"
    )
    run = subprocess.run([str(VENV / "ansible-playbook"), "-i", str(LOCALHOST), str(play)], cwd=tmp_path,
                         capture_output=True, text=True, check=False, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert str(dest) in subprocess.run([str(VENV / "ansible-doc"), "mcpgateway.mtls.certificate_set"],
                                       capture_output=True, text=True, env=env, check=False).stdout
    assert (tmp_path / "certs/mcp/plugins/Installed/server.crt").exists()
