# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The gRPC transport on the controller's side: the plan's target and URL (module_utils/_plan.py), the gateway's
grpc entries (_gateway.py), the socketless units (_units.py) and the probe's HTTP/2 gRPC call (_tlscheck.py:
the request's frames decoded here, the reader driven with scripted frames and against a real TLS server on
127.0.0.1)."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ansible_collections.mcpgateway.mtls.plugins.module_utils import _gateway as G
from ansible_collections.mcpgateway.mtls.plugins.module_utils import _plan as P
from ansible_collections.mcpgateway.mtls.plugins.module_utils import _tlscheck as T
from ansible_collections.mcpgateway.mtls.plugins.module_utils import _units as U

TLS = {"certfile": "/c.crt", "keyfile": "/c.key", "ca_bundle": "/ca.crt", "keyfile_password": "", "verify": True,
       "check_hostname": True}


def _by_name(plan):
    return {item["name"]: item for item in plan}


# --- the plan ---------------------------------------------------------------------------------------------------


def test_a_grpc_plugin_gets_a_target_and_a_grpcs_url():
    plan = _by_name(P.host_plan([{"name": "g", "port": 50051, "transport": "grpc"},
                                 {"name": "h", "port": 8000}], "p1"))
    g, h = plan["g"], plan["h"]
    assert (g["transport"], g["address"], g["target"], g["url"]) == (
        "grpc", "mcp-plugin-g", "mcp-plugin-g:50051", "grpcs://mcp-plugin-g:50051")
    assert g["health_port"] == 51051 and g["unit"] == "mcp-plugin@g.service"
    assert (h["transport"], h["target"], h["url"]) == ("http", None, "https://mcp-plugin-h:8000/mcp")


@pytest.mark.parametrize("host, target, san", [
    ("::1", "[::1]:50051", "IP:::1"),
    ("fd00::5", "[fd00::5]:50051", "IP:fd00::5"),
    ("10.1.2.3", "10.1.2.3:50051", "IP:10.1.2.3"),
    ("guard.internal", "guard.internal:50051", "DNS:guard.internal"),
])
def test_a_grpc_plugins_host_is_its_target(host, target, san):
    (g,) = P.host_plan([{"name": "g", "port": 50051, "transport": "grpc", "host": host}], "p1")
    assert g["target"] == target and g["url"] == "grpcs://" + target and g["address"] == host
    assert san in g["sans"]


@pytest.mark.parametrize("host", ["[fd00::1]", "fd00::1"])
def test_an_ipv6_host_is_bracketed_once_however_it_is_given(host):
    (g,) = P.host_plan([{"name": "g", "port": 50051, "transport": "grpc", "host": host}], "p1")
    assert g["target"] == "[fd00::1]:50051" and g["url"] == "grpcs://[fd00::1]:50051"


def test_the_transport_is_lower_cased_and_defaults_to_http():
    plan = _by_name(P.host_plan([{"name": "a", "port": 1, "transport": "GRPC"}, {"name": "b", "port": 2, "transport": "Http"},
                                 {"name": "c", "port": 3, "transport": ""}], "p1"))
    expected = [("grpc", "mcp-plugin-a:1"), ("http", None), ("http", None)]
    assert [(p["transport"], p["target"]) for p in plan.values()] == expected
    assert plan["a"]["url"] == "grpcs://mcp-plugin-a:1" and plan["b"]["url"] == "https://mcp-plugin-b:2/mcp"


def test_a_grpc_entrys_url_is_not_its_address():
    (g,) = P.host_plan([{"name": "g", "port": 50051, "transport": "grpc", "url": "https://elsewhere.test:1/mcp"}], "p1")
    assert (g["address"], g["target"], g["url"]) == ("mcp-plugin-g", "mcp-plugin-g:50051", "grpcs://mcp-plugin-g:50051")
    assert "DNS:elsewhere.test" not in g["sans"]
    # The same url on an HTTP entry is its address.
    (h,) = P.host_plan([{"name": "h", "port": 8000, "url": "https://elsewhere.test:1/mcp"}], "p1")
    assert (h["address"], h["url"]) == ("elsewhere.test", "https://elsewhere.test:1/mcp")


