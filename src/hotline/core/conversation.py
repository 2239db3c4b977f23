"""The conversation so far, kept to be replayed into a new engine session after a drop.

A dropped engine session loses its conversation. A new one gets it back as items: what the
caller said (their turns' transcripts, the keys they pressed), what the agent said *and
the caller heard* (a cut line only up to where it was cut), and the tool calls with their
answers. Entries are kept in the order they became known, bounded by count and by text, so
a long call replays its most recent part.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hotline.core.commands import (
    AddAssistantText,
    AddFunctionCall,
    AddFunctionOutput,
    AddUserText,
    EngineMessage,
)

MAX_ENTRIES = 200
MAX_CHARS = 40_000
REPLAY_ITEM_PREFIX = "hotline_replay_"


class EntryKind(enum.Enum):
    CALLER = "caller"  # a user message (input_text)
    AGENT = "agent"  # an assistant message (output_text): the words heard
    TOOL_CALL = "tool_call"  # a function_call item
    TOOL_OUTPUT = "tool_output"  # a function_call_output item


@dataclass(slots=True, frozen=True)
class Entry:
    seq: int
    kind: EntryKind
    text: str = ""  # caller/agent words, or the tool's output JSON
    call_id: str = ""
    name: str = ""

    @property
    def chars(self) -> int:
        return len(self.text) + len(self.name)


class Conversation:
    def __init__(self, max_entries: int = MAX_ENTRIES, max_chars: int = MAX_CHARS) -> None:
        self._entries: list[Entry] = []
        self._max_entries = max_entries
        self._max_chars = max_chars
        self._chars = 0
        self._seq = 0
        self.forgotten = 0  # the oldest entries, dropped to keep within the bounds

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def next_seq(self) -> int:
        """The position the next entry will take (`replay(before=...)` stops there)."""
        return self._seq

    def caller(self, text: str) -> None:
        if text:
            self._add(EntryKind.CALLER, text)

    def agent(self, heard_text: str) -> None:
        if heard_text:
            self._add(EntryKind.AGENT, heard_text)

    def tool_call(self, call_id: str, name: str, arguments: str) -> None:
        self._add(EntryKind.TOOL_CALL, arguments, call_id, name)

    def tool_output(self, call_id: str, output: str) -> None:
        self._add(EntryKind.TOOL_OUTPUT, output, call_id)

    def replay(self, before: int | None = None) -> list[EngineMessage]:
        """The items that give a new session this conversation, oldest first; only the
        entries made before position `before` (those made since went to the engine live)."""
        messages: list[EngineMessage] = []
        calls = {e.call_id for e in self._entries if e.kind is EntryKind.TOOL_CALL}
        for entry in self._entries:
            if before is not None and entry.seq >= before:
                break
            match entry.kind:
                case EntryKind.CALLER:
                    messages.append(AddUserText(entry.text))
                case EntryKind.AGENT:
                    messages.append(AddAssistantText(f"{REPLAY_ITEM_PREFIX}{entry.seq}",
                                                     entry.text))
                case EntryKind.TOOL_CALL:
                    messages.append(AddFunctionCall(entry.call_id, entry.name, entry.text))
                case EntryKind.TOOL_OUTPUT if entry.call_id in calls:
                    # (An answer whose call was forgotten would be refused: no such call.)
                    messages.append(AddFunctionOutput(entry.call_id, entry.text))
        return messages

    def _add(self, kind: EntryKind, text: str, call_id: str = "", name: str = "") -> None:
        entry = Entry(self._seq, kind, text, call_id, name)
        self._seq += 1
        self._entries.append(entry)
        self._chars += entry.chars
        while len(self._entries) > 1 and (len(self._entries) > self._max_entries
                                          or self._chars > self._max_chars):
            self._chars -= self._entries.pop(0).chars
            self.forgotten += 1
