"""OpenAI-compatible request and response bodies (the subset a chat client uses).

Why strict bounds: every field the client controls is limited in type and size here, before
any guard or model sees it, so a malformed or oversized body is a 400, never a 5xx or an
allocation the server cannot afford. Unknown fields are ignored, as OpenAI's own server does,
so newer clients keep working.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_MESSAGES = 256
MAX_TEXT = 200_000
MAX_NEW_TOKENS = 4096


class TextPart(BaseModel):
    """One text part of a message whose content is a list (images are not supported)."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str = Field(max_length=MAX_TEXT)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: Union[str, list[TextPart], None] = Field(default=None)
    name: Optional[str] = Field(default=None, max_length=64)

    @field_validator("content")
    @classmethod
    def _bounded(cls, v: Any) -> Any:
        if isinstance(v, str) and len(v) > MAX_TEXT:
            raise ValueError(f"content longer than {MAX_TEXT} characters")
        if isinstance(v, list) and len(v) > 64:
            raise ValueError("at most 64 content parts")
        return v

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str = Field(min_length=1, max_length=200)
    max_tokens: Optional[int] = Field(default=None, ge=1, le=MAX_NEW_TOKENS)
    temperature: Optional[float] = Field(default=None, ge=0.0, le=2.0)
    top_p: Optional[float] = Field(default=None, gt=0.0, le=1.0)
    n: Optional[int] = Field(default=None, ge=1, le=1)
    stream: Optional[bool] = False
    stream_options: Optional[StreamOptions] = None
    stop: Union[str, list[str], None] = None
    seed: Optional[int] = Field(default=None, ge=0, le=2**63 - 1)
    user: Optional[str] = Field(default=None, max_length=256)

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: Any) -> Any:
        items = [v] if isinstance(v, str) else (v or [])
        if len(items) > 4 or any(not s or len(s) > 64 for s in items):
            raise ValueError("stop: at most 4 non-empty strings of at most 64 characters")
        return v

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class ChatCompletionRequest(_Sampling):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: Optional[int] = Field(default=None, ge=1, le=MAX_NEW_TOKENS)

    def new_tokens(self, default: int) -> int:
        return self.max_completion_tokens or self.max_tokens or default


class CompletionRequest(_Sampling):
    """``POST /v1/completions`` (one prompt string per request)."""

    prompt: Union[str, list[str]]
    echo: Optional[bool] = False

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: Any) -> Any:
        text = v if isinstance(v, str) else (v[0] if len(v) == 1 else None)
        if text is None:
            raise ValueError("prompt must be one string")
        if len(text) > MAX_TEXT:
            raise ValueError(f"prompt longer than {MAX_TEXT} characters")
        return v

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def new_tokens(self, default: int) -> int:
        return self.max_tokens or default


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: ResponseMessage
    finish_reason: str
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: Optional[str] = None


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: str
    logprobs: None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "strongroom"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: Optional[str] = None
    code: Optional[str] = None


class ErrorResponse(BaseModel):
    """Every error the gateway returns, in OpenAI's shape."""

    error: ErrorBody


class Health(BaseModel):
    status: Literal["ok"] = "ok"
