"""Request bodies and response shapes of the OpenAI API (``/v1/*``), as pydantic models.

Bodies forbid unknown fields (OpenAI answers 400 "Unrecognized request argument" too) and
non-finite numbers. Fields OpenAI defines but quantgrid does not implement are declared,
so that :meth:`refusals` can answer 400 naming the field whenever one is set to anything
but its no-op value, instead of dropping it silently.
"""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from quantgrid.serve.errors import UnsupportedParameter
from quantgrid.serve.generation import make_params

MAX_N = 8  # choices per request
MAX_TOP_LOGPROBS = 20  # OpenAI's own limit


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    type: StrictStr
    text: StrictStr | None = None


class ChatMessage(_Body):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: StrictStr | list[ContentPart] | None = ""
    name: StrictStr | None = None
    tool_calls: list[Any] | None = None
    tool_call_id: StrictStr | None = None
    refusal: StrictStr | None = None

    def text(self, where: str) -> str:
        if self.tool_calls or self.role == "tool" or self.tool_call_id:
            raise UnsupportedParameter(f"{where}.role", "tool messages and tool_calls are not supported: "
                                       "quantgrid serves no tool calling", hint="send plain user/assistant turns")
        if isinstance(self.content, list):
            out = []
            for j, p in enumerate(self.content):
                if p.type != "text" or p.text is None:
                    raise UnsupportedParameter(f"{where}.content[{j}].type",
                                               f"content parts of type {p.type!r} are not supported; "
                                               "only text parts are", hint="send the text alone")
                out.append(p.text)
            return "".join(out)
        return self.content or ""


class StreamOptions(_Body):
    include_usage: bool = False
    include_obfuscation: bool | None = None  # OpenAI's padding switch; nothing to pad here


class _Sampling(_Body):
    model: StrictStr
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: StrictStr | list[StrictStr] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=MAX_N, description="choices to generate (each one an engine row)")
    user: StrictStr | None = Field(None, description="end-user id: keeps an A/B arm sticky")
    ignore_eos: bool = Field(False, description="vLLM's extension: keep generating past end-of-text, up to "
                                                "max_tokens (load tests, benchmarks)")
    # Accepted and without effect on the answer (documented).
    metadata: dict[str, StrictStr] | None = None
    service_tier: StrictStr | None = None
    prompt_cache_key: StrictStr | None = None
    safety_identifier: StrictStr | None = None
    # Refused unless at their no-op value.
    logit_bias: dict[str, float] | None = None
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def _common_refusals(self) -> None:
        if self.logit_bias:
            raise UnsupportedParameter("logit_bias", "logit_bias is not supported", hint="leave it out")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                raise UnsupportedParameter(name, f"{name} is not supported (only 0)", hint=f"leave {name} out")

    def params(self, default_max: int, logprobs: int | None):
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return make_params(max_tokens=self.max_tokens or default_max, temperature=self.temperature,
                           top_p=self.top_p, seed=self.seed, stop=stop, logprobs=logprobs,
                           ignore_eos=self.ignore_eos)


