"""module_utils/_toolcall.py against a stand-in gateway on loopback: a real HTTP server that speaks the gateway's API
the way gateway 1.1.0 does (POST /tools with the body under "tool", MCP tools/call on /mcp, DELETE /tools/ID) and
calls the registered REST tool with the arguments a plugin hook would have rewritten. The real gateway runs in the
lab and in molecule (verify_tool_call)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ansible_collections.mcpgateway.mtls.plugins.module_utils import _toolcall

SECRET = "s3cret-for-the-unit-test-0123456789abcdef"


def decode(token):
    def part(text):
        return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))

    header, claims, signature = token.split(".")
    expected = base64.urlsafe_b64encode(hmac.new(SECRET.encode(), f"{header}.{claims}".encode(), hashlib.sha256).digest())
    assert expected.rstrip(b"=").decode() == signature
    return part(header), part(claims)


def test_env_files_are_read_like_systemd_later_files_win(tmp_path):
    (tmp_path / "env").write_text("# comment\nA=1\nJWT_AUDIENCE=aud-from-env\nB=\"x \\\"q\\\" y\"\n")
    (tmp_path / "secrets.env").write_text("JWT_SECRET_KEY='k=1'\nA=2\n")
    env = _toolcall.read_env_files([str(tmp_path / "env"), str(tmp_path / "secrets.env"), str(tmp_path / "missing")])
    assert env == {"A": "2", "JWT_AUDIENCE": "aud-from-env", "B": 'x "q" y', "JWT_SECRET_KEY": "k=1"}


def test_the_token_carries_the_claims_the_gateway_requires():
    header, claims = decode(_toolcall.jwt_token({"JWT_SECRET_KEY": SECRET}, lifetime=60, now=1000))
    assert header == {"alg": "HS256", "typ": "JWT"}
    assert {k: claims[k] for k in ("sub", "iat", "exp", "iss", "aud")} == {
        "sub": "admin@example.com", "iat": 1000, "exp": 1060, "iss": "mcpgateway", "aud": "mcpgateway-api"}
    assert len(claims["jti"]) == 32 and "env" not in claims
    _h, other = decode(_toolcall.jwt_token({"JWT_SECRET_KEY": SECRET, "PLATFORM_ADMIN_EMAIL": "ops@x.test",
                                           "JWT_AUDIENCE": "a", "JWT_ISSUER": "i", "ENVIRONMENT": "production"}))
    assert (other["sub"], other["aud"], other["iss"], other["env"]) == ("ops@x.test", "a", "i", "production")
    assert other["jti"] != claims["jti"]


@pytest.mark.parametrize("env, message", [({}, "no JWT_SECRET_KEY"),
                                          ({"JWT_SECRET_KEY": SECRET, "JWT_ALGORITHM": "RS256"}, "HS256 only")])
def test_a_token_that_cannot_be_signed_is_refused(env, message):
    with pytest.raises(ValueError, match=message):
        _toolcall.jwt_token(env)


class Gateway:
    """The stand-in: checks the bearer token, keeps registered tools, and on tools/call rewrites the arguments
    (REWRITE) before calling the tool's URL, as a pre-invoke plugin hook would."""

    def __init__(self, rewrite=lambda args: args, ssrf=False):
        self.tools, self.deleted, self.tokens = {}, [], []
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self):
                token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                gateway.tokens.append(token)
                try:
                    decode(token)
                except (AssertionError, ValueError):
                    self._answer(401, {"detail": "Invalid authentication credentials"})
                    return False
                return True

            def do_POST(self):  # noqa: N802
                if not self._authorized():
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/tools":
                    tool = body["tool"]
                    ident = "id%d" % len(gateway.tools)
                    gateway.tools[ident] = dict(tool, name=tool["name"].replace("_", "-"))
                    self._answer(200, {"id": ident, "name": gateway.tools[ident]["name"]})
                elif self.path == "/mcp":
                    params = body["params"]
                    tool = next(t for t in gateway.tools.values() if t["name"] == params["name"])
                    if ssrf:
                        self._answer(200, {"jsonrpc": "2.0", "id": 1, "error": {
                            "code": -32000, "message": "Outbound URL blocked by URL policy: localhost address which is "
                                                       "blocked by SSRF protection"}})
                        return
                    request = urllib.request.Request(tool["url"], data=json.dumps(rewrite(params["arguments"])).encode(),
                                                     headers={"Content-Type": "application/json"}, method="POST")
                    with urllib.request.urlopen(request, timeout=5) as answer:
                        text = answer.read().decode()
                    self._answer(200, {"jsonrpc": "2.0", "id": 1,
                                       "result": {"content": [{"type": "text", "text": text}], "isError": False}})

            def do_DELETE(self):  # noqa: N802
                if self._authorized():
                    gateway.deleted.append(self.path.rsplit("/", 1)[-1])
                    self._answer(200, {"status": "deleted"})

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def env_file(tmp_path):
    path = tmp_path / "secrets.env"
    path.write_text(f"JWT_SECRET_KEY={SECRET}\n")
    return [str(path)]


