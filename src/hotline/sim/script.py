"""Call scripts: what the simulated caller does, step by step, in 20 ms microphone frames.

A `CallScript` is a list of steps run in order:

    Silence(ms)                      the line is open, nobody speaks (0xFF frames)
    Say(text, language, voice)       speech from `speech.synthesize` (espeak-ng or a tone)
    Tone(ms)                         a voiced tone, loud enough for any energy VAD
    Beep(ms, frequency_hz)           an answering machine's beep: a steady ~1 kHz sine;
                                     the runner notes when it ended (`beep_ended_ms`),
                                     which is when Twilio's DetectMessageEnd AMD decides
    Audio(mulaw)                     given μ-law 8 kHz audio (see `CallScript.from_wav`)
    Dtmf(digit)                      a key press: one `dtmf` event, takes no time
    WaitForAgentAudio(played_ms)     silence until that much agent audio has been *played*
                                     on this call (cumulative); barge in mid-greeting with it
    WaitForAgentSilence(quiet_ms)    silence until the agent has answered (played audio
                                     since the caller last started speaking, or since the
                                     call began if they haven't), then nothing for `quiet_ms`
    Hangup()                         end the call (the phone sends `stop` and closes)

Waits end at `timeout_ms` at the latest (the step log says so). A script that runs out hangs
up. Between and during waits the microphone sends silence, like a real open line.

Ready-made scripts: `CallScript.default_callee()` (a person who says "Hello?" and listens)
and `CallScript.answering_machine()` (greeting, beep, records the agent's message).

`ScriptRunner` is the pure core that plays a script: `tick(now_ms, agent)` is called once
per 20 ms frame with what the caller has heard so far and returns the frame to send, the
digits pressed and whether to hang up. It never sleeps or touches a socket; the phone owns
the clock.
"""

from __future__ import annotations

import array
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hotline.audio import mulaw
from hotline.sim import speech

DTMF_DIGITS = frozenset("0123456789*#")
_SILENT_FRAME = mulaw.silence(mulaw.FRAME_MS)


@dataclass(frozen=True, slots=True)
class Silence:
    ms: int

    def __post_init__(self) -> None:
        if self.ms < 0:
            raise ValueError(f"Silence ms must be >= 0, got {self.ms}")


@dataclass(frozen=True, slots=True)
class Say:
    text: str
    language: str = "en"
    voice: str = ""


@dataclass(frozen=True, slots=True)
class Tone:
    ms: int

    def __post_init__(self) -> None:
        if self.ms <= 0:
            raise ValueError(f"Tone ms must be > 0, got {self.ms}")


@dataclass(frozen=True, slots=True)
class Beep:
    """The tone a voicemail plays before recording: what DetectMessageEnd AMD waits for."""

    ms: int = 400
    frequency_hz: float = 1000.0

    def __post_init__(self) -> None:
        if self.ms <= 0:
            raise ValueError(f"Beep ms must be > 0, got {self.ms}")


@dataclass(frozen=True, slots=True)
class Audio:
    """Caller audio given as μ-law 8 kHz bytes."""

    mulaw: bytes = field(repr=False)

    @classmethod
    def from_wav(cls, path: str | Path) -> Audio:
        return cls(mulaw.mulaw_from_wav_bytes(Path(path).read_bytes()))


@dataclass(frozen=True, slots=True)
class Dtmf:
    digit: str

    def __post_init__(self) -> None:
        if self.digit not in DTMF_DIGITS:
            raise ValueError(f"DTMF digit must be one of 0-9 * #, got {self.digit!r}")


@dataclass(frozen=True, slots=True)
class WaitForAgentAudio:
    played_ms: int
    timeout_ms: int = 10_000


@dataclass(frozen=True, slots=True)
class WaitForAgentSilence:
    quiet_ms: int = 800
    timeout_ms: int = 30_000


@dataclass(frozen=True, slots=True)
class Hangup:
    pass


Step = (Silence | Say | Tone | Beep | Audio | Dtmf | WaitForAgentAudio | WaitForAgentSilence
        | Hangup)
SpeakingStep = Say | Tone | Beep | Audio

DEFAULT_VOICEMAIL_GREETING = ("Hi, you've reached Dana. I can't take your call right now, "
                              "please leave a message after the tone.")


@dataclass(slots=True)
class CallScript:
    steps: list[Step] = field(default_factory=list)

    @classmethod
    def from_wav(cls, path: str | Path, *, then: Iterable[Step] = ()) -> CallScript:
        """The caller plays a WAV file (any rate, 16-bit PCM), then does `then`, then hangs up."""
        return cls([Audio.from_wav(path), *then])

    @classmethod
    def default_callee(cls) -> CallScript:
        """Someone who picks up: "Hello?", listens until the agent is done (≤30 s), hangs up."""
        return cls([Say("Hello?"), WaitForAgentSilence(quiet_ms=2000, timeout_ms=30_000),
                    Hangup()])

    @classmethod
    def answering_machine(cls, greeting: str = DEFAULT_VOICEMAIL_GREETING, *,
                          beep_ms: int = 400, message_quiet_ms: int = 3000,
                          message_timeout_ms: int = 120_000,
                          then: Iterable[Step] | None = None) -> CallScript:
        """Voicemail: greeting, beep, then records until the agent's message is over.

        The message is over after `message_quiet_ms` without agent audio once some has
        played after the beep started (or at `message_timeout_ms`). `then` runs next; by
        default the machine stays on the line, silent, for a minute (a real one would
        keep recording until the caller hangs up), then hangs up.
        """
        after = list(then) if then is not None else [Silence(60_000)]
        return cls([
            Say(greeting), Beep(beep_ms),
            WaitForAgentAudio(played_ms=1, timeout_ms=message_timeout_ms),
            WaitForAgentSilence(quiet_ms=message_quiet_ms, timeout_ms=message_timeout_ms),
            *after,
        ])


