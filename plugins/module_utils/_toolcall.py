# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_util is PRIVATE and should only be used by this collection.
# Breaking changes can occur at any time.

"""A real MCP tools/call through the real gateway, run on the gateway host by module verify_host (option tool_call).

The module starts a throwaway REST tool on the host's loopback (an HTTP server in this process that records what it
receives), registers it with the gateway's API (POST /tools, as the platform admin, with a JWT signed by the
gateway's own JWT_SECRET_KEY read from its env files), sends an authenticated MCP ``tools/call`` to the gateway's
``/mcp`` endpoint, and removes the tool again. On the way the gateway runs its plugins' hooks over mTLS (the external
plugins of plugins.yaml): the records compare what the tool received with what the plugins must have made of the
arguments, and the answer with what it must contain. Python's standard library only.

The gateway must be allowed to call a tool on its own loopback: ``SSRF_ALLOW_LOCALHOST=true`` (its SSRF protection
refuses loopback destinations by default); without it the call fails and the record says so.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.error import HTTPError, URLError

from ansible.module_utils.urls import open_url

TOOL_PREFIX = "mcp-mtls-verify-"
DEFAULTS = {"PLATFORM_ADMIN_EMAIL": "admin@example.com", "JWT_ALGORITHM": "HS256", "JWT_AUDIENCE": "mcpgateway-api",
            "JWT_ISSUER": "mcpgateway"}


def read_env_files(paths):
    """KEY -> value of systemd EnvironmentFile files (later files win; quotes and backslash escapes undone)."""
    env = {}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as handle:
                lines = handle.read().splitlines()
        except OSError:
            continue
        for line in lines:
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, value = line.split("=", 1)
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
                if line.split("=", 1)[1].strip()[0] == '"':
                    value = value.replace('\\"', '"').replace("\\\\", "\\")
            env[key.strip()] = value
    return env


def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwt_token(env, lifetime=300, now=None):
    """An HS256 JWT the gateway accepts for its platform admin (sub, iat, exp, iss, aud, jti), from ENV's settings.
    ValueError when the gateway's JWT settings are ones this check cannot sign for."""
    secret = env.get("JWT_SECRET_KEY")
    if not secret:
        raise ValueError("no JWT_SECRET_KEY in the gateway's env files")
    algorithm = env.get("JWT_ALGORITHM") or DEFAULTS["JWT_ALGORITHM"]
    if algorithm != "HS256":
        raise ValueError("the gateway signs with JWT_ALGORITHM=%s; this check signs HS256 only" % algorithm)
    now = int(time.time() if now is None else now)
    claims = {"sub": env.get("PLATFORM_ADMIN_EMAIL") or DEFAULTS["PLATFORM_ADMIN_EMAIL"], "iat": now,
              "exp": now + lifetime, "iss": env.get("JWT_ISSUER") or DEFAULTS["JWT_ISSUER"],
              "aud": env.get("JWT_AUDIENCE") or DEFAULTS["JWT_AUDIENCE"], "jti": uuid.uuid4().hex}
    if env.get("ENVIRONMENT"):
        claims["env"] = env["ENVIRONMENT"]
    signing = "%s.%s" % (_b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode()),
                         _b64(json.dumps(claims, separators=(",", ":")).encode()))
    signature = hmac.new(secret.encode("utf-8"), signing.encode("ascii"), hashlib.sha256).digest()
    return "%s.%s" % (signing, _b64(signature))