def test_the_gateways_view_of_a_grpc_plugin():
    hostvars = {"p1": {"plugin_server_plugins": [{"name": "g", "port": 50051, "transport": "grpc"}]},
                "gw": {"gateway_plugins": [{"name": "g", "host": "10.0.0.7", "url": "grpcs://ignored:1"}]}}
    (g,) = P.plugin_plan(hostvars, {"mcp_plugin_servers": ["p1"]}, gateways=["gw"])
    assert g["gateway"] and g["deployed"] and g["transport"] == "grpc"
    assert (g["address"], g["target"], g["url"]) == ("10.0.0.7", "10.0.0.7:50051", "grpcs://10.0.0.7:50051")
    assert "IP:10.0.0.7" in g["sans"]
    # Without a port the target says so, for preflight to name.
    (z,) = P.plugin_plan({}, {}, explicit=[{"name": "z", "transport": "grpc"}])
    assert (z["target"], z["url"]) == ("mcp-plugin-z:NO-PORT", "grpcs://mcp-plugin-z:NO-PORT")


# --- the gateway's client config --------------------------------------------------------------------------------


def _gateway_plan(*entries):
    return [p for p in P.host_plan(list(entries), "p1") if p["gateway"]]


def test_a_grpc_entry_has_a_target_and_the_grpc_tls_fields():
    plugins = _gateway_plan({"name": "g", "port": 50051, "transport": "grpc", "hooks": ["tool_pre_invoke"],
                             "mode": "enforce", "config": {"x": 1}},
                            {"name": "h", "port": 8000})
    g, h = G.gateway_client_config(plugins, TLS)["plugins"]
    assert g == {"name": "g", "kind": "external", "hooks": ["tool_pre_invoke"], "mode": "enforce",
                 "grpc": {"target": "mcp-plugin-g:50051",
                          "tls": {"certfile": "/c.crt", "keyfile": "/c.key", "ca_bundle": "/ca.crt", "verify": True}}}
    assert "mcp" not in g and "grpc" not in h
    assert h["mcp"]["tls"]["check_hostname"] is True and h["mcp"]["url"] == "https://mcp-plugin-h:8000/mcp"


def test_a_grpc_entry_keeps_a_given_password_and_verify_false_and_drops_empty_values():
    plugins = _gateway_plan({"name": "g", "port": 50051, "transport": "grpc"})
    tls = dict(TLS, keyfile_password="pw", verify=False, certfile="")
    (g,) = G.gateway_client_config(plugins, tls)["plugins"]
    assert g["grpc"]["tls"] == {"keyfile": "/c.key", "ca_bundle": "/ca.crt", "keyfile_password": "pw", "verify": False}


def test_env_mode_puts_no_tls_in_grpc_or_mcp_entries():
    plugins = _gateway_plan({"name": "g", "port": 50051, "transport": "grpc"}, {"name": "h", "port": 8000})
    g, h = G.gateway_client_config(plugins, TLS, "env")["plugins"]
    assert g["grpc"] == {"target": "mcp-plugin-g:50051"}
    assert h["mcp"] == {"proto": "STREAMABLEHTTP", "url": "https://mcp-plugin-h:8000/mcp"}


# --- the units of a socketless (gRPC) instance -------------------------------------------------------------------


def _states(name, socket=("inactive", "disabled"), service=("inactive", "disabled"), timer=("inactive", "disabled")):
    units = U.unit_names(name)
    return {units[kind]: {"Id": units[kind], "ActiveState": value[0], "UnitFileState": value[1]}
            for kind, value in (("socket", socket), ("service", service), ("timer", timer))}


def test_a_new_socketless_instance_never_touches_its_socket():
    steps = U.plan(["g"], _states("g"), socketless=("g",))
    assert steps == {"handover": [], "reset": [],
                     "enable": ["mcp-plugin@g.service", "mcp-plugin-health@g.timer"],
                     "start": ["mcp-plugin@g.service", "mcp-plugin-health@g.timer"]}
    # The same instance over HTTP starts its socket first.
    expected = ["mcp-plugin@g.socket", "mcp-plugin@g.service", "mcp-plugin-health@g.timer"]
    assert U.plan(["g"], _states("g"))["start"] == expected


