"""One config object builds one runtime; nothing is read from globals after that.

``RuntimeConfig.from_env()`` reads the environment (and is the only place that does);
tests build configs directly, each with its own key prefix and data dir.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from runtime.errors import ValidationFailed

STORE_SCHEMES = ("sqlite", "postgresql", "postgres")

EXEC_ENV_NAMES = ("PATH", "LANG", "LC_ALL", "TERM")
"""The server's variables an ``exec`` command sees (plus ``CODY_EXEC_ENV_ALLOW``); nothing else."""
DEFAULT_EXEC_ENV: dict[str, str] = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
_NEVER_TO_EXEC = frozenset({"OPENAI_API_KEY", "ANTHROPIC_API_KEY", "CODY_API_KEYS", "CODY_API_KEY",
                            "CODY_EVENTS_SECRET"})


class RuntimeConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # where things live
    data_dir: Path = Field(default_factory=lambda: Path.home() / ".cody")
    redis_url: str | None = None
    """None: start the embedded redis-server on a unix socket in ``data_dir``. Else
    ``redis://host:port/db``, ``unix:///path.sock`` or a Redis Cluster,
    ``redis+cluster://host:port,host:port,...`` (seed nodes)."""
    key_prefix: str = "cody"
    persist_shards: int = Field(default=16, ge=1, le=1024)
    """Shards of the persist queue and the live-run registry (runtime/keys.py). The same on
    every node of one deployment; change it only with the queue drained."""
    store_path: Path | None = None
    """None: ``data_dir / "cody.db"``."""
    store_url: str | None = None
    """None: SQLite at ``effective_store_path``; ``sqlite:///path``: SQLite there;
    ``postgresql://…``: PostgreSQL (runtime/store/postgres.py), for several nodes."""
    store_pool_size: int = Field(default=8, ge=1)
    """PostgreSQL connections per node (and worker threads that use them)."""
    store_timeout_s: float = Field(default=3.0, gt=0)
    """PostgreSQL: a call that gets no connection within this fails with 503."""

    # HTTP
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 1_048_576
    keepalive_s: float = 15.0

    # providers
    replay: bool = True
    fixtures_dir: Path | None = None
    replay_delay_s: float = 0.0
    """Pause between SSE blocks of a replayed stream (0: as fast as possible)."""
    replay_record_requests: bool = False
    """Append every provider request a replayed turn would send to
    ``data_dir/replay-requests.jsonl`` (tests read it; off by default: it grows forever)."""
    openai_api_key: str | None = None
    openai_base_url: str = "https://api.openai.com/v1"
    anthropic_api_key: str | None = None
    anthropic_base_url: str = "https://api.anthropic.com"
    # -- catalogue (runtime/catalogue.py: the providers and models are there, not here)
    config_path: Path | None = None
    """``CODY_CONFIG``: the catalogue file; None: ``data_dir / "cody.toml"``, which need not
    exist (a path the user named must)."""
    default_model: str | None = None
    """The model of a run that names neither model nor provider: a catalogue id or
    ``<provider>/<name>``; None: ``default_provider``'s default model, else gpt-5-mini."""
    default_provider: str | None = None
    """With no ``default_model``: the provider whose default model such a run gets."""
    replay_auto: bool = False
    """``replay`` was chosen by default (no ``CODY_REPLAY``, ``--replay`` or ``--live``): the
    factory then also goes live when the key of a provider of the catalogue file is set."""
    environ: dict[str, str] = Field(default_factory=dict, repr=False, exclude=True)
    """The environment the catalogue's providers read their keys from (the variables that
    ``api_key_env`` names are only known once the file is read); never shown or dumped."""
    provider_connect_timeout_s: float = 10.0
    provider_idle_timeout_s: float = 60.0
    provider_max_retries: int = 3
    provider_backoff_base_s: float = 0.5
    provider_backoff_max_s: float = 8.0
    provider_pools: int = 16
    """HTTP connection pools to the providers (a run uses one): smaller pools, cheaper
    bookkeeping per request with hundreds of streams open."""

    # tools and turns
    workspace_root: Path = Field(default_factory=Path.cwd)
    enabled_tools: tuple[str, ...] = ("read_file", "list_dir")
    exec_enabled: bool = False
    tool_timeout_s: float = 30.0
    tool_output_cap: int = 65_536
    max_iterations: int = 50
    default_reasoning_effort: Literal["low", "medium", "high"] = "medium"
    default_thinking_budget: int = 2048

    # streams, fan-out, persistence
    subscriber_buffer: int = 1024
    coalesce_max_chars: int = 8192
    slow_step_ms: float = 0.0
    """Log every trio task step that holds the event loop this long (0: off)."""
    """Deltas of one item that queue up while a run's append is in flight are written as one
    event of at most this many characters (runtime/coalesce.py); 0 writes one per token."""
    retention_s: int = 86_400
    projector_claim_idle_s: float = 30.0
    projector_block_ms: int = 1000
    projector_linger_ms: int = 50
    """After finding checkpoints, wait this long for more before writing them all at once."""
    reader_pool_size: int = 64
    append_deadline_s: float = 30.0
    """A run whose append fails mid-turn (Redis down) keeps retrying it this long, then ends
    its turn RUN_FAILED."""
    ending_deadline_s: float = 10.0
    """Every ending of a run (complete, error, aborted) is written within this, retries
    included; past it the run is left for the janitor (RUN_ORPHANED once Redis is back)."""
    drain_timeout_s: float = 10.0
    """SIGTERM exits within this, whatever state Redis is in; runs not ended by then are
    left for the janitor (RUN_ORPHANED)."""
    writer_pool_size: int = 32

    # nodes
    lease_ttl_s: int = Field(default=15, ge=1)
    """A node's lease: its runs are orphaned this long after it stops refreshing it."""
    janitor_interval_s: float = Field(default=5.0, gt=0)
    """How often each node's janitor refreshes its lease and sweeps for orphaned runs."""

    # -- scale-out
    workers: int = Field(default=1, ge=1, le=256)
    """``cody serve --workers N``: N node processes on one port (SO_REUSEPORT), one Redis and
    one store (api/workers.py)."""
    tail_poll_ms: int = Field(default=10, ge=1, le=1000)
    """On a Redis Cluster, the pause between rounds of a node's multiplexed tail that found
    nothing (a remote SSE subscriber lags by up to this); one Redis blocks instead."""

    # the exec tool's confinement (actors/tools/sandbox.py; README, Security); 0: no limit
    exec_env: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_EXEC_ENV), repr=False)
    """What a command's environment starts from (HOME and TMPDIR are set per command)."""
    exec_user: str | None = None
    """Run commands as this user (name, uid or uid:gid); the server must be root for it."""
    exec_cpu_s: int = 60
    exec_memory_mb: int = 4096
    exec_max_processes: int = 256
    """RLIMIT_NPROC counts every process of the user (the server's threads too); root is exempt."""
    exec_max_file_mb: int = 1024
    exec_max_open_files: int = 1024

    # -- policies (idempotent submits, thread policies: runtime/idempotency.py,
    # runtime/thread_policy.py)
    idempotency_ttl_s: int = Field(default=86_400, ge=1)
    """An accepted submit's response is kept under its ``Idempotency-Key`` this long."""
    multitask_strategy: Literal["parallel", "reject", "enqueue", "interrupt"] = "parallel"
    """What a turn sent to a thread with one running does, when its submit does not say."""
    thread_poll_ms: int = Field(default=100, ge=5)
    """How often a node looks in Redis for its queued runs' turn and for interrupts of its
    runs sent by other nodes (a run queued behind one on the same node starts at once)."""

    # -- security (README, Security)
    api_keys: tuple[tuple[str, str], ...] = Field(default=(), repr=False)
    """``(tenant, token)`` pairs from CODY_API_KEYS / CODY_API_KEYS_FILE; empty: no auth,
    every request is tenant ``default`` and the server binds to loopback only."""
    insecure: bool = False
    """Allow a non-loopback bind without API keys (``--insecure``)."""
    events_secret: str | None = Field(default=None, repr=False)
    """HMAC key of the signed ``events_url`` tokens; None: generated once per data dir into
    ``events-secret`` (0600), so workers sharing a data dir accept each other's tokens."""
    events_token_ttl_s: int = Field(default=900, ge=1)
    cors_origins: tuple[str, ...] = ()
    """Origins (``scheme://host[:port]``) allowed cross-site; empty: CORS closed."""
    max_json_depth: int = Field(default=32, ge=1, le=1000)
    """The deepest nesting of arrays/objects a JSON body may have (400 beyond)."""
    sse_send_timeout_s: float = Field(default=30.0, ge=0)
    """A connection whose client reads nothing for this long is dropped (TCP_USER_TIMEOUT on
    the listening socket; 0: never)."""
    max_live_runs: int = Field(default=0, ge=0)
    """Live runs per node (429 beyond; 0: no limit)."""
    max_sse_clients: int = Field(default=0, ge=0)
    """Open event streams per node (429 beyond; 0: no limit)."""
    max_tenant_runs: int = Field(default=0, ge=0)
    """Concurrent runs per tenant, across all nodes (counted in Redis; 0: no limit)."""

    @property
    def effective_store_path(self) -> Path:
        return self.store_path or self.data_dir / "cody.db"

    @property
    def effective_config_path(self) -> Path:
        return self.config_path or self.data_dir / "cody.toml"

    def provider_env(self) -> dict[str, str]:
        """What the catalogue reads keys and the built-in base URLs from: ``environ``, with
        this config's own OpenAI / Anthropic settings over it (tests set those directly)."""
        env = dict(self.environ)
        for var, value in (("OPENAI_API_KEY", self.openai_api_key),
                           ("OPENAI_BASE_URL", self.openai_base_url),
                           ("ANTHROPIC_API_KEY", self.anthropic_api_key),
                           ("ANTHROPIC_BASE_URL", self.anthropic_base_url)):
            if value:
                env[var] = value
        return env

    @property
    def effective_tools(self) -> tuple[str, ...]:
        tools = [t for t in self.enabled_tools if t != "exec"]
        if self.exec_enabled:
            tools.append("exec")
        return tuple(tools)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> RuntimeConfig:
        """Settings from ``CODY_*`` and the SDKs' ``OPENAI_*`` / ``ANTHROPIC_*`` variables.

        Backend mode: ``CODY_REPLAY=1`` forces replay, ``CODY_REPLAY=0`` forces live; unset,
        replay is chosen when neither API key is set, so a fresh server streams out of the box.
        """
        e = dict(os.environ if env is None else env)
        values: dict[str, object] = {}

        def put(name: str, var: str, conv: type = str) -> None:
            raw = e.get(var)
            if raw is None or raw == "":
                return
            try:
                values[name] = conv(raw)
            except ValueError as exc:
                raise ValidationFailed(f"{var}: cannot parse {raw!r}",
                                       details={"field": var}) from exc

        put("data_dir", "CODY_DATA_DIR", Path)
        put("redis_url", "CODY_REDIS_URL")
        put("key_prefix", "CODY_KEY_PREFIX")
        put("persist_shards", "CODY_PERSIST_SHARDS", int)
        put("lease_ttl_s", "CODY_LEASE_TTL_S", int)
        put("janitor_interval_s", "CODY_JANITOR_INTERVAL_S", float)
        # -- scale-out
        put("workers", "CODY_WORKERS", int)
        put("tail_poll_ms", "CODY_TAIL_POLL_MS", int)

        # -- policies
        put("idempotency_ttl_s", "CODY_IDEMPOTENCY_TTL_S", int)
        put("multitask_strategy", "CODY_MULTITASK_STRATEGY")
        put("thread_poll_ms", "CODY_THREAD_POLL_MS", int)
        put("store_path", "CODY_STORE_PATH", Path)
        put("store_url", "CODY_STORE_URL")
        store_scheme = str(values.get("store_url", "sqlite:")).split(":", 1)[0].lower()
        if store_scheme not in STORE_SCHEMES:  # the URL itself may hold a password: not shown
            raise ValidationFailed(f"CODY_STORE_URL: unknown scheme {store_scheme!r}; use "
                                   "sqlite:///path or postgresql://…",
                                   details={"field": "CODY_STORE_URL"})
        put("store_pool_size", "CODY_STORE_POOL_SIZE", int)
        put("store_timeout_s", "CODY_STORE_TIMEOUT_S", float)
        put("host", "CODY_HOST")
        put("port", "CODY_PORT", int)
        put("keepalive_s", "CODY_KEEPALIVE_S", float)
        put("max_body_bytes", "CODY_MAX_BODY_BYTES", int)
        put("fixtures_dir", "CODY_FIXTURES_DIR", Path)
        put("replay_delay_s", "CODY_REPLAY_DELAY_S", float)
        put("openai_api_key", "OPENAI_API_KEY")
        put("openai_base_url", "OPENAI_BASE_URL")
        put("anthropic_api_key", "ANTHROPIC_API_KEY")
        put("anthropic_base_url", "ANTHROPIC_BASE_URL")
        put("workspace_root", "CODY_WORKSPACE", Path)
        put("tool_timeout_s", "CODY_TOOL_TIMEOUT_S", float)
        put("max_iterations", "CODY_MAX_ITERATIONS", int)
        put("retention_s", "CODY_RETENTION_S", int)
        put("provider_idle_timeout_s", "CODY_PROVIDER_IDLE_TIMEOUT_S", float)
        put("provider_backoff_base_s", "CODY_PROVIDER_BACKOFF_BASE_S", float)
        put("provider_max_retries", "CODY_PROVIDER_MAX_RETRIES", int)
        put("coalesce_max_chars", "CODY_COALESCE_MAX_CHARS", int)
        put("slow_step_ms", "CODY_SLOW_STEP_MS", float)
        put("projector_linger_ms", "CODY_PROJECTOR_LINGER_MS", int)
        put("drain_timeout_s", "CODY_DRAIN_TIMEOUT_S", float)
        put("append_deadline_s", "CODY_APPEND_DEADLINE_S", float)
        put("ending_deadline_s", "CODY_ENDING_DEADLINE_S", float)
        put("default_provider", "CODY_DEFAULT_PROVIDER")
        put("default_model", "CODY_DEFAULT_MODEL")
        put("config_path", "CODY_CONFIG", Path)
        values["environ"] = e
        put("exec_user", "CODY_EXEC_USER")
        put("exec_cpu_s", "CODY_EXEC_CPU_S", int)
        put("exec_memory_mb", "CODY_EXEC_MEMORY_MB", int)
        put("exec_max_processes", "CODY_EXEC_MAX_PROCESSES", int)
        put("exec_max_file_mb", "CODY_EXEC_MAX_FILE_MB", int)
        put("exec_max_open_files", "CODY_EXEC_MAX_OPEN_FILES", int)
        allow = [n.strip() for n in e.get("CODY_EXEC_ENV_ALLOW", "").split(",") if n.strip()]
        if secret := _NEVER_TO_EXEC.intersection(allow):
            raise ValidationFailed(f"CODY_EXEC_ENV_ALLOW: {sorted(secret)[0]} is a secret",
                                   details={"field": "CODY_EXEC_ENV_ALLOW"})
        values["exec_env"] = {n: e[n] for n in (*EXEC_ENV_NAMES, *allow) if n in e}
        for name, var in (("exec_enabled", "CODY_EXEC"),
                          ("replay_record_requests", "CODY_REPLAY_RECORD_REQUESTS")):
            if e.get(var):
                values[name] = e[var].lower() in ("1", "true", "yes", "on")
        replay_env = e.get("CODY_REPLAY")
        if replay_env:
            values["replay"] = replay_env.lower() in ("1", "true", "yes", "on")
        else:
            values["replay"] = not (e.get("OPENAI_API_KEY") or e.get("ANTHROPIC_API_KEY"))
            values["replay_auto"] = True
        _security_from_env(e, values, put)
        values.update(overrides)
        if "replay" in overrides:  # --replay / --live
            values["replay_auto"] = False
        return cls.model_validate(values)


