"""CallPlan: everything one call needs, built before its media stream opens.

Built in the voice webhook (inbound) or when the call is placed (outbound), from the
in-memory config cache; the media loop only reads it.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from hotline.business import BusinessConfig, GreetingTiming, HttpTool
from hotline.prompts import compact_prompt, full_prompt, render_greeting

if TYPE_CHECKING:  # the call core reads plans without loading the settings machinery
    from hotline.settings import Settings


@dataclass(frozen=True, slots=True)
class CallPlan:
    call_sid: str
    token: str
    business_slug: str
    business_name: str
    direction: str  # "inbound" | "outbound"
    from_number: str
    to_number: str
    language: str
    voice: str
    greeting: str
    compact_instructions: str
    full_instructions: str
    bot_speaks_first: bool
    warmup_ms: int
    echo_cooldown_ms: int
    vad_threshold: float
    vad_silence_ms: int
    vad_prefix_padding_ms: int
    transcription_model: str
    # Wall clock (epoch ms) when the webhook arrived: the zero of the call's timeline,
    # shared across instances, unlike a monotonic clock.
    webhook_received_epoch_ms: float
    # "compact": greet with the compact prompt, then upgrade; "full": the full one throughout.
    greeting_prompt: str = "compact"
    # Set when the greeting's audio is cached: it plays from memory at `start`.
    greeting_audio_key: str | None = None
    # A live greeting asked for by whoever opens the engine session (the warm session in
    # the webhook's wake), not at `start`: its audio waits in the socket for the stream.
    greeting_prerequested: bool = False
    template_name: str | None = None
    variables: dict[str, str] = field(default_factory=dict)
    # -- call control (issue 4), copied from the business and the settings ------------------
    tools: tuple[str, ...] = ()  # enabled built-in tools
    http_tools: tuple[HttpTool, ...] = ()
    transfer_number: str | None = None
    timezone: str = "UTC"
    opening_hours: tuple[tuple[str, str], ...] = ()
    dtmf_actions: tuple[tuple[str, str], ...] = ()
    max_duration_ms: int = 600_000
    silence_nudge_ms: int = 8_000
    silence_hangup_ms: int = 20_000
    barge_in_min_speech_ms: int = 200
    goodbye_cap_ms: int = 10_000
    # Outbound with async AMD. The greeting starts at once unless `greeting_timing` holds it
    # for the verdict (at most `amd_cap_ms`); a machine's message must end within
    # `amd_message_cap_ms` of the machine being recognised, or it is hung up on.
    amd: bool = False
    amd_cap_ms: int = 1_500
    amd_message_cap_ms: int = 30_000
    greeting_timing: GreetingTiming = GreetingTiming.IMMEDIATE
    # What to leave on an answering machine (outbound; empty: hang up without a message).
    voicemail: str = ""
    voicemail_audio_key: str | None = None
    # No engine can be had: the apology (cached audio of `prompts.apology_text(language)` in
    # this voice, when rendered; else the built-in one), then the caller's message is
    # recorded: at most `message_max_ms`, ended by `message_end_silence_ms` of silence.
    apology_audio_key: str | None = None
    # The engine dropped while the caller waited on it: the hold line (cached audio of
    # `prompts.hold_text(language)` in this voice, when rendered; else the built-in one).
    hold_audio_key: str | None = None
    message_max_ms: int = 120_000
    message_end_silence_ms: int = 4_000
    # Caller audio to the engine: 0, each frame as it came; else quiet frames in appends of
    # this many ms, speech at once (Settings.quiet_audio_batch_ms, core/quiet_audio.py).
    quiet_audio_batch_ms: int = 0
    # The business records its calls: the runner keeps a tape of both sides' audio.
    recording: bool = False
    # Stages reached before the stream opened, (stage, ms since the webhook arrived).
    early_stages: tuple[tuple[str, float], ...] = ()
    # The instance that took the voice webhook (HOTLINE_INSTANCE_ID): it holds the warm
    # engine session; a stream reaching another instance connects its own.
    instance_id: str = ""

    @property
    def initial_instructions(self) -> str:
        """What the engine is configured with before the greeting. A cached greeting needs
        no engine to say it, so the engine gets the full prompt straight away."""
        if self.greeting_audio_key or self.greeting_prompt == "full":
            return self.full_instructions
        return self.compact_instructions

    @property
    def upgrades_prompt(self) -> bool:
        return self.initial_instructions != self.full_instructions

    @property
    def greets_after_amd(self) -> bool:
        """The greeting waits for the answering-machine verdict (not the default)."""
        return self.amd and self.greeting_timing is GreetingTiming.AFTER_AMD

    @property
    def guards_pickup(self) -> bool:
        """Caller audio in the first `warmup_ms` is pickup noise when the caller speaks first,
        and on outbound calls the callee's "Hello?" that must not cut the greeting."""
        return not self.bot_speaks_first or self.direction == "outbound"

    def with_call(self, call_sid: str, from_number: str, to_number: str) -> CallPlan:
        return replace(self, call_sid=call_sid, from_number=from_number, to_number=to_number)

    def with_stage(self, stage: str, ms: float) -> CallPlan:
        return replace(self, early_stages=(*self.early_stages, (stage, round(ms, 3))))

    def restarted(self, webhook_received_epoch_ms: float) -> CallPlan:
        """A prebuilt (outbound) plan whose timeline starts now, with a fresh token."""
        return replace(self, webhook_received_epoch_ms=webhook_received_epoch_ms,
                       early_stages=(), token=new_stream_token())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CallPlan:
        data = dict(data)
        for name in ("early_stages", "opening_hours", "dtmf_actions"):
            data[name] = tuple(tuple(s) for s in data.get(name, ()))
        data["tools"] = tuple(data.get("tools", ()))
        data["http_tools"] = tuple(HttpTool(**t) for t in data.get("http_tools", ()))
        data["greeting_timing"] = GreetingTiming(data.get("greeting_timing",
                                                          GreetingTiming.IMMEDIATE))
        return cls(**data)

    def tool_enabled(self, name: str) -> bool:
        return name in self.tools or any(t.name == name for t in self.http_tools)

    def dtmf_action(self, digit: str) -> str | None:
        return dict(self.dtmf_actions).get(digit)


