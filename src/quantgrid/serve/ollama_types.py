"""Request bodies and response shapes of the Ollama API (``/api/*``), as pydantic models.

Like Ollama, unknown fields are ignored. Fields Ollama defines but quantgrid does not
implement are declared, so :meth:`refusals` answers 400 naming the field when one is
set to anything but its no-op value. Numbers must be finite (``Infinity`` is 400).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from quantgrid.serve.errors import UnsupportedParameter
from quantgrid.serve.generation import make_params

MAX_TOP_LOGPROBS = 20


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, populate_by_name=True)


# Options that change sampling, refused unless at the value that makes them a no-op.
_NO_OP_OPTIONS = {"top_k": (0,), "repeat_penalty": (1.0,), "presence_penalty": (0.0,), "frequency_penalty": (0.0,),
                  "mirostat": (0,), "min_p": (0.0,), "typical_p": (1.0,), "tfs_z": (1.0,), "penalize_newline": ()}


class OllamaOptions(_Body):
    temperature: float = Field(0.8, ge=0.0, le=100.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    num_predict: int | None = Field(None, ge=-2, description="-1 or -2: up to the server's default limit")
    stop: list[StrictStr] | None = None
    seed: int | None = None
    # Runtime settings of Ollama's own runner: accepted, without effect here (documented).
    num_ctx: int | None = Field(None, ge=1)
    num_batch: int | None = None
    num_gpu: int | None = None
    main_gpu: int | None = None
    num_thread: int | None = None
    num_keep: int | None = None
    use_mmap: bool | None = None
    low_vram: bool | None = None
    numa: bool | None = None
    repeat_last_n: int | None = None
    # Refused unless at their no-op value.
    top_k: int | None = None
    repeat_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    mirostat: int | None = None
    mirostat_tau: float | None = None
    mirostat_eta: float | None = None
    min_p: float | None = None
    typical_p: float | None = None
    tfs_z: float | None = None
    penalize_newline: bool | None = None

    def refusals(self) -> None:
        for name, ok in _NO_OP_OPTIONS.items():
            v = getattr(self, name)
            if v is not None and v not in ok:
                raise UnsupportedParameter(f"options.{name}", f"options.{name}={v!r} is not supported; quantgrid "
                                           "samples with temperature, top_p, seed and stop only",
                                           hint=f"leave options.{name} out")


class OllamaMessage(_Body):
    role: Literal["system", "user", "assistant", "tool"]
    content: StrictStr = ""
    images: list[Any] | None = None
    tool_calls: list[Any] | None = None
    thinking: StrictStr | None = None

    def text(self, where: str) -> str:
        if self.images:
            raise UnsupportedParameter(f"{where}.images", "images are not supported: the model reads text only",
                                       hint="send text alone")
        if self.tool_calls or self.role == "tool":
            raise UnsupportedParameter(f"{where}.role", "tool messages are not supported",
                                       hint="send plain user/assistant turns")
        return self.content


class _Generating(_Body):
    model: StrictStr
    stream: bool = True
    options: OllamaOptions = Field(default_factory=OllamaOptions)
    format: Any = None
    keep_alive: Any = None  # models stay loaded; accepted, without effect
    think: Any = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)

    def _common_refusals(self) -> None:
        self.options.refusals()
        if self.format not in (None, ""):
            raise UnsupportedParameter("format", "format is not supported: quantgrid does not constrain decoding "
                                       "to JSON or a schema",
                                       hint="ask for JSON in the prompt and validate the answer yourself")
        if self.think not in (None, False):
            raise UnsupportedParameter("think", "think is not supported: the model has no thinking mode",
                                       hint="leave think out")

    @property
    def k(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def params(self, default_max: int):
        o = self.options
        n = o.num_predict if o.num_predict and o.num_predict > 0 else default_max
        return make_params(max_tokens=n, temperature=o.temperature, top_p=o.top_p, seed=o.seed,
                           stop=list(o.stop or []), logprobs=self.k)


class OllamaGenerateRequest(_Generating):
    prompt: StrictStr = ""
    system: StrictStr | None = None
    raw: bool = False
    suffix: StrictStr | None = None
    template: StrictStr | None = None
    context: list[int] | None = None
    images: list[Any] | None = None

    def refusals(self) -> None:
        self._common_refusals()
        for name, hint in (("suffix", "leave it out"), ("template", "use raw: true with your own prompt"),
                           ("context", "send the conversation with /api/chat instead"),
                           ("images", "send text alone")):
            if getattr(self, name):
                raise UnsupportedParameter(name, f"{name} is not supported", hint=hint)


class OllamaChatRequest(_Generating):
    messages: list[OllamaMessage] = Field(default_factory=list)
    tools: list[Any] | None = None

    def refusals(self) -> None:
        self._common_refusals()
        if self.tools:
            raise UnsupportedParameter("tools", "tools are not supported: quantgrid serves no tool calling",
                                       hint="describe the tools in the prompt instead")

    def texts(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.text(f"messages[{i}]")} for i, m in enumerate(self.messages)]


class OllamaEmbedRequest(_Body):
    model: StrictStr
    input: StrictStr | list[StrictStr] = ""
    truncate: bool = True
    dimensions: int | None = Field(None, ge=1)
    options: OllamaOptions | None = None
    keep_alive: Any = None


class OllamaEmbeddingsRequest(_Body):
    """The older single-text route, ``/api/embeddings``."""

    model: StrictStr
    prompt: StrictStr = ""
    options: OllamaOptions | None = None
    keep_alive: Any = None


class OllamaShowRequest(_Body):
    model: StrictStr | None = None
    name: StrictStr | None = None  # older clients
    verbose: bool = False

    @property
    def which(self) -> str:
        if not (self.model or self.name):
            raise UnsupportedParameter("model", "model is required", hint='send {"model": "NAME"}')
        return self.model or self.name or ""


# ---------------------------------------------------------------------- responses


class Details(BaseModel):
    parent_model: str = ""
    format: str
    family: str
    families: list[str]
    parameter_size: str
    quantization_level: str


class TagModel(BaseModel):
    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: Details


class Tags(BaseModel):
    models: list[TagModel]


class PsModel(TagModel):
    expires_at: str
    size_vram: int
    context_length: int


class Ps(BaseModel):
    models: list[PsModel]


class Show(BaseModel):
    modelfile: str
    parameters: str
    template: str
    system: str = ""
    details: Details
    model_info: dict[str, Any]
    capabilities: list[str]
    modified_at: str
    license: str = ""


class Version(BaseModel):
    version: str


class Embed(BaseModel):
    model: str
    embeddings: list[list[float]]
    total_duration: int
    load_duration: int
    prompt_eval_count: int


class Embeddings(BaseModel):
    embedding: list[float]
