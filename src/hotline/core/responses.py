"""The response queue: the responses the call wants from the engine, one at a time.

The engine refuses a second `response.create` while one is asked for or going, so exactly
one may be in flight. Each is asked for with our own `event_id`, which the engine echoes in
the `error` that refuses it, so a refusal is known and forgotten instead of waited for. A
response the call no longer wants to hear (cut off, or asked for before the call began to
close) is dropped: its late audio is not played.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hotline.core.commands import CancelResponse, Command, CreateResponse, SendToEngine


class Purpose(enum.Enum):
    """Why a response was asked for: it decides what may interrupt or replace it."""

    GREETING = "greeting"
    REPLY = "reply"  # to a caller turn, a key, or a tool's answer
    NUDGE = "nudge"  # "are you still there?"
    CLOSING = "closing"  # goodbye, handover line or voicemail
    DISCARDED = "discarded"  # asked for, then no longer wanted: cancelled once created


# The event id of a live greeting asked for before the stream starts (by the warm session,
# with the command `prerequested_greeting()` builds), so its refusal reaches the core too.
PREREQUESTED_GREETING_EVENT_ID = "hotline_greeting"


def prerequested_greeting() -> CreateResponse:
    return CreateResponse(event_id=PREREQUESTED_GREETING_EVENT_ID)


@dataclass(slots=True, frozen=True)
class Wanted:
    """A response the call wants: its instructions (None: the session's own) and purpose."""

    instructions: str | None
    purpose: Purpose


class ResponseQueue:
    def __init__(self) -> None:
        self._wanted: list[Wanted] = []
        self.requested: Purpose | None = None  # sent, not yet created
        self._request_event_id: str | None = None
        self._request_instructions: str | None = None
        self._seq = 0
        self.active_id: str | None = None  # created, not yet done
        self.active_purpose: Purpose | None = None
        self._active_instructions: str | None = None  # kept to ask again after a drop
        self._dropped: set[str] = set()
        self._lost: set[str] = set()  # of those, the ones the engine took with it (a drop)
        self._with_audio: set[str] = set()

    def assume_requested(self, purpose: Purpose, event_id: str,
                         instructions: str | None = None) -> None:
        """A response already asked for by someone else, with our event id."""
        self.requested, self._request_event_id = purpose, event_id
        self._request_instructions = instructions

    def want(self, instructions: str | None, purpose: Purpose) -> None:
        if purpose is Purpose.REPLY and self.wants(Purpose.REPLY):
            return  # one reply answers everything said so far
        self._wanted.append(Wanted(instructions, purpose))

    def wants(self, purpose: Purpose) -> bool:
        return any(w.purpose is purpose for w in self._wanted)

    def pending(self, purpose: Purpose) -> bool:
        """A response for `purpose` is wanted or asked for (not yet created)."""
        return self.requested is purpose or self.wants(purpose)

    def discard(self) -> None:
        """Nothing wanted or asked for so far is wanted any more: the request in flight is
        cancelled as soon as the engine creates it."""
        self._wanted.clear()
        if self.requested is not None:
            self.requested = Purpose.DISCARDED

    def keep_only(self, purpose: Purpose) -> None:
        self._wanted = [w for w in self._wanted if w.purpose is purpose]

    def forget_wanted(self) -> None:
        self._wanted.clear()

    def next(self, caller_talking: bool) -> list[Command]:
        """Ask for the next wanted response if nothing is going or asked for, and, for a
        reply, once the caller has finished their turn (their turn's end asks again)."""
        if not self._wanted or self.active_id is not None or self.requested is not None:
            return []
        wanted = self._wanted[0]
        if wanted.purpose is Purpose.REPLY and caller_talking:
            return []
        self._wanted.pop(0)
        self._seq += 1
        self.assume_requested(wanted.purpose, f"hotline_response_{self._seq}",
                              wanted.instructions)
        return [SendToEngine(CreateResponse(wanted.instructions,
                                            event_id=self._request_event_id))]

    def created(self, response_id: str) -> Purpose:
        """The engine started a response: the one we asked for (a reply if we asked for
        none, as when the engine answers on its own)."""
        purpose = self.requested or Purpose.REPLY
        self.active_id, self.active_purpose = response_id, purpose
        self._active_instructions = self._request_instructions
        self.requested = self._request_event_id = self._request_instructions = None
        return purpose

    def done(self, response_id: str) -> None:
        if self.active_id == response_id:
            self.active_id = None

    def lost(self) -> Wanted | None:
        """The engine is gone with the response it was making or was asked for: nothing
        more comes of it. What it was (its purpose and instructions), if it was still
        wanted (to be asked for again, as it was)."""
        active = self.active_id
        if active is not None:
            purpose = None if active in self._dropped else self.active_purpose
            instructions = self._active_instructions
            if active not in self._dropped:
                self._lost.add(active)
            self._dropped.add(active)
        else:
            purpose, instructions = self.requested, self._request_instructions
        self.active_id = self.requested = self._request_event_id = None
        self._request_instructions = self._active_instructions = None
        if purpose is None or purpose is Purpose.DISCARDED:
            return None
        return Wanted(instructions, purpose)

    def refused(self, event_id: str | None) -> Purpose | None:
        """An engine error: if it refuses our request, nothing is coming; the purpose of
        the refused request, else None."""
        if event_id is None or event_id != self._request_event_id:
            return None
        purpose, self.requested, self._request_event_id = self.requested, None, None
        self._request_instructions = None
        return purpose

    def had_audio(self, response_id: str) -> None:
        self._with_audio.add(response_id)

    def has_audio(self, response_id: str) -> bool:
        return response_id in self._with_audio

    def is_dropped(self, response_id: str) -> bool:
        return response_id in self._dropped

    def was_cut_off(self, response_id: str) -> bool:
        """Dropped because it was not wanted any more (a barge-in, a cancel), not because
        the engine went away with it: what it decided (a tool's end_call) no longer holds."""
        return response_id in self._dropped and response_id not in self._lost

    def active_and_kept(self, response_id: str) -> bool:
        """This response is still going and will be heard."""
        return self.active_id == response_id and response_id not in self._dropped

    def cancel_active(self) -> list[Command]:
        """The response in progress (audible yet or not) must not play: its late deltas are
        dropped and the engine is told to stop making them."""
        response_id = self.active_id
        if response_id is None or response_id in self._dropped:
            return []
        self._dropped.add(response_id)
        return [SendToEngine(CancelResponse())]

    @property
    def idle(self) -> bool:
        """No response is going, asked for or wanted."""
        return self.active_id is None and self.requested is None and not self._wanted
