# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection.
# Breaking changes can occur at any time.

"""CA rotation with overlapping trust, as a small state machine kept in the CA folder.

    ca/ca.key, ca/ca.crt     the current CA (signs the leaves until the new CA takes over)
    ca/next/ca.{key,crt}     the incoming CA, from the start of a rotation until its promotion
    ca/rotation.json         {"phase": "trust"|"reissue", "old": FP, "new": FP, "started": ISO}
    ca/retired/FP16/         the old CA after promotion (kept: nothing is deleted by surprise)

Phases: "trust" (every host trusts old + new; leaves still signed by the old CA), "reissue" (leaves
signed by the new CA; hosts still trust both), then promotion: the new CA becomes ca/ca.*, the old
one moves to retired/, and trust bundles hold the new CA only. The playbook moves the phase on only
after a successful rollout of the phase before, so a failed or interrupted run resumes where it
stopped. Promotion is crash-safe: every step is an atomic rename or write, and a rerun rolls an
interrupted promotion forward from whatever step it reached.
"""

from __future__ import annotations

import json
import os
import shutil

from ansible_collections.mcpgateway.mtls.plugins.module_utils import _io
from ansible_collections.mcpgateway.mtls.plugins.module_utils import _x509 as X
from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError
from ansible_collections.mcpgateway.mtls.plugins.module_utils._pki import ROTATION_NEXT_DIR, ROTATION_STATE_FILE
from ansible_collections.mcpgateway.mtls.plugins.module_utils._pkica import ensure_ca

STATE_NAME = ROTATION_STATE_FILE
NEXT_NAME = ROTATION_NEXT_DIR
RETIRED_NAME = "retired"
PHASES = ("trust", "reissue")
STATES = ("current", "started", "reissue", "promoted")


class Layout:
    """The paths of one CA folder."""

    def __init__(self, ca_dir):
        if not isinstance(ca_dir, str) or not ca_dir:
            raise PKIError("ca_dir must be a non-empty path")
        if "\x00" in ca_dir:
            raise PKIError("ca_dir: must not contain a NUL byte, got %r" % ca_dir)
        self.dir = os.path.abspath(ca_dir)
        self.key = os.path.join(self.dir, "ca.key")
        self.cert = os.path.join(self.dir, "ca.crt")
        self.next_dir = os.path.join(self.dir, NEXT_NAME)
        self.next_key = os.path.join(self.next_dir, "ca.key")
        self.next_cert = os.path.join(self.next_dir, "ca.crt")
        # The CA's CRL (module crl), beside its certificate; it moves with the CA on promotion.
        self.crl = os.path.join(self.dir, "ca.crl")
        self.next_crl = os.path.join(self.next_dir, "ca.crl")
        self.state = os.path.join(self.dir, STATE_NAME)
        self.retired = os.path.join(self.dir, RETIRED_NAME)

    def retired_dir(self, fingerprint):
        return os.path.join(self.retired, fingerprint.replace(":", "")[:16].lower())


def _fingerprint(path):
    data = _io.read_bytes(path)
    if data is None:
        return None
    try:
        return X.fingerprint_sha256(X.load_certificate(data))
    except PKIError as exc:
        raise PKIError("CA certificate %s is unreadable: %s" % (path, exc)) from None


def read_state(layout):
    """The rotation state, or None when no rotation is in progress. A damaged file is an error."""
    try:
        data = _io.read_bytes(layout.state)
    except OSError as exc:
        raise PKIError("cannot read %s: %s" % (layout.state, exc.strerror)) from None
    if data is None:
        return None
    try:
        state = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise PKIError("%s is not valid JSON (%s): restore it from a backup, or remove it to abandon the "
                       "rotation (the new CA stays in %s)" % (layout.state, exc, layout.next_dir)) from None
    if not isinstance(state, dict) or state.get("phase") not in PHASES or not state.get("old") or not state.get("new"):
        raise PKIError("%s must hold phase (trust or reissue), old and new fingerprints; got %r" % (layout.state, state))
    return state


def _write_state(layout, state):
    _io.write_file(layout.state, (json.dumps(state, indent=2, sort_keys=True) + "\n").encode("utf-8"), 0o644)


def _promotion_step(layout, state):
    """The promotion steps still to do, in order: some of retire, key, cert, crl, then cleanup."""
    current = _fingerprint(layout.cert)
    if current not in (state["old"], state["new"]):
        raise PKIError("%s is neither the old CA (%s) nor the new one (%s) of the rotation in %s: restore it"
                       % (layout.cert, state["old"], state["new"], layout.state))
    todo = []
    if current == state["old"] and not os.path.exists(os.path.join(layout.retired_dir(state["old"]), "ca.crt")):
        todo.append("retire")
    if os.path.lexists(layout.next_key):
        todo.append("key")
    if current == state["old"]:
        if not os.path.lexists(layout.next_cert):
            raise PKIError("%s is the old CA, but the new CA certificate %s is gone: restore it" % (
                layout.cert, layout.next_cert))
        todo.append("cert")
    if os.path.lexists(layout.next_crl):
        todo.append("crl")
    todo.append("cleanup")
    return todo