def run(gateway, env_file, **kwargs):
    try:
        return {r["check"]: r for r in _toolcall.run(gateway.url, env_file, {"text": "oh crap"}, **kwargs)}
    finally:
        gateway.close()


def test_the_tool_receives_what_the_hooks_made_of_the_arguments_and_is_removed(env_file):
    gateway = Gateway(rewrite=lambda args: {"text": args["text"].replace("crap", "crud")})
    records = run(gateway, env_file, expect={"text": "oh crud"}, expect_result="oh crud")
    assert records["gateway_tool_call_reaches_the_tool"]["ok"], records
    assert 'received {"text": "oh crud"}' in records["gateway_tool_call_reaches_the_tool"]["seen"]
    assert records["gateway_tool_call_answered"]["ok"], records
    assert list(gateway.tools) == gateway.deleted == ["id0"]  # registered once, removed after the call
    assert gateway.tools["id0"]["name"].startswith("mcp-mtls-verify-") and gateway.tools["id0"]["url"].startswith(
        "http://127.0.0.1:")


def test_arguments_no_hook_changed_fail_the_check(env_file):
    records = run(Gateway(), env_file, expect={"text": "oh crud"}, expect_result="oh crud")
    assert not records["gateway_tool_call_reaches_the_tool"]["ok"]
    assert 'received {"text": "oh crap"}' in records["gateway_tool_call_reaches_the_tool"]["seen"]
    assert not records["gateway_tool_call_answered"]["ok"]


def test_without_expect_the_arguments_must_arrive_unchanged(env_file):
    records = run(Gateway(), env_file)
    assert records["gateway_tool_call_reaches_the_tool"]["ok"] and "gateway_tool_call_answered" not in records


def test_the_gateways_ssrf_refusal_is_named_with_the_fix(env_file):
    gateway = Gateway(ssrf=True)
    records = run(gateway, env_file, expect_result="x")
    seen = records["gateway_tool_call_reaches_the_tool"]["seen"]
    assert not records["gateway_tool_call_reaches_the_tool"]["ok"] and "received nothing" in seen
    assert "SSRF_ALLOW_LOCALHOST=true" in seen and gateway.deleted == ["id0"]


def test_a_wrong_secret_is_a_refused_registration(tmp_path):
    (tmp_path / "secrets.env").write_text("JWT_SECRET_KEY=not-the-gateways\n")
    records = run(Gateway(), [str(tmp_path / "secrets.env")])
    assert not records["gateway_tool_call_reaches_the_tool"]["ok"]
    assert "POST /tools) answered HTTP 401" in records["gateway_tool_call_reaches_the_tool"]["seen"]


def test_no_gateway_is_a_failed_check(env_file):
    gateway = Gateway()
    gateway.close()
    records = {r["check"]: r for r in _toolcall.run(gateway.url, env_file, {"text": "x"})}
    assert not records["gateway_tool_call_reaches_the_tool"]["ok"]
    assert "did not answer" in records["gateway_tool_call_reaches_the_tool"]["seen"]


def test_without_a_secret_nothing_is_tried(tmp_path):
    records = _toolcall.run("http://127.0.0.1:9", [str(tmp_path / "none")], {"text": "x"})
    assert [r["ok"] for r in records] == [False] and "no JWT_SECRET_KEY" in records[0]["seen"]