# -- security


_TENANT = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
"""A tenant name is part of Redis keys (``{tenant}`` a hash tag) and of events tokens."""


def parse_api_keys(text: str, source: str) -> tuple[tuple[str, str], ...]:
    """``tenant:token`` pairs, comma- or line-separated (blank lines and ``#`` comments
    skipped). A token maps to one tenant; a tenant may have several tokens."""
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for n, raw in enumerate(text.replace(",", "\n").splitlines(), 1):
        entry = raw.strip()
        if not entry or entry.startswith("#"):
            continue
        tenant, sep, token = entry.partition(":")
        tenant, token = tenant.strip(), token.strip()
        if not sep or not tenant or not token:  # never echo the entry: it may be a token
            raise ValidationFailed(f"{source}: entry {n} is not tenant:token",
                                   details={"field": source})
        if not _TENANT.match(tenant):
            raise ValidationFailed(f"{source}: entry {n}: a tenant is 1-64 of A-Z a-z 0-9 _ . -",
                                   details={"field": source})
        if len(token) < 16:
            raise ValidationFailed(f"{source}: the token of tenant {tenant!r} is shorter than "
                                   "16 characters", details={"field": source})
        if token in seen:
            raise ValidationFailed(f"{source}: a token is listed twice",
                                   details={"field": source})
        seen.add(token)
        pairs.append((tenant, token))
    return tuple(pairs)


