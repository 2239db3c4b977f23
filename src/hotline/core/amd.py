"""Answering-machine detection: Twilio's verdicts, and the wait for one before greeting.

Twilio posts `AnsweredBy` to the async AMD callback. With `DetectMessageEnd` a machine's
verdict comes once its message has ended (`machine_end_*`); in `Enable` mode
`machine_start` comes as soon as a machine is recognised.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class AnsweredBy(enum.StrEnum):
    HUMAN = "human"
    UNKNOWN = "unknown"
    MACHINE_START = "machine_start"
    MACHINE_END_BEEP = "machine_end_beep"
    MACHINE_END_SILENCE = "machine_end_silence"
    MACHINE_END_OTHER = "machine_end_other"
    FAX = "fax"

    @classmethod
    def parse(cls, value: str) -> AnsweredBy:
        """Twilio's `AnsweredBy`; a value it may add later counts as `unknown`."""
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN

    @property
    def is_human(self) -> bool:
        return self in (AnsweredBy.HUMAN, AnsweredBy.UNKNOWN)

    @property
    def machine_message_ended(self) -> bool:
        """A machine is ready to record: the moment to leave a voicemail."""
        return self in (AnsweredBy.MACHINE_END_BEEP, AnsweredBy.MACHINE_END_SILENCE,
                        AnsweredBy.MACHINE_END_OTHER)


@dataclass(slots=True)
class AmdWait:
    """The greeting held for the verdict: at most `cap_ms`, and past the cap only while the
    callee is quiet (a callee still talking is a machine's message, nearly always)."""

    quiet_ms: int  # this much audio without a loud frame is a quiet callee
    verdict: AnsweredBy | None = None
    cap_passed: bool = False
    # The callee's audio since its last loud frame, in ms of audio received, not of the
    # clock: frames that arrive late in a burst (network jitter, a busy server) are not a
    # pause in what the callee said. Nothing heard yet: quiet.
    quiet_audio_ms: float = float("inf")

    def take(self, verdict: AnsweredBy) -> bool:
        """The call's verdict. True if this one counts: the first, or the end of the message
        of a machine already recognised (`machine_start` then `machine_end_*`); any other
        later or repeated verdict is ignored."""
        previous = self.verdict
        if previous is not None and not (previous is AnsweredBy.MACHINE_START and (
                verdict.machine_message_ended or verdict is AnsweredBy.FAX)):
            return False
        self.verdict = verdict
        return True

    def heard(self, voiced: bool, audio_ms: float) -> None:
        """A callee frame of `audio_ms`, loud or not."""
        self.quiet_audio_ms = 0.0 if voiced else self.quiet_audio_ms + audio_ms

    @property
    def callee_quiet(self) -> bool:
        return self.quiet_audio_ms >= self.quiet_ms