class EchoTool:
    """A REST tool on 127.0.0.1: records each POSTed JSON body and answers {"received": body}."""

    def __init__(self):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(min(length, 1 << 20))
                try:
                    body = json.loads(raw.decode("utf-8"))
                except ValueError:
                    body = {"unparsed": raw.decode("utf-8", "replace")}
                received.append(body)
                answer = json.dumps({"received": body}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/echo" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _request(method, url, token, body=None, timeout=30, tls=None):
    """(status, parsed JSON or text) of an HTTP call to the gateway's API (TLS: paths ca, cert, key for HTTPS)."""
    tls = tls or {}
    headers = {"Authorization": "Bearer %s" % token, "Accept": "application/json, text/event-stream"}
    data = None
    if body is not None:
        data = json.dumps(body).encode("utf-8")
        headers["Content-Type"] = "application/json"
    try:
        with open_url(url, data=data, headers=headers, method=method, timeout=timeout, use_proxy=False,
                      follow_redirects="none", ca_path=tls.get("ca"), client_cert=tls.get("cert"),
                      client_key=tls.get("key")) as answer:
            status, raw = answer.status, answer.read(1 << 20)
    except HTTPError as exc:
        status, raw = exc.code, exc.read(65536)
    text = raw.decode("utf-8", "replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def _result_text(answer):
    """(text of a tools/call result's content, isError, error message) from the JSON-RPC answer."""
    if not isinstance(answer, dict):
        return None, None, "not a JSON-RPC answer: %s" % str(answer)[:300]
    if answer.get("error"):
        return None, None, "JSON-RPC error: %s" % json.dumps(answer["error"])[:500]
    result = answer.get("result") or {}
    texts = [item.get("text", "") for item in result.get("content") or [] if isinstance(item, dict)]
    return "".join(texts), bool(result.get("isError")), None


def check(name, ok, expected, seen):
    return {"check": name, "ok": bool(ok), "expected": expected, "seen": seen}


def run(base_url, env_files, arguments, expect=None, expect_result="", timeout=30, tls=None):
    """The records of one tools/call through the gateway at BASE_URL (e.g. http://127.0.0.1:4444; an https one with
    TLS, paths ca, cert and key): the tool must receive EXPECT (default: ARGUMENTS unchanged) and the answer contain
    EXPECT_RESULT (when given)."""
    expect = arguments if expect is None else expect
    reached = "the tool receives %s after the plugins' pre-invoke hooks" % json.dumps(expect, sort_keys=True)
    answered = "the gateway's answer to tools/call, through the post-invoke hooks, contains %r" % expect_result
    try:
        token = jwt_token(read_env_files(env_files))
    except ValueError as exc:
        return [check("gateway_tool_call_reaches_the_tool", False, reached, "not tried: %s" % exc)]
    tool = EchoTool()
    tool_id = None
    records = []
    try:
        status, created = _request("POST", base_url + "/tools", token, {"tool": {
            "name": TOOL_PREFIX + uuid.uuid4().hex[:8], "url": tool.url, "integration_type": "REST",
            "request_type": "POST", "description": "throwaway tool of mcpgateway.mtls verify (removed after the call)",
            "input_schema": {"type": "object"}, "visibility": "public"}}, timeout, tls)
        if status != 200 or not isinstance(created, dict) or not created.get("id"):
            return [check("gateway_tool_call_reaches_the_tool", False, reached,
                          "registering the tool (POST /tools) answered HTTP %s: %s" % (status, str(created)[:500]))]
        tool_id = created["id"]
        started = time.monotonic()
        status, answer = _request("POST", base_url + "/mcp", token, {
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": created.get("name"), "arguments": arguments}}, timeout, tls)
        took = time.monotonic() - started
        text, is_error, problem = _result_text(answer) if status == 200 else (None, None, "HTTP %s: %s" % (
            status, str(answer)[:500]))
        got = tool.received[-1] if tool.received else None
        if got is None:
            seen = "the tool received nothing (%s)" % (problem or "answer: %s" % (text or "")[:300])
            if "blocked by SSRF protection" in str(answer) or "URL policy" in str(answer):
                seen += "; the gateway's SSRF protection refuses its own loopback: set SSRF_ALLOW_LOCALHOST=true " \
                        "(gateway_env_extra) for this check"
        else:
            seen = "the tool received %s (tools/call took %.0f ms)" % (json.dumps(got, sort_keys=True), took * 1000)
        records.append(check("gateway_tool_call_reaches_the_tool", got == expect and len(tool.received) == 1,
                             reached, seen))
        if expect_result:
            seen = problem or "isError %s, %d characters: %s" % (is_error, len(text or ""), (text or "")[:300])
            records.append(check("gateway_tool_call_answered",
                                 text is not None and not is_error and expect_result in text, answered, seen))
        return records
    except (URLError, OSError) as exc:
        return records + [check("gateway_tool_call_reaches_the_tool", False, reached,
                                "the gateway at %s did not answer: %s" % (base_url, getattr(exc, "reason", exc)))]
    finally:
        if tool_id:
            try:
                _request("DELETE", "%s/tools/%s" % (base_url, tool_id), token, timeout=timeout, tls=tls)
            except (URLError, OSError):
                pass
        tool.close()
