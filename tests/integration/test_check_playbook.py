"""playbooks/check.yml: the upstream certs-mcp-check report, its exit status and its Prometheus textfile."""

from __future__ import annotations

import re
import time

from integration_support import PLAYBOOKS, REPO, run_playbook

CHECK = REPO / "playbooks" / "check.yml"


def make_tree(tmp_path, days):
    settings = {"pki_dir": str(tmp_path / "certs/mcp"), "pki_plugins": ["One", "Two"], "pki_key_type": "ecdsa",
                "pki_cert_days": days, "pki_ca_days": days + 1, "pki_renew_before_days": 1}
    res = run_playbook(PLAYBOOKS / "pki.yml", settings)
    assert res.rc == 0, res.out


def test_report_passes_and_writes_textfile(tmp_path):
    make_tree(tmp_path, 400)
    prom = tmp_path / "mcp_mtls.prom"
    res = run_playbook(CHECK, {"pki_dir": str(tmp_path / "certs/mcp"), "check_threshold_days": 30, "check_textfile": str(prom)})
    assert res.rc == 0, res.out
    for label in ("CA Certificate", "Gateway Client Certificate", "Plugin One", "Plugin Two"):
        assert re.search(label + r": expires .* \((399|400|401) days left\) \[ok\]", res.out), res.out
    text = prom.read_text()
    stamps = [float(x) for x in re.findall(r'^mcp_mtls_certificate_expiry_timestamp_seconds\{name="[^"]+",path="[^"]+"\} (\S+)$', text, re.M)]
    assert len(stamps) == 4
    assert all(abs(s - (time.time() + 400 * 86400)) < 2 * 86400 for s in stamps)
    assert text.count("mcp_mtls_certificate_ok{") == 4 and " 0\n" not in text


def test_expiring_within_threshold_exits_nonzero(tmp_path):
    make_tree(tmp_path, 20)
    res = run_playbook(CHECK, {"pki_dir": str(tmp_path / "certs/mcp"), "check_threshold_days": 30})
    assert res.rc != 0
    assert "[expiring]" in res.out and "Certificates needing attention: ca, gateway, One, Two" in res.out, res.out


def test_missing_certificate_fails_the_check(tmp_path):
    make_tree(tmp_path, 400)
    (tmp_path / "certs/mcp/plugins/Two/server.crt").unlink()
    res = run_playbook(CHECK, {"pki_dir": str(tmp_path / "certs/mcp")})
    assert res.rc != 0 and "Two" in res.out and "MISSING" in res.out, res.out


def test_default_threshold_is_half_the_renewal_window(tmp_path):
    """Certificates with 20 days left are inside the renewal window (30 days: the scheduled rotation renews
    them) but not yet an alert; with a 50-day window the default threshold is 25 days and they are."""
    make_tree(tmp_path, 20)
    inside_window = run_playbook(CHECK, {"pki_dir": str(tmp_path / "certs/mcp")})
    assert inside_window.rc == 0 and "threshold 15 days" in inside_window.out, inside_window.out
    wider = run_playbook(CHECK, {"pki_dir": str(tmp_path / "certs/mcp"), "pki_renew_before_days": 50})
    assert wider.rc != 0 and "[expiring]" in wider.out and "threshold 25 days" in wider.out, wider.out


def _resign_crl(tmp_path, next_update_days, last_update_days):
    """Replace the tree's CRL by one the CA signed with these dates (relative to now)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    root = tmp_path / "certs/mcp/ca"
    key = serialization.load_pem_private_key((root / "ca.key").read_bytes(), None)
    ca = x509.load_pem_x509_certificate((root / "ca.crt").read_bytes())
    now = datetime.datetime.now(datetime.timezone.utc)
    crl = (x509.CertificateRevocationListBuilder().issuer_name(ca.subject)
           .last_update(now + datetime.timedelta(days=last_update_days))
           .next_update(now + datetime.timedelta(days=next_update_days))
           .add_extension(x509.CRLNumber(9), critical=False).sign(key, hashes.SHA256()))
    (root / "ca.crl").write_bytes(crl.public_bytes(serialization.Encoding.PEM))


def test_the_revocation_list_is_reported_and_alerts_before_it_lapses(tmp_path):
    make_tree(tmp_path, 400)
    prom = tmp_path / "mcp_mtls.prom"
    pki_dir = str(tmp_path / "certs/mcp")
    res = run_playbook(CHECK, {"pki_dir": pki_dir, "check_threshold_days": 30, "check_textfile": str(prom)})
    assert res.rc == 0, res.out
    assert re.search(r"Revocation list: next update \S+ \((59|60) days left\), 0 revoked \[ok\]", res.out), res.out
    assert re.search(r'^mcp_mtls_crl_ok\{path="[^"]+"\} 1$', prom.read_text(), re.M)
    # Within the threshold (half of pki_crl_renew_before_days, 15): the run fails, naming it.
    _resign_crl(tmp_path, 10, -1)
    res = run_playbook(CHECK, {"pki_dir": pki_dir, "check_threshold_days": 30, "check_textfile": str(prom)})
    said = " ".join(res.out.split())
    assert res.rc != 0 and "revocation list" in said and "is expiring" in said, said[-2000:]
    assert re.search(r'^mcp_mtls_crl_ok\{path="[^"]+"\} 0$', prom.read_text(), re.M)
    _resign_crl(tmp_path, -1, -3)
    res = run_playbook(CHECK, {"pki_dir": pki_dir, "check_threshold_days": 30})
    said = " ".join(res.out.split())
    assert res.rc != 0 and "is expired" in said and "refuse every certificate" in said, said[-2000:]
    (tmp_path / "certs/mcp/ca/ca.crl").unlink()
    res = run_playbook(CHECK, {"pki_dir": pki_dir, "check_threshold_days": 30})
    assert res.rc != 0 and "is missing" in " ".join(res.out.split()), res.out[-2000:]
