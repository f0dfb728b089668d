"""The passthrough allow-list: what a team's chat request may carry to the provider."""

from __future__ import annotations

from typing import Any

import pytest

from shared.errors import BadRequest
from shared.jobs.passthrough import check_passthrough
from shared.jobs.schemas import ChatRequest
from shared.models import Team


def _team(tools: list[str] | None = None, file_ids: bool = False) -> Team:
    return Team(id="t", name="t", allowed_tool_types=tools or [], allow_file_ids=file_ids)


def _req(content: Any = "hi", **extra: Any) -> ChatRequest:
    return ChatRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": content}], **extra}
    )


FUNCTION = {"type": "function", "function": {"name": "lookup", "parameters": {}}}


def _refused(team: Team, req: ChatRequest, param: str, prefix: str = "requests[2]") -> str:
    with pytest.raises(BadRequest) as caught:
        check_passthrough(team, req, prefix)
    assert caught.value.param == param, caught.value.param
    return caught.value.message


def test_function_tools_and_inline_content_pass() -> None:
    parts = [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
        {
            "type": "file",
            "file": {"file_data": "data:application/pdf;base64,AAAA", "filename": "a"},
        },
    ]
    check_passthrough(_team(), _req(parts, tools=[FUNCTION], tool_choice="auto"), "requests[0]")
    check_passthrough(
        _team(), _req(tool_choice={"type": "function", "function": {"name": "lookup"}}), ""
    )


@pytest.mark.parametrize(
    "kind",
    [
        "web_search",
        "web_search_preview",
        "code_interpreter",
        "mcp",
        "file_search",
        "computer_use_preview",
    ],
)
def test_provider_side_tools_are_refused_unless_the_team_may(kind: str) -> None:
    req = _req(tools=[FUNCTION, {"type": kind}])
    message = _refused(_team(), req, "requests[2].tools[1].type")
    assert kind in message and "allowed_tool_types" in message
    check_passthrough(_team(tools=[kind]), req, "requests[2]")
    # Allowing one provider-side type allows only that one.
    other = "mcp" if kind != "mcp" else "web_search"
    _refused(_team(tools=[other]), req, "requests[2].tools[1].type")


def test_malformed_tools_and_tool_choice_are_refused() -> None:
    _refused(_team(), _req(tools={"type": "function"}), "requests[2].tools")
    _refused(_team(), _req(tools=["lookup"]), "requests[2].tools[0]")
    _refused(_team(), _req(tools=[{"type": "function"}]), "requests[2].tools[0].function")
    _refused(_team(), _req(tool_choice={"type": "mcp"}), "requests[2].tool_choice")


@pytest.mark.parametrize(
    "url", ["http://example.com/a.png", "file:///etc/passwd", "ftp://x/y", "gs://bucket/a", ""]
)
def test_images_must_be_data_or_https_urls(url: str) -> None:
    for part in (
        {"type": "image_url", "image_url": {"url": url}},
        {"type": "image_url", "image_url": url},
    ):
        _refused(_team(), _req([part]), "messages[0].content[0].image_url.url", prefix="")


def test_file_ids_need_the_admins_say_so_and_unknown_parts_are_refused() -> None:
    part = {"type": "file", "file": {"file_id": "file-abc"}}
    _refused(_team(), _req([part]), "requests[2].messages[0].content[0].file.file_id")
    check_passthrough(_team(file_ids=True), _req([part]), "requests[2]")
    _refused(
        _team(),
        _req([{"type": "document", "source": {}}]),
        "requests[2].messages[0].content[0].type",
    )
    _refused(_team(), _req([{"type": "file"}]), "requests[2].messages[0].content[0].file")
