"""Every knob of Hotline, one pydantic-settings class; each field is the env var HOTLINE_<NAME>."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REAL_TWILIO_API_URL = "https://api.twilio.com"
REAL_OPENAI_REALTIME_URL = "wss://api.openai.com/v1"
# Placeholder credentials: good enough for the simulators, refused by the real services.
DEV_ACCOUNT_SID = "AC" + "0" * 32
DEV_AUTH_TOKEN = "hotline-dev-auth-token"
DEV_OPENAI_KEY = "sk-hotline-simulator"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HOTLINE_", env_file=".env", extra="ignore", frozen=True
    )

    # Where Twilio reaches us: TwiML's wss://…/twilio/media and signature checks derive from it.
    public_url: str = "http://127.0.0.1:8000"
    host: str = "127.0.0.1"
    port: int = 8000

    twilio_account_sid: str = DEV_ACCOUNT_SID
    twilio_auth_token: SecretStr = SecretStr(DEV_AUTH_TOKEN)
    twilio_api_url: str = REAL_TWILIO_API_URL
    # Local development only; a disabled check is logged loudly at start-up.
    twilio_validate_signatures: bool = True

    openai_api_key: SecretStr = SecretStr(DEV_OPENAI_KEY)
    openai_realtime_url: str = REAL_OPENAI_REALTIME_URL
    openai_model: str = "gpt-realtime"
    openai_transcription_model: str = "gpt-4o-mini-transcribe"

    # Bearer token for /api/*; unset leaves the API open (fine on localhost only).
    api_token: SecretStr | None = None
    # Server secret for business API keys (`hotline keys create`): only HMAC-SHA256(secret,
    # key) is stored. Unset: no key can be created, and none is accepted.
    key_secret: SecretStr | None = None

    database_url: str = "sqlite+aiosqlite:///./hotline.db"
    redis_url: str | None = None

    # A fleet (README "Running in production"): this instance's name in timelines and logs
    # (unset: hostname:port), and the URL Twilio reaches this instance itself at, past the
    # load balancer (a path: on public_url). Set, a call's TwiML sends its media stream here, to
    # the instance that took the webhook and holds its warm engine session; unset, through
    # public_url to any instance (the cross-instance path: a cold engine session).
    instance_id: str | None = None
    instance_url: str | None = None

    # The greeting's critical path. Engine sessions are prepared by the voice webhook (warm);
    # greetings are rendered to audio ahead and played from memory at `start` (cache).
    warm_sessions: bool = True
    warm_session_ttl_s: float = Field(30.0, gt=0, description="unclaimed warm sessions close")
    # Connecting to the engine (at the start, or again after a drop mid-call): the first
    # attempt and up to two retries, at once, all within this budget. Under 1 s so that a
    # caller with nothing playing (no cached greeting) hears the apology within 1 s.
    engine_connect_budget_ms: int = Field(900, ge=50, le=60000)
    greeting_cache: bool = True
    greeting_cache_dir: str = "./greeting-cache"
    # Instructions for a live greeting: "compact" (fast) then the full prompt, or "full".
    greeting_prompt: Literal["compact", "full"] = "compact"
    # For comparison only (the benchmark's `naive` strategy, a one-prompt setup): the full
    # prompt itself carries the greeting ("Open the call with exactly this greeting: …")
    # instead of saying it has been said, so that a greeting asked for with the full prompt
    # is the greeting. Meant with greeting_prompt=full and no greeting cache.
    greeting_in_full_prompt: bool = False

    # Call behaviour defaults (a business may not override these yet).
    warmup_ms: int = Field(800, ge=0, description="caller-first: pickup noise dropped")
    echo_cooldown_ms: int = Field(400, ge=0, description="after playback ends, no barge-in")
    plan_ttl_s: int = Field(120, ge=5, description="how long a CallPlan waits for its stream")
    vad_threshold: float = Field(0.5, ge=0.0, le=1.0)
    vad_silence_ms: int = Field(500, ge=100)
    vad_prefix_padding_ms: int = Field(300, ge=0)
    # Call control (issue 4). A local speech gate decides barge-in: caller sound shorter than
    # this while the agent is audible (a cough, the agent's own echo) does not cut it off.
    barge_in_min_speech_ms: int = Field(200, ge=20, le=2000)
    # Caller silence: one nudge ("are you still there?"), then a goodbye and hang-up.
    silence_nudge_s: float = Field(8.0, gt=0)
    silence_hangup_s: float = Field(20.0, gt=0)
    # Outbound answering-machine detection (Twilio async AMD, DetectMessageEnd). The greeting
    # starts at once and a machine's verdict cuts it for the voicemail; a business or
    # template with `greeting_timing: after_amd` holds it for the verdict, at most this long.
    amd: bool = True
    amd_greeting_cap_ms: int = Field(1500, ge=0, le=10000)
    # A machine whose message never ends (no machine_end_* verdict this long after it was
    # recognised) is hung up without a voicemail.
    amd_message_end_cap_ms: int = Field(30000, ge=1000, le=120000)
    # A goodbye (end_call, silence, time limit) whose audio never finishes playing does not
    # hold the line: the call is hung up this long after it was asked for.
    goodbye_cap_s: float = Field(10.0, gt=0)
    # Capacity (issue 12): 0 (off) sends each caller frame to the engine as it came, one
    # append per 20 ms frame. On, the caller's quiet frames (no caller turn open, under the
    # speech gate's threshold) go in one append per this many ms, re-packed (the μ-law bytes
    # unchanged); speech goes at once. 0, or a multiple of 20 from 40 to 200.
    quiet_audio_batch_ms: int = 0
    # HMAC-SHA256 key for the X-Hotline-Signature header on HTTP tool requests. Unset: HTTP
    # tools answer the model with an error instead of calling out unsigned.
    tool_signing_secret: SecretStr | None = None

    # Call time runs this many times faster than the wall clock (timers, positions, the
    # timeline). 1 in production; tests run the simulators and the server faster, together.
    clock_speed: float = Field(1.0, gt=0)

    # How long the config cache trusts itself before reloading businesses from the store.
    config_refresh_s: float = Field(30.0, gt=0)
    # Files Hotline keeps: recorded messages' audio (messages/), calls' recordings
    # (recordings/), and the like.
    data_dir: str = "./hotline-data"
    # How often the server deletes recordings past their business's retention.
    recording_sweep_interval_s: float = Field(3600.0, gt=0)
    # When no engine can be had, the caller hears an apology and leaves a message after the
    # tone: recorded at most this long, and ended by this much silence.
    message_max_s: float = Field(120.0, ge=5, le=600)
    message_end_silence_s: float = Field(4.0, ge=0.5, le=30)
    # The journal: call records and status callbacks, on disk until the store has them
    # (replayed at the next start). Unset: journal.jsonl in data_dir.
    journal_path: str | None = None
    log_level: str = "INFO"
    # "json": one JSON object per line (time, level, logger, message; call_sid and business
    # on a call's lines). Secrets are redacted from every line either way.
    log_format: Literal["text", "json"] = "text"

    # Running in production (README "Running in production"). On SIGTERM the instance
    # drains: /readyz fails, new calls fail over, calls running may go on this long (wall
    # clock), then each gets a goodbye and a hang-up.
    drain_timeout_s: float = Field(300.0, gt=0)
    # During a drain, a new call is redirected here (TwiML <Redirect>); unset, it hears a
    # short apology and is hung up.
    failover_url: str | None = None
    # /readyz waits for every inbound greeting to be rendered at most this long after start
    # (wall clock); after that it is ready anyway, and says which greetings are missing.
    ready_greetings_wait_s: float = Field(20.0, ge=0)

    @field_validator("quiet_audio_batch_ms")
    @classmethod
    def _quiet_audio_batch(cls, value: int) -> int:
        if value != 0 and not (40 <= value <= 200 and value % 20 == 0):
            raise ValueError("must be 0 (off) or a multiple of 20 from 40 to 200 (ms of "
                             f"20 ms frames in one append), not {value}")
        return value

    @property
    def media_stream_url(self) -> str:
        """The wss:// URL Twilio opens for the media stream (no query string: Twilio forbids it)."""
        return _stream_url(self.public_url)

    @property
    def instance_stream_url(self) -> str | None:
        """This instance's own media stream URL (HOTLINE_INSTANCE_URL), if it has one; a
        path is on the public URL (the load balancer routes it to this instance)."""
        if not self.instance_url:
            return None
        if self.instance_url.startswith("/"):
            return _stream_url(self.public_url.rstrip("/") + self.instance_url)
        return _stream_url(self.instance_url)

    @property
    def instance_name(self) -> str:
        return self.instance_id or f"{socket.gethostname()}:{self.port}"

    @property
    def journal_file(self) -> Path:
        if self.journal_path:
            return Path(self.journal_path)
        return Path(self.data_dir) / "journal.jsonl"

    def public(self, path: str) -> str:
        return self.public_url.rstrip("/") + path


def _stream_url(http_url: str) -> str:
    base = http_url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    return base + "/twilio/media"


def load_settings() -> Settings:
    return Settings()
