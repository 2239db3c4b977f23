"""What the simulated model says, and what the simulated transcriber hears.

The simulator understands nothing: a response speaks, in order of precedence, the text
quoted after `SAY_EXACTLY_MARKER` or `GREETING_MARKER` in the response's instructions, a
canned line for what other response instructions ask for (`engine_lines`: a handover, a
goodbye, ...; never the instruction text itself), the greeting quoted after
`GREETING_MARKER` in the session instructions (first assistant response only), or the next
canned reply. Canned lines are in Hebrew when the session's instructions are (or say to
speak Hebrew), in English otherwise.
"""

from __future__ import annotations

import re

from hotline.prompts import GREETING_MARKER, SAY_EXACTLY_MARKER
from hotline.sim.engine_lines import Intent, intent_of, line_for

# response.instructions shorter than this are read for their intent (a one-line request
# such as "say goodbye"); longer ones are a task, answered with the generic line.
SHORT_INSTRUCTIONS_CHARS = 200

DEFAULT_REPLIES_EN: tuple[str, ...] = (
    "Sure, I can help with that. Could you tell me a little more?",
    "Thanks, that makes sense. Let me check that for you.",
    "Got it. Is there anything else I can do for you today?",
    "Great, I have noted that down. Thank you for calling.",
)
DEFAULT_REPLIES_HE: tuple[str, ...] = (
    "בטח, אשמח לעזור. אפשר לשמוע עוד קצת פרטים?",
    "תודה, הבנתי. אני בודקת את זה בשבילך.",
    "מצוין. יש עוד משהו שאפשר לעזור בו היום?",
    "רשמתי הכול. תודה רבה שהתקשרת.",
)

_GREETING = re.compile(re.escape(GREETING_MARKER) + r'\s*"(.*)"')  # greedy: last quote on line
_SAY_EXACTLY = re.compile(re.escape(SAY_EXACTLY_MARKER) + r'\s*"(.*)"', re.DOTALL)
_HEBREW = re.compile(r"[\u0590-\u05FF]")
_LETTER = re.compile(r"[^\W\d_]")
_SPEAK_HEBREW = re.compile(r"\bspeak\s+hebrew\b", re.IGNORECASE)


def greeting_in(instructions: str) -> str | None:
    """The double-quoted text after `GREETING_MARKER`, if the instructions carry one."""
    match = _GREETING.search(instructions)
    return match.group(1) if match else None


def mostly_hebrew(text: str) -> bool:
    """True when more than half of the letters are Hebrew."""
    letters = len(_LETTER.findall(text))
    return letters > 0 and len(_HEBREW.findall(text)) * 2 > letters


def wants_hebrew(instructions: str) -> bool:
    """Mostly Hebrew instructions, or ones that say to speak Hebrew (as the product's do)."""
    return mostly_hebrew(instructions) or _SPEAK_HEBREW.search(instructions) is not None


def language_of(text: str) -> str:
    """The espeak language to speak `text` in ("he" or "en")."""
    return "he" if mostly_hebrew(text) else "en"


class ReplyScript:
    """Per-session source of assistant lines and caller transcripts."""

    __slots__ = ("_replies", "_replies_used", "_transcripts", "_transcripts_used")

    def __init__(self, replies: list[str] | None, caller_transcripts: list[str] | None) -> None:
        self._replies = list(replies) if replies else None
        self._replies_used = 0
        self._transcripts = list(caller_transcripts or ())
        self._transcripts_used = 0

    def text_for(self, *, session_instructions: str, response_instructions: str | None,
                 first_assistant_response: bool) -> str:
        if response_instructions:
            # A request to speak a given text (the product renders greetings this way).
            quoted = greeting_in(response_instructions)
            verbatim = _SAY_EXACTLY.search(response_instructions)
            if verbatim:
                return verbatim.group(1)
            if quoted:
                return quoted
            intent = (intent_of(response_instructions)
                      if len(response_instructions) < SHORT_INSTRUCTIONS_CHARS
                      else Intent.GENERIC)
            hebrew = wants_hebrew(session_instructions) or wants_hebrew(response_instructions)
            return line_for(intent, "he" if hebrew else "en")
        if first_assistant_response:
            greeting = greeting_in(session_instructions)
            if greeting:
                return greeting
        return self.next_reply(session_instructions)

    def next_reply(self, session_instructions: str) -> str:
        if self._replies is not None:
            replies: tuple[str, ...] | list[str] = self._replies
        elif wants_hebrew(session_instructions):
            replies = DEFAULT_REPLIES_HE
        else:
            replies = DEFAULT_REPLIES_EN
        line = replies[self._replies_used % len(replies)]
        self._replies_used += 1
        return line

    def next_transcript(self, speech_ms: int) -> str:
        if self._transcripts_used < len(self._transcripts):
            line = self._transcripts[self._transcripts_used]
            self._transcripts_used += 1
            return line
        return f"(caller speech {speech_ms / 1000:.2f} s)"