def _promote(layout, state):
    """Carry out the remaining promotion steps; each one is atomic, so any crash point resumes."""
    done = []
    for step in _promotion_step(layout, state):
        if step == "retire":
            # A copy (not a move): the old CA stays the current one until the renames below.
            target = layout.retired_dir(state["old"])
            _io.ensure_dir(layout.retired, 0o700)
            _io.ensure_dir(target, 0o700)
            crl = _io.read_bytes(layout.crl)
            if crl is not None:  # its CRL, when it has one, goes with it
                _io.write_file(os.path.join(target, "ca.crl"), crl, 0o644)
            for name, mode in (("ca.key", 0o600), ("ca.crt", 0o644)):
                data = _io.read_bytes(os.path.join(layout.dir, name))
                if data is None:
                    raise PKIError("cannot retire the old CA: %s is missing" % os.path.join(layout.dir, name))
                # The certificate last: its presence marks the copy complete.
                _io.write_file(os.path.join(target, name), data, mode)
            done.append("old CA copied to %s" % target)
        elif step == "key":
            os.replace(layout.next_key, layout.key)
            _io.fsync_dir(layout.dir)
            done.append("new CA key moved to %s" % layout.key)
        elif step == "cert":
            os.replace(layout.next_cert, layout.cert)
            _io.fsync_dir(layout.dir)
            done.append("new CA certificate moved to %s" % layout.cert)
        elif step == "crl":
            os.replace(layout.next_crl, layout.crl)
            _io.fsync_dir(layout.dir)
            done.append("new CA's CRL moved to %s" % layout.crl)
        elif step == "cleanup":
            if os.path.isdir(layout.next_dir):
                for path in (layout.next_key, layout.next_cert):
                    _io.remove_stale_temps(path)  # of a killed run that made the new CA
                leftovers = [n for n in os.listdir(layout.next_dir) if n != _io.LOCK_NAME]
                if leftovers:
                    raise PKIError("%s still holds %s after the promotion: move them away" % (
                        layout.next_dir, ", ".join(sorted(leftovers))))
                shutil.rmtree(layout.next_dir)
            os.unlink(layout.state)
            _io.fsync_dir(layout.dir)
            done.append("rotation finished (%s removed)" % layout.state)
    return done


def _interrupted(layout, state):
    """A promotion that stopped half-way: the new key or certificate is already in place."""
    return bool(state) and state["phase"] == "reissue" and (
        _fingerprint(layout.cert) == state["new"] or not os.path.lexists(layout.next_key))


def finish_interrupted_promotion(ca_dir, check_mode=False):
    """For the ca module, which holds the run lock of CA_DIR: finish a promotion that was interrupted.

    A promotion killed between its two renames leaves ca.key (already the new CA's) beside ca.crt (still
    the old CA's): the ca module, the first task of every run, would refuse that pair, and the
    ca_rotation task that finishes the promotion would never run. Returns (actions, key path, certificate
    path): the files that hold the CA after the promotion (in check mode still partly in next/); no
    actions when no promotion was interrupted.
    """
    layout = Layout(ca_dir)
    if not os.path.lexists(layout.state):
        return [], layout.key, layout.cert
    try:
        state = read_state(layout)
        interrupted = _interrupted(layout, state)
    except PKIError:
        # A damaged state or CA certificate: ca_rotation names it; the ca module reports on the files as they are.
        interrupted = False
    if not interrupted:
        return [], layout.key, layout.cert
    if check_mode:
        key = layout.next_key if os.path.lexists(layout.next_key) else layout.key
        cert = layout.next_cert if os.path.lexists(layout.next_cert) else layout.cert
        return ["would finish the interrupted promotion of the new CA"], key, cert
    return ["finished the interrupted CA rotation: " + action for action in _promote(layout, state)], layout.key, layout.cert


def _report(layout, state):
    phase = state["phase"] if state else None
    if phase == "reissue":
        signing_key, signing_cert, trust = layout.next_key, layout.next_cert, [layout.cert]
    elif phase == "trust":
        signing_key, signing_cert, trust = layout.key, layout.cert, [layout.next_cert]
    else:
        signing_key, signing_cert, trust = layout.key, layout.cert, []
    return {
        "in_progress": state is not None,
        "phase": phase,
        "signing_key": signing_key,
        "signing_cert": signing_cert,
        "trust_extra": trust,
        "old_fingerprint": state["old"] if state else None,
        "new_fingerprint": state["new"] if state else None,
        "started": state.get("started") if state else None,
    }