def _security_from_env(e: Mapping[str, str], values: dict[str, object],
                       put: Callable[..., None]) -> None:
    keys: list[tuple[str, str]] = []
    if e.get("CODY_API_KEYS"):
        keys.extend(parse_api_keys(e["CODY_API_KEYS"], "CODY_API_KEYS"))
    if e.get("CODY_API_KEYS_FILE"):
        path = Path(e["CODY_API_KEYS_FILE"])
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValidationFailed(f"CODY_API_KEYS_FILE: cannot read {path} ({exc.strerror})",
                                   details={"field": "CODY_API_KEYS_FILE"}) from exc
        keys.extend(parse_api_keys(text, "CODY_API_KEYS_FILE"))
    if keys:
        values["api_keys"] = tuple(keys)
    if e.get("CODY_CORS_ORIGINS"):
        values["cors_origins"] = tuple(o.strip().rstrip("/") for o in
                                       e["CODY_CORS_ORIGINS"].split(",") if o.strip())
    if e.get("CODY_INSECURE"):
        values["insecure"] = e["CODY_INSECURE"].lower() in ("1", "true", "yes", "on")
    put("events_secret", "CODY_EVENTS_SECRET")
    put("events_token_ttl_s", "CODY_EVENTS_TOKEN_TTL_S", int)
    put("max_json_depth", "CODY_MAX_JSON_DEPTH", int)
    put("sse_send_timeout_s", "CODY_SSE_SEND_TIMEOUT_S", float)
    put("max_live_runs", "CODY_MAX_LIVE_RUNS", int)
    put("max_sse_clients", "CODY_MAX_SSE_CLIENTS", int)
    put("max_tenant_runs", "CODY_MAX_TENANT_RUNS", int)
