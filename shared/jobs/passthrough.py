"""What a team's chat request may pass through to the provider, beyond the parameter allow-list.

By default only `function` tools (run by the caller, not the provider) and inline content:
provider-side tools (web search, code execution, MCP connectors, ...) and provider file ids act
with the operator's provider account, so each needs the admin's say-so per team
(`allowed_tool_types`, `allow_file_ids`). Image parts may only be `data:` or `https:` URLs: the
provider fetches any other URL, which could point anywhere.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from shared.errors import BadRequest
from shared.jobs.schemas import ChatRequest
from shared.models import Team

ALWAYS_TOOL_TYPES = frozenset({"function"})
CONTENT_PART_TYPES = frozenset({"text", "image_url", "input_audio", "file", "refusal"})
IMAGE_SCHEMES = ("data:", "https://")


def _at(prefix: str, field: str) -> str:
    return f"{prefix}.{field}" if prefix else field


def check_passthrough(team: Team, req: ChatRequest, param: str) -> None:
    """400 with the offending `param` (under `param`, e.g. `requests[3]`, or at the top)."""
    allowed = ALWAYS_TOOL_TYPES | set(team.allowed_tool_types or [])
    extra = req.model_extra or {}
    _check_tools(extra.get("tools"), allowed, _at(param, "tools"))
    choice = extra.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        if not isinstance(kind, str) or kind not in allowed:
            raise BadRequest(
                f"tool_choice type {kind!r} is not allowed for this team",
                param=_at(param, "tool_choice"),
            )
    for i, message in enumerate(req.messages):
        if isinstance(message.content, list):
            for j, part in enumerate(message.content):
                _check_part(part, team.allow_file_ids, _at(param, f"messages[{i}].content[{j}]"))


def _check_tools(tools: Any, allowed: Collection[str], param: str) -> None:
    if tools is None:
        return
    if not isinstance(tools, list):
        raise BadRequest("tools must be a list", param=param)
    for i, tool in enumerate(tools):
        where = f"{param}[{i}]"
        kind = tool.get("type") if isinstance(tool, dict) else None
        if not isinstance(kind, str):
            raise BadRequest("each tool must be an object with a string `type`", param=where)
        if kind not in allowed:
            raise BadRequest(
                f"tool type {kind!r} is not allowed for this team: only 'function' tools, unless "
                "the admin allows provider-side tools (allowed_tool_types)",
                param=f"{where}.type",
            )
        if kind == "function":
            function = tool.get("function")
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise BadRequest("a function tool needs `function.name`", param=f"{where}.function")


def _check_part(part: Any, allow_file_ids: bool, param: str) -> None:
    kind = part.get("type") if isinstance(part, dict) else None
    if not isinstance(kind, str) or kind not in CONTENT_PART_TYPES:
        raise BadRequest(
            f"content part type {kind!r} is not supported; use one of "
            + ", ".join(sorted(CONTENT_PART_TYPES)),
            param=f"{param}.type",
        )
    assert isinstance(part, dict)
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if not isinstance(url, str) or not url.lower().startswith(IMAGE_SCHEMES):
            raise BadRequest(
                "an image must be a data: URL or an https: URL", param=f"{param}.image_url.url"
            )
    if kind == "file":
        file = part.get("file")
        if not isinstance(file, dict):
            raise BadRequest("a file part needs a `file` object", param=f"{param}.file")
        if "file_id" in file and not allow_file_ids:
            raise BadRequest(
                "provider file ids are not allowed for this team; send the file inline "
                "(file_data), or ask the admin to allow file ids",
                param=f"{param}.file.file_id",
            )
