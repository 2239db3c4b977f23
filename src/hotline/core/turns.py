"""Caller turns: which of the engine's turns are speech, which are noise, which barge in.

Server VAD only detects turns. A turn that begins while the agent is audible, or in the echo
cooldown after it, is *contested*: it counts only if the `SpeechGate` heard at least
`barge_in_min_speech_ms` of speech in it; otherwise it is noise (a cough, the agent's own
echo) and is deleted unanswered. The gate judges caller sound only when it could be echo or
an interruption, i.e. while the agent is audible, in the cooldown, or in a contested turn.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hotline.audio.speech_gate import SpeechGate

# A caller turn counts as speech if the gate heard speech this close to (or after) its start.
GATE_TURN_WINDOW_MS = 500


class TurnVerdict(enum.Enum):
    SPEECH = "speech"  # a turn to answer
    NOISE = "noise"  # contested and never speech long enough: delete it, answer nothing
    UNDECIDED = "undecided"  # contested, the gate has not heard speech in it (yet)


@dataclass(slots=True)
class _CallerTurn:
    started_ms: float
    stopped_ms: float | None = None
    contested: bool = False  # began over the agent's audio or in the echo cooldown
    committed: bool = False  # in the conversation: the turn is over


class CallerTurns:
    def __init__(self, min_speech_ms: int, vad_threshold: float) -> None:
        self._gate = SpeechGate(min_speech_ms, vad_threshold)
        self._turns: dict[str, _CallerTurn] = {}
        self._noise_items: set[str] = set()
        self._heard_speech_ms = float("-inf")  # the gate last judged caller sound speech
        self._cooldown_until_ms = float("-inf")

    # -- the echo cooldown ------------------------------------------------------------------
    def start_cooldown(self, now_ms: float, cooldown_ms: int) -> None:
        """The agent's audio finished playing: its echo may still come back."""
        self._cooldown_until_ms = now_ms + cooldown_ms

    def in_cooldown(self, now_ms: float) -> bool:
        return now_ms < self._cooldown_until_ms

    # -- frames -----------------------------------------------------------------------------
    def listening(self, now_ms: float, agent_audible: bool) -> bool:
        return (agent_audible or self.in_cooldown(now_ms)
                or any(t.contested and t.stopped_ms is None for t in self._turns.values()))

    def hear(self, payload_b64: str, now_ms: float, agent_audible: bool) -> bool:
        """Feed one caller frame to the gate when it listens; True when it is speech."""
        if not self.listening(now_ms, agent_audible):
            self._gate.reset()
            return False
        if not self._gate.feed(payload_b64):
            return False
        self._heard_speech_ms = now_ms
        return True

    def voiced(self, payload_b64: str) -> bool:
        """One frame loud enough to be voice (for a callee we only listen to)."""
        return self._gate.voiced(payload_b64)

    # -- the engine's turn events -----------------------------------------------------------
    @property
    def open(self) -> bool:
        """A caller turn has started and is not in the conversation yet."""
        return any(not t.committed for t in self._turns.values())

    def started(self, item_id: str, now_ms: float, agent_audible: bool) -> TurnVerdict:
        contested = agent_audible or self.in_cooldown(now_ms)
        self._turns[item_id] = _CallerTurn(now_ms, contested=contested)
        if contested and not self._heard_since(now_ms):
            return TurnVerdict.UNDECIDED  # the gate decides whether this is speech
        return TurnVerdict.SPEECH

    def stopped(self, item_id: str, now_ms: float) -> None:
        turn = self._turns.get(item_id)
        if turn is not None:
            turn.stopped_ms = now_ms

    def committed(self, item_id: str) -> TurnVerdict:
        """The turn is in the conversation: speech to answer, or noise to delete."""
        turn = self._turns.get(item_id)
        if turn is not None:
            turn.committed = True
        heard = turn is not None and self._heard_since(turn.started_ms)
        self._gate.reset()
        if turn is not None and turn.contested and not heard:
            return TurnVerdict.NOISE
        return TurnVerdict.SPEECH

    @property
    def pending(self) -> bool:
        """Some caller turn is not transcribed yet (open, or committed)."""
        return bool(self._turns)

    def abandon(self) -> float | None:
        """The engine that announced the turns not transcribed yet is gone: they will never
        be committed or transcribed. When the oldest of them began (None: there is none);
        their audio goes to the next session again, whose VAD finds the turn anew."""
        start = min((t.started_ms for t in self._turns.values()), default=None)
        self._turns.clear()
        self._gate.reset()
        return start

    def forget_noise(self, item_id: str) -> None:
        """A noise turn deleted from the conversation: its transcript is not the caller's."""
        self._noise_items.add(item_id)
        self._turns.pop(item_id, None)

    def transcribed(self, item_id: str, now_ms: float) -> tuple[int, int] | None:
        """(started, stopped) ms of a transcribed turn; None for a turn judged noise."""
        if item_id in self._noise_items:
            return None
        turn = self._turns.pop(item_id, None)
        started = turn.started_ms if turn else now_ms
        stopped = turn.stopped_ms if turn and turn.stopped_ms is not None else now_ms
        return int(started), int(stopped)

    def _heard_since(self, started_ms: float) -> bool:
        return self._heard_speech_ms >= started_ms - GATE_TURN_WINDOW_MS