def _check_in_progress(layout, state):
    """A rotation in phase trust or reissue needs both files of the new CA, matching the state."""
    for path in (layout.next_key, layout.next_cert):
        if not os.path.lexists(path):
            raise PKIError("%s says a CA rotation is in phase %s, but %s is missing: restore it, or remove %s to "
                           "abandon the rotation" % (layout.state, state["phase"], path, layout.state))
    if _fingerprint(layout.next_cert) != state["new"]:
        raise PKIError("%s is not the new CA recorded in %s (%s): restore it" % (layout.next_cert, layout.state, state["new"]))


def rotation(layout, state_wanted, ca_spec=None, check_mode=False, now=None, lock_timeout=None):
    """Bring the CA folder to STATE_WANTED and report where the rotation stands.

    LOCK_TIMEOUT: seconds to wait for the CA folder's run lock (default: that of CA_SPEC, else 300).

    current   read the state; finish an interrupted promotion (the only write)
    started   begin a rotation when none is in progress: create the new CA (ensure_ca with CA_SPEC
              for ca/next) and enter phase trust; a rotation in progress is left as it is
    reissue   phase trust -> reissue (after the trust bundles were rolled out everywhere)
    promoted  phase reissue -> the new CA becomes ca/ca.*, the old one is retired
    """
    if state_wanted not in STATES:
        raise PKIError("state must be one of %s, got %r" % (", ".join(STATES), state_wanted))
    now = now or X.utcnow()
    if os.path.lexists(layout.dir) and not os.path.isdir(layout.dir):
        raise PKIError("ca_dir %s is not a folder (give the folder of ca.key and ca.crt)" % layout.dir)
    if state_wanted == "current" and not os.path.isdir(layout.dir):
        # No CA yet (check mode before the first run): nothing to rotate.
        return dict(_report(layout, None), changed=False, actions=[], warnings=[])
    if not os.path.isdir(layout.dir):
        raise PKIError("CA folder %s does not exist (create the CA with mcpgateway.mtls.ca first)" % layout.dir)
    if lock_timeout is None:
        lock_timeout = ca_spec.lock_timeout if ca_spec is not None else 300
    lock = _io.RunLock(layout.dir, timeout=lock_timeout, shared=check_mode, create=not check_mode)
    changed, actions, warnings = False, [], []
    with lock:
        stale = _io.stale_temps(layout.state) if check_mode else _io.remove_stale_temps(layout.state)
        if stale:  # of a killed run that wrote the state
            changed = True
            actions.append("%s temp file(s) left by an interrupted run: %s" % (
                "would remove" if check_mode else "removed", ", ".join(stale)))
        state = read_state(layout)
        interrupted = _interrupted(layout, state)
        if interrupted:
            changed = True
            if check_mode:
                actions.append("would finish the interrupted promotion of the new CA")
            else:
                actions.extend(_promote(layout, state))
                state = None
        elif state:
            _check_in_progress(layout, state)

        if state_wanted == "started" and state is None and not interrupted:
            if _io.read_bytes(layout.cert) is None:
                raise PKIError("there is no CA to rotate: %s does not exist" % layout.cert)
            if check_mode:
                changed = True
                actions.append("would create the new CA in %s and enter phase trust" % layout.next_dir)
                state = {"phase": "trust", "old": _fingerprint(layout.cert), "new": None, "started": None}
            else:
                _io.ensure_dir(layout.next_dir, 0o700)
                result = ensure_ca(ca_spec, check_mode=False, now=now)
                warnings.extend(result.get("warnings", []))
                state = {"phase": "trust", "old": _fingerprint(layout.cert), "new": result["fingerprint_sha256"],
                         "started": X.iso(now)}
                if state["old"] == state["new"]:
                    raise PKIError("the new CA %s is the current CA: remove %s" % (layout.next_cert, layout.next_dir))
                _write_state(layout, state)
                changed = True
                actions.append("new CA %s created in %s (%s); phase trust" % (
                    result["subject"], layout.next_dir, "new key" if result["new_key"] else "existing key"))
        elif state_wanted == "reissue":
            if state is None:
                raise PKIError("no CA rotation is in progress in %s: start one first (state=started)" % layout.dir)
            if state["phase"] == "trust":
                changed = True
                actions.append("phase trust -> reissue")
                state = dict(state, phase="reissue")
                if not check_mode:
                    _write_state(layout, state)
        elif state_wanted == "promoted" and state is not None:
            if state["phase"] != "reissue":
                raise PKIError("the CA rotation in %s is in phase %s: the leaves must be re-issued by the new CA "
                               "(phase reissue) before it is promoted" % (layout.dir, state["phase"]))
            changed = True
            if check_mode:
                actions.append("would promote the new CA and retire the old one")
            else:
                actions.extend(_promote(layout, state))
            state = None
        report = _report(layout, state)
        if check_mode:  # the new CA may exist only in this report
            report["trust_extra"] = [path for path in report["trust_extra"] if os.path.exists(path)]
    report.update(changed=changed, actions=actions, warnings=warnings)
    return report
