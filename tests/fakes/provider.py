"""A fake OpenAI-compatible model provider: slow, failing, rate-limiting on request.

Behaviour is chosen per request by markers in the messages, so that tests running at the same
time never interfere:

    [[fail:429:2]]      answer 429 for the first 2 requests with this content, then succeed
    [[fail:400]]        always answer 400 (with an OpenAI-style error message)
    [[retry-after:1]]   add `Retry-After: 1` to failures
    [[delay:250]]       wait 250 ms before answering
    [[tool]]            answer with a tool call to the first tool offered
    [[nul]]             put a NUL character in the answer
    [[hold:NAME]]       hold the request open until `POST /_control/release?name=NAME`
                        (from then on, requests with that marker are answered at once)

`FAKE_DELAY_MS` sets a default delay. `GET /_control/requests?contains=X` lists the requests seen
(with the usage returned; `open` ones have no `done` yet); `POST /_control/reset` forgets them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import time
import uuid
from collections import defaultdict
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

MARKER = re.compile(r"\[\[([a-z-]+)(?::([^\]]*))?\]\]")
seen: list[dict[str, Any]] = []
attempts: dict[str, int] = defaultdict(int)
holds: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
default_delay_ms = float(os.environ.get("FAKE_DELAY_MS", "0"))


def _text(messages: list[dict[str, Any]]) -> str:
    parts = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "\n".join(parts)


def usage_for(messages: list[dict[str, Any]], reply: str) -> dict[str, int]:
    """Deterministic token counts: words plus 4 per message, like a real tokenizer's overhead."""
    prompt = sum(len(_text([m]).split()) + 4 for m in messages)
    completion = max(1, len(reply.split()))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


async def chat(request: Request) -> JSONResponse:
    body = await request.json()
    messages = body.get("messages") or []
    text = _text(messages)
    markers = {name: (arg or "") for name, arg in MARKER.findall(text)}
    attempts[text] += 1
    n = attempts[text]
    delay = float(markers.get("delay") or default_delay_ms)
    record: dict[str, Any] = {
        "content": text,
        "attempt": n,
        "model": body.get("model"),
        "tools": body.get("tools"),
        "t": time.time(),
    }
    seen.append(record)
    if "hold" in markers:
        await holds[markers["hold"]].wait()
    if delay:
        await asyncio.sleep(delay / 1000)
    if "fail" in markers:
        status_s, _, times_s = markers["fail"].partition(":")
        status = int(status_s)
        if not times_s or n <= int(times_s):
            headers = {}
            if "retry-after" in markers:
                headers["Retry-After"] = markers["retry-after"]
            record["status"] = status
            record["done"] = time.time()
            message = f"fake provider refused the request with {status} (attempt {n})"
            error = {
                "message": message,
                "type": "invalid_request_error" if status < 500 else "server_error",
                "code": str(status),
            }
            return JSONResponse({"error": error}, status_code=status, headers=headers)
    words = text.split()
    reply = "echo: " + " ".join(w for w in words if not MARKER.match(w))[:200]
    if "nul" in markers:
        reply += " with a NUL \x00 inside"
    usage = usage_for(messages, reply)
    record["status"] = 200
    record["done"] = time.time()
    record["usage"] = usage
    message: dict[str, Any] = {"role": "assistant", "content": reply}
    finish = "stop"
    if "tool" in markers and body.get("tools"):
        fn = body["tools"][0]["function"]["name"]
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_" + uuid.uuid4().hex[:12],
                    "type": "function",
                    "function": {"name": fn, "arguments": json.dumps({"q": "fake"})},
                }
            ],
        }
        finish = "tool_calls"
    return JSONResponse(
        {
            "id": "chatcmpl-" + uuid.uuid4().hex,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "system_fingerprint": "fp_fake",
            "choices": [
                {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
            ],
            "usage": usage,
        }
    )


async def models(request: Request) -> JSONResponse:
    return JSONResponse({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}]})


async def requests_seen(request: Request) -> JSONResponse:
    needle = request.query_params.get("contains", "")
    return JSONResponse([r for r in seen if needle in r["content"]])


async def release(request: Request) -> JSONResponse:
    """Answer every request held under `name`, and those that come later with it."""
    name = request.query_params["name"]
    holds[name].set()
    return JSONResponse({"released": name})


async def reset(request: Request) -> JSONResponse:
    seen.clear()
    attempts.clear()
    for event in holds.values():
        event.set()
    holds.clear()
    return JSONResponse({"ok": True})


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True, "requests": len(seen)})


app = Starlette(
    routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/chat/completions", chat, methods=["POST"]),
        Route("/v1/models", models),
        Route("/_control/requests", requests_seen),
        Route("/_control/reset", reset, methods=["POST"]),
        Route("/_control/release", release, methods=["POST"]),
        Route("/_control/health", health),
    ]
)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # Keep-alive longer than any client pool keeps an idle connection: a connection the server
    # closes just as the proxy reuses it fails the request ("Cannot write to closing transport").
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=300,
    )


if __name__ == "__main__":
    main()