class CompletionRequest(_Sampling):
    prompt: StrictStr | list[StrictStr]
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's default for completions
    logprobs: int | None = Field(None, ge=0, le=5, description="log-probabilities of the k most likely tokens")
    echo: bool = False
    suffix: StrictStr | None = None
    best_of: int | None = Field(None, ge=1)

    def refusals(self) -> None:
        self._common_refusals()
        if self.echo:
            raise UnsupportedParameter("echo", "echo is not supported", hint="prepend the prompt yourself")
        if self.suffix:
            raise UnsupportedParameter("suffix", "suffix (insertion) is not supported", hint="leave it out")
        if self.best_of not in (None, 1, self.n):
            raise UnsupportedParameter("best_of", "best_of is not supported", hint="use n and pick yourself")
        prompts = [self.prompt] if isinstance(self.prompt, str) else self.prompt
        if len(prompts) != 1:
            raise UnsupportedParameter("prompt", "send one prompt per request",
                                       hint="make one call per prompt; concurrent calls are batched")


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: StrictStr


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    store: bool | None = None
    # Refused unless at their no-op value.
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    functions: list[Any] | None = None
    function_call: Any = None
    response_format: ResponseFormat | None = None
    modalities: list[StrictStr] | None = None
    audio: Any = None
    prediction: Any = None
    reasoning_effort: StrictStr | None = None
    verbosity: StrictStr | None = None
    web_search_options: Any = None

    def refusals(self) -> None:
        self._common_refusals()
        hint = "quantgrid serves no tool calling; describe the tools in the prompt instead"
        for name in ("tools", "functions"):
            if getattr(self, name):
                raise UnsupportedParameter(name, f"{name} is not supported", hint=hint)
        for name in ("tool_choice", "function_call"):
            if getattr(self, name) not in (None, "none", "auto"):
                raise UnsupportedParameter(name, f"{name}={getattr(self, name)!r} is not supported", hint=hint)
        if self.response_format is not None and self.response_format.type != "text":
            raise UnsupportedParameter("response_format", f"response_format {self.response_format.type!r} is "
                                       "not supported: quantgrid does not constrain decoding",
                                       hint="ask for JSON in the prompt and validate the answer yourself")
        if self.modalities not in (None, ["text"]) or self.audio is not None:
            raise UnsupportedParameter("modalities" if self.audio is None else "audio", "only text output",
                                       hint="leave modalities and audio out")
        for name in ("prediction", "reasoning_effort", "verbosity", "web_search_options"):
            if getattr(self, name) is not None:
                raise UnsupportedParameter(name, f"{name} is not supported", hint=f"leave {name} out")
        if self.store:
            raise UnsupportedParameter("store", "store is not supported: the server keeps no completions",
                                       hint="rate answers with POST /v1/feedback instead")
        if self.top_logprobs is not None and not self.logprobs:
            raise UnsupportedParameter("top_logprobs", "top_logprobs needs logprobs: true",
                                       hint="set logprobs to true")

    def texts(self) -> list[dict[str, str]]:
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text(f"messages[{i}]")}
                for i, m in enumerate(self.messages)]


class EmbeddingRequest(_Body):
    model: StrictStr
    input: StrictStr | list[StrictStr] = Field(description="one text or a list of texts")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: StrictStr | None = None


# ---------------------------------------------------------------------- responses


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "quantgrid"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0  # the engine keeps no prefix cache: every prompt token is computed
    audio_tokens: int = 0


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int = 0
    audio_tokens: int = 0
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = Field(default_factory=PromptTokensDetails)
    completion_tokens_details: CompletionTokensDetails = Field(default_factory=CompletionTokensDetails)

    @classmethod
    def of(cls, prompt: int, completion: int) -> Usage:
        return cls(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprobOut(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[TokenLogprobOut] | None
    refusal: list[TokenLogprobOut] | None = None


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"] | None
    logprobs: CompletionLogprobs | None = None


ChoiceT = TypeVar("ChoiceT", bound=BaseModel)


class _Response(BaseModel, Generic[ChoiceT]):
    """The envelope every generation response shares; each kind pins ``object`` (and may require
    ``usage``). Fields keep this order when a kind redeclares one, so the JSON reads as OpenAI's."""

    id: str
    object: str
    created: int
    model: str
    choices: list[ChoiceT]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class Completion(_Response[CompletionChoice]):
    object: Literal["text_completion"] = "text_completion"


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: str | None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: ChatLogprobs | None = None


class ChatCompletion(_Response[ChatChoice]):
    object: Literal["chat.completion"] = "chat.completion"
    usage: Usage


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: ChunkDelta
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: ChatLogprobs | None = None


class ChatCompletionChunk(_Response[ChunkChoice]):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
