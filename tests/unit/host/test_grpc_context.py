"""client_trust.jsonable_context: the plugin context cpex's gRPC client converts to protobuf holds JSON types only.

Gateway 1.1.0 puts its Tool model (datetimes, URLs) into global_context.metadata["tool"]; protobuf's ParseDict, which
cpex's pydantic_context_to_proto uses, refuses anything but JSON types. Stand-in context models with the fields of
cpex's PluginContext and GlobalContext; the real ones run in the lab and in molecule (verify_tool_call)."""

from __future__ import annotations

import datetime
import json
from typing import Any, Optional, Union

from pydantic import AnyHttpUrl, BaseModel

from mcp_mtls_host import client_trust


class GlobalContext(BaseModel):
    request_id: str
    user: Optional[Union[str, dict[str, Any]]] = None
    metadata: dict[str, Any] = {}
    state: dict[str, Any] = {}


class PluginContext(BaseModel):
    global_context: GlobalContext
    metadata: dict[str, Any] = {}
    state: dict[str, Any] = {}


class Tool(BaseModel):
    name: str
    url: AnyHttpUrl
    created_at: datetime.datetime


def test_every_part_of_the_context_reaches_protobuf_as_json_types():
    seen = []
    convert = client_trust.jsonable_context(seen.append)
    when = datetime.datetime(2026, 12, 7, 19, 0, 0)
    tool = Tool(name="t", url="http://127.0.0.1:1/echo", created_at=when)
    ctx = PluginContext(global_context=GlobalContext(request_id="r", user={"at": when}, metadata={"tool": tool},
                                                     state={"n": 1}),
                        metadata={"tool": tool}, state={"set": {1}})
    convert(ctx)
    (out,) = seen
    for value in (out.global_context.metadata, out.global_context.state, out.global_context.user, out.metadata,
                  out.state):
        json.dumps(value)  # JSON types only: what ParseDict takes
    assert out.global_context.metadata["tool"] == {"name": "t", "url": "http://127.0.0.1:1/echo",
                                                   "created_at": "2026-12-07T19:00:00"}
    assert out.global_context.user == {"at": "2026-12-07T19:00:00"} and out.state == {"set": [1]}
    # The caller's context is left as it was (the gateway goes on using its Tool model).
    assert ctx.global_context.metadata["tool"] is tool and out.global_context.request_id == "r"
    assert getattr(convert, client_trust.MARK) and convert.__wrapped__ == seen.append


def test_empty_parts_stay_empty_and_a_string_user_is_kept():
    seen = []
    client_trust.jsonable_context(seen.append)(PluginContext(global_context=GlobalContext(request_id="r", user="alice")))
    (out,) = seen
    assert out.global_context.user == "alice" and out.metadata == {} and out.global_context.metadata == {}
