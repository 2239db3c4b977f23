"""The call's timers, by name: the runner keeps one handle per name."""

from __future__ import annotations

import enum


class TimerName(enum.Enum):
    SILENCE_NUDGE = "silence_nudge"  # the caller has been quiet: ask if they are there
    SILENCE_HANGUP = "silence_hangup"  # still quiet: say goodbye and hang up
    MAX_DURATION = "max_duration"  # the business's call length limit
    GOODBYE_CAP = "goodbye_cap"  # a goodbye that never finishes playing must not hold the line
    AMD_CAP = "amd_cap"  # greet anyway if the answering-machine verdict is late
    AMD_MESSAGE_CAP = "amd_message_cap"  # a machine whose message never ends: hang up
    MESSAGE_CAP = "message_cap"  # engine down: the caller's recorded message is long enough
    # Resumed after a drop while the caller spoke: if the new session makes no turn of it,
    # the wanted reply is asked for anyway.
    RESUME_TURN_WAIT = "resume_turn_wait"