@dataclass(slots=True)
class AgentAudio:
    """What the caller has heard so far, as the phone's playout model tells it."""

    played_ms: float  # agent audio played on this call, cumulative
    last_heard_ms: float | None  # when agent audio last played (now, if it is playing)


@dataclass(slots=True)
class MicTick:
    """One frame period of the microphone."""

    frame: bytes | None  # FRAME_BYTES of μ-law to send; None when hanging up
    digits: list[str] = field(default_factory=list)
    hangup: bool = False


@dataclass(slots=True)
class StepRecord:
    index: int
    step: str  # the step's repr, audio elided
    started_ms: float
    ended_ms: float | None = None
    timed_out: bool = False


def beep_tone(ms: int, frequency_hz: float = 1000.0, amplitude: int = 8000) -> bytes:
    """A pure sine as μ-law, with 5 ms ramps so its edges don't click."""
    n = ms * mulaw.BYTES_PER_MS
    ramp = 5 * mulaw.BYTES_PER_MS
    step = 2 * math.pi * frequency_hz / mulaw.SAMPLE_RATE
    samples = array.array("h", bytes(2 * n))
    for i in range(n):
        envelope = min(1.0, i / ramp, (n - 1 - i) / ramp)
        samples[i] = int(amplitude * envelope * math.sin(step * i))
    return mulaw.encode(samples)


def render_audio(step: SpeakingStep) -> bytes:
    """The μ-law audio of a speaking step, padded with silence to whole 20 ms frames."""
    if isinstance(step, Say):
        audio = speech.synthesize(step.text, step.language, step.voice)
    elif isinstance(step, Tone):
        audio = speech.voiced_tone(step.ms)
    elif isinstance(step, Beep):
        audio = beep_tone(step.ms, step.frequency_hz)
    else:
        audio = step.mulaw
    remainder = len(audio) % mulaw.FRAME_BYTES
    if remainder:
        audio += bytes([mulaw.SILENCE_BYTE]) * (mulaw.FRAME_BYTES - remainder)
    return audio


class ScriptRunner:
    """Plays a `CallScript`, one 20 ms frame per `tick()`. Pure: no clock, no I/O.

    Construction renders every speaking step up front (espeak runs here, so build the
    runner off the event loop, e.g. with `asyncio.to_thread`).
    """

    def __init__(self, script: CallScript) -> None:
        self._steps: Sequence[Step] = list(script.steps)
        self._audio: dict[int, bytes] = {
            index: render_audio(step)
            for index, step in enumerate(self._steps)
            if isinstance(step, SpeakingStep)
        }
        self._index = 0
        self._offset = 0  # bytes of the current speaking step already sent
        self._started_ms: float | None = None
        self._spoke_ms = -math.inf  # when the caller last started speaking
        self.log: list[StepRecord] = []
        self.finished = False
        # When the last `Beep` step ended: the tick after its last frame, i.e. when the
        # beep's audio is over on the line. None until a beep has played.
        self.beep_ended_ms: float | None = None

    def tick(self, now_ms: float, agent: AgentAudio) -> MicTick:
        digits: list[str] = []
        while not self.finished and self._index < len(self._steps):
            step = self._steps[self._index]
            if self._started_ms is None:
                self._begin(step, now_ms)
            started_ms = self._started_ms if self._started_ms is not None else now_ms
            match step:
                case Silence(ms=ms):
                    # n ms of silence is n/20 frames (rounded up): counted, not clocked.
                    if self._offset < ms * mulaw.BYTES_PER_MS:
                        self._offset += mulaw.FRAME_BYTES
                        return MicTick(_SILENT_FRAME, digits)
                    self._end(now_ms)
                case Say() | Tone() | Beep() | Audio():
                    audio = self._audio[self._index]
                    if self._offset < len(audio):
                        frame = audio[self._offset:self._offset + mulaw.FRAME_BYTES]
                        self._offset += mulaw.FRAME_BYTES
                        return MicTick(frame, digits)
                    if isinstance(step, Beep):
                        self.beep_ended_ms = now_ms
                    self._end(now_ms)
                case Dtmf(digit=digit):
                    digits.append(digit)
                    self._end(now_ms)
                case WaitForAgentAudio(played_ms=played_ms, timeout_ms=timeout_ms):
                    if agent.played_ms >= played_ms:
                        self._end(now_ms)
                    elif now_ms - started_ms >= timeout_ms:
                        self._end(now_ms, timed_out=True)
                    else:
                        return MicTick(_SILENT_FRAME, digits)
                case WaitForAgentSilence(quiet_ms=quiet_ms, timeout_ms=timeout_ms):
                    heard = agent.last_heard_ms
                    if (heard is not None and heard >= self._spoke_ms
                            and now_ms - heard >= quiet_ms):
                        self._end(now_ms)
                    elif now_ms - started_ms >= timeout_ms:
                        self._end(now_ms, timed_out=True)
                    else:
                        return MicTick(_SILENT_FRAME, digits)
                case Hangup():
                    self._end(now_ms)
                    self.finished = True
        self.finished = True
        return MicTick(None, digits, hangup=True)

    def _begin(self, step: Step, now_ms: float) -> None:
        self._started_ms = now_ms
        if isinstance(step, SpeakingStep):
            self._spoke_ms = now_ms
        self._offset = 0
        self.log.append(StepRecord(index=self._index, step=repr(step), started_ms=now_ms))

    def _end(self, now_ms: float, *, timed_out: bool = False) -> None:
        record = self.log[-1]
        record.ended_ms = now_ms
        record.timed_out = timed_out
        self._index += 1
        self._started_ms = None
        self._offset = 0