def new_stream_token() -> str:
    return secrets.token_urlsafe(18)


def _common(settings: Settings, business: BusinessConfig) -> dict[str, Any]:
    return {
        "business_slug": business.slug,
        "business_name": business.name,
        "language": business.language,
        "voice": business.voice,
        "warmup_ms": settings.warmup_ms,
        "echo_cooldown_ms": settings.echo_cooldown_ms,
        "vad_threshold": settings.vad_threshold,
        "vad_silence_ms": settings.vad_silence_ms,
        "vad_prefix_padding_ms": settings.vad_prefix_padding_ms,
        "transcription_model": settings.openai_transcription_model,
        "greeting_prompt": settings.greeting_prompt,
        "tools": business.tools,
        "http_tools": business.http_tools,
        "transfer_number": business.transfer_number,
        "timezone": business.timezone,
        "opening_hours": business.opening_hours,
        "dtmf_actions": business.dtmf_actions,
        "max_duration_ms": business.max_call_duration_s * 1000,
        "silence_nudge_ms": int(settings.silence_nudge_s * 1000),
        "silence_hangup_ms": int(settings.silence_hangup_s * 1000),
        "barge_in_min_speech_ms": settings.barge_in_min_speech_ms,
        "goodbye_cap_ms": int(settings.goodbye_cap_s * 1000),
        "message_max_ms": int(settings.message_max_s * 1000),
        "message_end_silence_ms": int(settings.message_end_silence_s * 1000),
        "recording": business.recording,
        "quiet_audio_batch_ms": settings.quiet_audio_batch_ms,
    }


def build_inbound_plan(
    settings: Settings,
    business: BusinessConfig,
    *,
    call_sid: str,
    from_number: str,
    to_number: str,
    webhook_received_epoch_ms: float,
) -> CallPlan:
    return CallPlan(
        call_sid=call_sid,
        token=new_stream_token(),
        direction="inbound",
        from_number=from_number,
        to_number=to_number,
        greeting=business.greeting,
        compact_instructions=compact_prompt(business, business.greeting),
        full_instructions=full_prompt(business, greeting=_in_full(settings, business.greeting)),
        bot_speaks_first=business.bot_speaks_first,
        webhook_received_epoch_ms=webhook_received_epoch_ms,
        **_common(settings, business),
    )


def build_outbound_plan(
    settings: Settings,
    business: BusinessConfig,
    *,
    template_name: str,
    variables: dict[str, str],
    from_number: str,
    to_number: str,
    created_epoch_ms: float,
) -> CallPlan:
    """Prebuilt when the call is placed; the answered webhook binds its CallSid."""
    template = business.template(template_name)
    greeting = render_greeting(template, variables)
    extra = template.instructions.format_map(_Lenient(variables)) if template.instructions else ""
    return CallPlan(
        call_sid="",
        token=new_stream_token(),
        direction="outbound",
        from_number=from_number,
        to_number=to_number,
        greeting=greeting,
        compact_instructions=compact_prompt(business, greeting, extra),
        full_instructions=full_prompt(business, extra, greeting=_in_full(settings, greeting)),
        bot_speaks_first=True,  # outbound: the callee said "hello?" already; we speak
        webhook_received_epoch_ms=created_epoch_ms,
        template_name=template.name,
        variables=dict(variables),
        amd=settings.amd,
        amd_cap_ms=settings.amd_greeting_cap_ms,
        amd_message_cap_ms=settings.amd_message_end_cap_ms,
        greeting_timing=template.greeting_timing or business.greeting_timing,
        voicemail=(template.voicemail_template.format_map(_Lenient(variables))
                   if template.voicemail_template else ""),
        **_common(settings, business),
    )


def _in_full(settings: Settings, greeting: str) -> str | None:
    """The greeting for the full prompt to carry (`greeting_in_full_prompt`), else None."""
    return greeting if settings.greeting_in_full_prompt else None


class _Lenient(dict[str, str]):
    """format_map helper: unknown {names} in free-form instructions stay as written."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"
