"""How a call ended: the values kept in `CallRecord.outcome` and the store's `calls.outcome`.

The call core sets most of them; the store sets `NO_ANSWER` and `FAILED` from Twilio's final
status callbacks for calls that never reached the media stream. An empty outcome in the store
means "not known yet" (a call still ringing or in progress).
"""

from __future__ import annotations

import enum


class Outcome(enum.StrEnum):
    COMPLETED = "completed"  # the conversation ended normally (either side hung up)
    TRANSFERRED = "transferred"  # handed to a person (`transfer_to_human`, DTMF)
    VOICEMAIL = "voicemail"  # an answering machine picked up (outbound)
    HUNG_UP_BY_AGENT = "hung_up_by_agent"  # the agent ended it (`end_call`, limits)
    NO_ANSWER = "no_answer"  # never answered: no-answer, busy or canceled
    FAILED = "failed"  # Twilio could not place it, or the call broke on our side
    ENGINE_UNAVAILABLE = "engine_unavailable"  # no engine session could be had