@pytest.mark.parametrize("socket_state", ["active", "activating", "reloading"])
def test_a_socket_that_still_holds_the_port_is_stopped_and_the_service_started_again(socket_state):
    states = _states("g", socket=(socket_state, "enabled"), service=("active", "enabled"), timer=("active", "enabled"))
    steps = U.plan(["g"], states, socketless=("g",))
    assert steps == {"handover": ["mcp-plugin@g.socket"], "reset": [], "enable": [], "start": ["mcp-plugin@g.service"]}


def test_a_running_socketless_instance_is_left_alone():
    states = _states("g", socket=("inactive", "enabled"), service=("active", "enabled"), timer=("active", "enabled"))
    assert U.plan(["g"], states, socketless=("g",)) == {"handover": [], "reset": [], "enable": [], "start": []}
    # Over HTTP the same states mean a service binding its port itself: it is handed over to its socket.
    assert U.plan(["g"], states)["handover"] == ["mcp-plugin@g.service"]
    # A failed socket of a socketless instance is not reset either; its failed service is.
    states = _states("g", socket=("failed", "enabled"), service=("failed", "enabled"), timer=("active", "enabled"))
    steps = U.plan(["g"], states, socketless=("g",))
    assert steps["reset"] == ["mcp-plugin@g.service"] and steps["start"] == ["mcp-plugin@g.service"]


def test_http_instances_keep_their_plan_next_to_socketless_ones():
    states = {**_states("h", socket=("inactive", "enabled"), service=("active", "enabled")), **_states("g")}
    mixed = U.plan(["h", "g"], states, socketless=("g",))
    alone = U.plan(["h"], states)
    assert mixed["handover"] == alone["handover"] == ["mcp-plugin@h.service"]
    assert mixed["start"] == ["mcp-plugin@h.socket", "mcp-plugin@h.service", "mcp-plugin@g.service",
                              "mcp-plugin-health@h.timer", "mcp-plugin-health@g.timer"]
    assert [u for u in mixed["enable"] if "@h." in u] == alone["enable"]


def test_ensure_running_reports_no_socket_for_a_socketless_instance():
    calls = []
    states = {**_states("g", socket=("active", "enabled"), service=("active", "enabled"),
                        timer=("active", "enabled")), **_states("h")}

    def run(argv):
        calls.append(argv)
        if argv[1] == "show":
            return 0, "\n\n".join("\n".join("%s=%s" % item for item in states[u].items()) for u in argv[5:]), ""
        return 0, "", ""

    done = U.ensure_running(["g", "h"], run, socketless=("g",))
    assert done["started"] == ["g", "h"] and done["sockets_started"] == ["h"]
    assert [argv for argv in calls if argv[1] == "stop"] == [["systemctl", "stop", "--", "mcp-plugin@g.socket"]]
    started = [argv for argv in calls if argv[1] == "start"][0][3:]
    assert "mcp-plugin@g.socket" not in started and "mcp-plugin@h.socket" in started


# --- the probe's gRPC call ---------------------------------------------------------------------------------------


def frames(data):
    """[(type, flags, stream, payload)] of a sequence of HTTP/2 frames."""
    out = []
    while data:
        assert len(data) >= 9, data
        size = int.from_bytes(data[:3], "big")
        out.append((data[3], data[4], int.from_bytes(data[5:9], "big"), data[9:9 + size]))
        assert len(data) >= 9 + size, "truncated frame"
        data = data[9 + size:]
    return out


