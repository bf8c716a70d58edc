"""OpenAI's chat-completions request, checked where it enters: strict JSON (edgekit.json_files), pydantic for the
schema, then images decoded within limits and the conversation turned into edgekit's (role, parts) turns.

Errors are `ApiError(status, type, message, param)`: 400 for a request that cannot be answered (bad image, bad URL,
remote image), 404 for an unknown model, 422 for a body that breaks the schema (wrong types, max_tokens 0).
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgekit.errors import EdgekitError

MAX_IMAGES = 8  # per request
MAX_STOPS = 8


class ApiError(Exception):
    def __init__(self, status: int, type_: str, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.type, self.message, self.param = status, type_, message, param

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": None}}


class ImageUrl(BaseModel):
    url: str = Field(max_length=64 << 20)
    detail: str | None = None


class Part(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageUrl | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[Part] | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
    messages: list[Message] = Field(min_length=1, max_length=256)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    n: int = Field(default=1, ge=1, le=1)
    response_format: dict | None = None
    chat_template_kwargs: dict | None = None


@dataclass
class Conversation:
    turns: list  # (role, parts) for edgekit.model.prompt.prepare_chat
    images: list  # decoded RGB images in slot order
    think: bool
    stops: tuple[str, ...]


def parse_request(body: bytes) -> ChatRequest:
    from edgekit.json_files import parse_json

    try:
        data = parse_json(body, "request body")
    except EdgekitError as e:
        raise ApiError(400, "invalid_request_error", str(e)) from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_request_error", "the request body must be a JSON object")
    try:
        return ChatRequest.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ApiError(422, "invalid_request_error", f"{where}: {first['msg']}", where) from None


def thinking(req: ChatRequest) -> bool:
    """Off unless asked: `chat_template_kwargs.enable_thinking` (vLLM's name) true, and the last user text not ending
    with MiMo's ` /no_think`. (Off by default, as `edgekit run`; a JSON response_format turns it off.)"""
    kwargs = req.chat_template_kwargs or {}
    if "enable_thinking" in kwargs and not isinstance(kwargs["enable_thinking"], bool):
        raise ApiError(
            422,
            "invalid_request_error",
            "chat_template_kwargs.enable_thinking must be true or false",
            "chat_template_kwargs",
        )
    on = kwargs.get("enable_thinking", False)
    if req.response_format and req.response_format.get("type", "text") != "text":
        return False
    last = next(m for m in reversed(req.messages) if m.role == "user")
    text = last.content if isinstance(last.content, str) else "".join(p.text or "" for p in last.content or [])
    return on and not text.rstrip().endswith("/no_think")


def conversation(req: ChatRequest, *, image_dir: Path | None, max_pixels: int) -> Conversation:
    from edgekit.model.prompt import IMAGE

    if req.messages[-1].role != "user":
        raise ApiError(400, "invalid_request_error", "the last message must be the user's", "messages")
    turns, images = [], []
    for k, m in enumerate(req.messages):
        role = "system" if m.role == "developer" else m.role
        if m.content is None or isinstance(m.content, str):
            parts = [m.content or ""]
        else:
            parts = []
            for j, part in enumerate(m.content):
                where = f"messages.{k}.content.{j}"
                if part.type == "text":
                    parts.append(part.text or "")
                    continue
                if role != "user":
                    raise ApiError(400, "invalid_request_error", f"{where}: only user messages can hold images", where)
                if part.image_url is None:
                    raise ApiError(422, "invalid_request_error", f"{where}: image_url part without image_url", where)
                images.append(load_image_url(part.image_url.url, where, image_dir=image_dir, max_pixels=max_pixels))
                if len(images) > MAX_IMAGES:
                    raise ApiError(400, "invalid_request_error", f"more than {MAX_IMAGES} images in one request", where)
                parts.append(IMAGE)
        turns.append((role, parts))
    stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stops) > MAX_STOPS or any(len(s) > 256 for s in stops):
        raise ApiError(422, "invalid_request_error", f"stop: at most {MAX_STOPS} strings of 256 characters", "stop")
    return Conversation(turns, images, thinking(req), tuple(stops))


def load_image_url(url: str, where: str, *, image_dir: Path | None, max_pixels: int):
    """A `data:` URL (base64 PNG or JPEG), or a local file under the operator's --image-dir; never a remote fetch."""
    from edgekit.data.images import MAX_IMAGE_FILE_BYTES, decode_image

    if url.startswith("data:"):
        head, _, payload = url.partition(",")
        if not head.endswith(";base64") or head[5:-7] not in ("image/png", "image/jpeg", "image/jpg"):
            raise ApiError(
                400,
                "invalid_request_error",
                f"{where}: data URLs must be data:image/png;base64 or data:image/jpeg;base64",
                where,
            )
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, "invalid_request_error", f"{where}: invalid base64 in the data URL", where) from None
    elif url.startswith(("http://", "https://")):
        raise ApiError(400, "invalid_request_error", f"{where}: remote images are not fetched; send a data: URL", where)
    else:
        data = _read_local(url.removeprefix("file://"), where, image_dir, MAX_IMAGE_FILE_BYTES)
    try:
        return decode_image(data, where, max_pixels=max_pixels)
    except EdgekitError as e:
        raise ApiError(400, "invalid_request_error", str(e), where) from None


def _read_local(path: str, where: str, image_dir: Path | None, max_bytes: int) -> bytes:
    """Read a file below image_dir without following a link at any component (no `..`, no absolute escape)."""
    from edgekit.safe_files import open_beneath, open_dir_nofollow, read_fd

    if image_dir is None:
        raise ApiError(
            400,
            "invalid_request_error",
            f"{where}: local image paths are off (the server was started without --image-dir); send a data: URL",
            where,
        )
    root = image_dir.resolve()
    target = Path(path)
    rel = target.relative_to(root) if target.is_absolute() and target.is_relative_to(root) else None
    if target.is_absolute() and rel is None or ".." in target.parts:
        raise ApiError(400, "invalid_request_error", f"{where}: {path} is outside the allowed image folder", where)
    rel = rel if rel is not None else target
    root_fd = open_dir_nofollow(root)
    try:
        fd = open_beneath(root_fd, rel.as_posix(), label=where)
        try:
            return read_fd(fd, max_bytes=max_bytes, label=where)
        finally:
            os.close(fd)
    except EdgekitError as e:
        raise ApiError(400, "invalid_request_error", str(e), where) from None
    finally:
        os.close(root_fd)