def hpack_literals(block):
    """The headers of an HPACK block made of literals without indexing, new name, no Huffman coding."""
    headers = []
    while block:
        assert block[0] == 0x00, "not a literal without indexing with a new name: %r" % block[:1]
        block = block[1:]
        strings = []
        for _side in range(2):
            assert not block[0] & 0x80, "Huffman-coded"
            length, used = block[0] & 0x7F, 1
            if length == 0x7F:  # RFC 7541 5.1: the rest of the integer in 7-bit groups, least significant first
                shift = 0
                while True:
                    byte = block[used]
                    used += 1
                    length += (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        break
            assert len(block) >= used + length, "truncated string"
            strings.append(block[used:used + length].decode("ascii"))
            block = block[used + length:]
        headers.append(tuple(strings))
    return headers


def test_the_grpc_health_request_frames():
    data = T.grpc_health_request("mcp-plugin-g:50051")
    assert data.startswith(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    (settings, headers, body) = frames(data[24:])
    assert settings == (0x4, 0, 0, b"")
    kind, flags, stream, block = headers
    assert (kind, stream) == (0x1, 1) and flags == 0x4  # END_HEADERS, the stream goes on
    assert hpack_literals(block) == [(":method", "POST"), (":scheme", "https"), (":path", "/cpex.Health/Check"),
                                     (":authority", "mcp-plugin-g:50051"), ("content-type", "application/grpc"),
                                     ("te", "trailers")]
    assert body == (0x0, 0x1, 1, b"\x00\x00\x00\x00\x00")  # END_STREAM; an uncompressed empty message


@pytest.mark.parametrize("size", [126, 127, 128, 255, 256, 300, 20000])
def test_a_long_authority_gets_a_multi_byte_hpack_length(size):
    authority = "h" * (size - 6) + ":50051"
    (_settings, (_kind, _flags, _stream, block), _data) = frames(T.grpc_health_request(authority)[24:])
    assert dict(hpack_literals(block))[":authority"] == authority


def test_the_authority_is_the_one_given():
    (_settings, (_kind, _flags, _stream, block), _data) = frames(T.grpc_health_request("[::1]:7")[24:])
    assert dict(hpack_literals(block))[":authority"] == "[::1]:7"


def frame(kind, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


SETTINGS = frame(0x4, 0, 0, b"\x00\x03\x00\x00\x00\x64")  # SETTINGS_MAX_CONCURRENT_STREAMS 100
SETTINGS_ACK = frame(0x4, 0x1, 0)
RESPONSE_HEADERS = frame(0x1, 0x4, 1, b"\x88")  # :status 200 (indexed)
SERVING = frame(0x0, 0, 1, b"\x00\x00\x00\x00\x02\x08\x01")  # HealthCheckResponse status SERVING
TRAILERS = frame(0x1, 0x5, 1, b"\x00\x0bgrpc-status\x010")


class FakeTLS:
    def __init__(self, *chunks):
        self.chunks = list(chunks)
        self.sent = []

    def recv(self, _size):
        return self.chunks.pop(0) if self.chunks else b""

    def sendall(self, data):
        self.sent.append(data)


def test_h2_read_takes_a_data_frame_as_the_answer_and_acknowledges_the_settings():
    tls = FakeTLS(SETTINGS + RESPONSE_HEADERS, SERVING + TRAILERS)
    outcome, detail = T._h2_read(tls)
    assert outcome == "http" and detail == "gRPC answer to /cpex.Health/Check (SERVING)"
    assert tls.sent == [SETTINGS_ACK]
    # A message that is not SERVING is still an answer; the server's own ACK is not acknowledged.
    tls = FakeTLS(SETTINGS_ACK + frame(0x0, 0, 1, b"\x00\x00\x00\x00\x02\x08\x02"))
    assert T._h2_read(tls) == ("http", "gRPC answer to /cpex.Health/Check")
    assert tls.sent == []


def test_h2_read_takes_trailers_only_as_a_refused_call():
    tls = FakeTLS(SETTINGS, frame(0x1, 0x5, 1, b"\x00\x0bgrpc-status\x0216"))
    outcome, detail = T._h2_read(tls)
    assert outcome == T.CALL_REFUSED == "call-refused" and "without an answer" in detail
    assert tls.sent == [SETTINGS_ACK]


@pytest.mark.parametrize("chunks, said", [
    ((SETTINGS + frame(0x7, 0, 0, b"\x00\x00\x00\x00\x00\x00\x00\x02"), SERVING), "(GOAWAY)"),  # INTERNAL_ERROR
    ((SETTINGS,), "closed the connection"),  # then EOF
    ((b"",), "closed the connection"),
    ((SETTINGS[:5],), "closed the connection"),  # EOF inside a frame
])
def test_h2_read_a_connection_that_ends_without_an_answer_is_closed(chunks, said):
    outcome, detail = T._h2_read(FakeTLS(*chunks))
    assert outcome == "closed" and "without answering the gRPC call" in detail and said in detail


def test_h2_read_ignores_other_streams_and_empty_data():
    tls = FakeTLS(SETTINGS + frame(0x0, 0, 3, b"\x00\x00\x00\x00\x02\x08\x01") + frame(0x0, 0, 1, b"")
                  + frame(0x1, 0x5, 3) + frame(0x6, 0, 0, b"12345678"))
    assert T._h2_read(tls)[0] == "closed"


def test_h2_read_parses_frames_split_across_reads():
    data = SETTINGS + RESPONSE_HEADERS + SERVING
    tls = FakeTLS(*[data[i:i + 1] for i in range(len(data))])
    assert T._h2_read(tls) == ("http", "gRPC answer to /cpex.Health/Check (SERVING)")
    assert tls.sent == [SETTINGS_ACK] and tls.chunks == []
    tls = FakeTLS(*[data[i:i + 7] for i in range(0, len(data), 7)])
    assert T._h2_read(tls)[0] == "http"


# --- attempt() with h2 against a real TLS server ------------------------------------------------------------------


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject, issuer_name, public_key, signing_key, ca, usage=None, san=None):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer_name))
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                        critical=True)
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
    return builder.sign(signing_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def h2_pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("h2pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    (folder / "ca.crt").write_bytes(_cert("h2 CA", "h2 CA", ca_key.public_key(), ca_key, True))
    for name, usage, san in (("server", ExtendedKeyUsageOID.SERVER_AUTH, "localhost"),
                             ("client", ExtendedKeyUsageOID.CLIENT_AUTH, None)):
        key = ec.generate_private_key(ec.SECP256R1())
        (folder / f"{name}.key").write_bytes(_key(key))
        (folder / f"{name}.crt").write_bytes(_cert(name, "h2 CA", key.public_key(), ca_key, False, usage, san))
    return folder


class H2Server:
    """A TLS server on 127.0.0.1 that requires a client certificate of the CA, selects ALPN h2, reads the client's
    gRPC call and answers with REPLY; records (ALPN, what the client sent)."""

    def __init__(self, pki, reply):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(pki / "server.crt", pki / "server.key")
        self.context.load_verify_locations(pki / "ca.crt")
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.context.set_alpn_protocols(["h2"])
        self.reply = reply
        self.seen = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        try:
            conn = self.sock.accept()[0]
        except OSError:
            return
        with conn:
            conn.settimeout(5)
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    received = b""
                    expected = len(T.grpc_health_request("localhost:%d" % self.port))
                    while len(received) < expected:
                        data = tls.recv(4096)
                        if not data:
                            break
                        received += data
                    tls.sendall(self.reply)
                    while True:  # what the client sends back, until it closes
                        try:
                            data = tls.recv(4096)
                        except (OSError, ssl.SSLError):
                            break
                        if not data:
                            break
                        received += data
                    self.seen.append((tls.selected_alpn_protocol(), received))
            except (OSError, ssl.SSLError) as exc:
                self.seen.append(("error", exc))

    def close(self):
        self.sock.close()


def _attempt(pki, reply):
    server = H2Server(pki, reply)
    try:
        request = T.grpc_health_request("localhost:%d" % server.port)
        result = T.attempt((socket.AF_INET, ("127.0.0.1", server.port)), "localhost", request, str(pki / "ca.crt"),
                           cert=str(pki / "client.crt"), key=str(pki / "client.key"), h2=True)
        deadline = time.monotonic() + 5
        while not server.seen and time.monotonic() < deadline:
            time.sleep(0.01)
        return result, server.seen, request
    finally:
        server.close()


def test_attempt_h2_gets_the_grpc_answer(h2_pki):
    result, seen, request = _attempt(h2_pki, SETTINGS + RESPONSE_HEADERS + SERVING + TRAILERS)
    assert result == ("http", "gRPC answer to /cpex.Health/Check (SERVING)")
    ((alpn, received),) = seen
    assert alpn == "h2" and received.startswith(request)
    assert SETTINGS_ACK in received[len(request):]


def test_attempt_h2_reports_a_call_refused_after_the_handshake(h2_pki):
    result, seen, _request = _attempt(h2_pki, SETTINGS + frame(0x1, 0x5, 1, b"\x00\x0bgrpc-status\x0216"))
    assert result[0] == T.CALL_REFUSED and seen[0][0] == "h2"
