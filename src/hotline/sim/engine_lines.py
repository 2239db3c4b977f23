"""What the simulated model says when a response comes with instructions of its own.

A real model reads "tell the caller you are connecting them to a person" and says so in the
caller's language; the simulator cannot understand, so it recognises what was asked by
keywords and says a canned line for it — never the instruction text itself. The call core's
closing lines (`hotline.prompts`: handover, goodbye, "are you still there?", the silence
goodbye, the time limit) each have a line, in Hebrew and English (English for any other
language); anything else gets a neutral generic line.
"""

from __future__ import annotations

import re
from enum import Enum


class Intent(Enum):
    HANDOVER = "handover"
    NUDGE = "nudge"
    SILENCE_GOODBYE = "silence_goodbye"
    TIME_LIMIT = "time_limit"
    GOODBYE = "goodbye"
    GENERIC = "generic"


# Checked in this order: the first whose pattern occurs in the instructions wins, so the
# specific goodbyes (time limit, silence) come before the plain one.
_KEYWORDS: tuple[tuple[Intent, re.Pattern[str]], ...] = (
    (Intent.TIME_LIMIT, re.compile(
        r"time\s*limit|out of time|time is up|מגבלת (ה)?זמן|נגמר (ה)?זמן", re.IGNORECASE)),
    (Intent.HANDOVER, re.compile(
        r"\b(a person|a human|human agent|live agent|representative|transfer\w*|connect\w*)\b"
        r"|נציג|להעביר|מעביר", re.IGNORECASE)),
    (Intent.NUDGE, re.compile(r"still there|still on the line|עדיין (שם|על הקו|איתנו)",
                              re.IGNORECASE)),
    (Intent.SILENCE_GOODBYE, re.compile(r"\bsilen(t|ce)\b|\bquiet\b|שקט|שתיקה",
                                        re.IGNORECASE)),
    (Intent.GOODBYE, re.compile(r"good\s*-?bye|\bbye\b|farewell|end the call|להתראות|פרידה",
                                re.IGNORECASE)),
)

LINES: dict[Intent, dict[str, str]] = {
    Intent.HANDOVER: {
        "en": "One moment, please. I'm connecting you to a person now.",
        "he": "רק רגע, אני מעבירה אותך עכשיו לנציג.",
    },
    Intent.NUDGE: {
        "en": "Hello? Are you still there?",
        "he": "הלו? את או אתה עדיין על הקו?",
    },
    Intent.SILENCE_GOODBYE: {
        "en": "I can't hear anyone on the line, so I'll end the call now. Goodbye.",
        "he": "אני לא שומעת אף אחד על הקו, אז אני מסיימת את השיחה. להתראות.",
    },
    Intent.TIME_LIMIT: {
        "en": "I'm sorry, we've reached the time limit for this call. Thank you, and goodbye.",
        "he": "סליחה, הגענו למגבלת הזמן של השיחה. תודה רבה ולהתראות.",
    },
    Intent.GOODBYE: {
        "en": "Thank you for calling. Goodbye, and have a great day!",
        "he": "תודה שהתקשרת, יום נעים ולהתראות!",
    },
    Intent.GENERIC: {
        "en": "Of course. Let me take care of that for you right away.",
        "he": "בשמחה, אני מטפלת בזה מיד.",
    },
}


def intent_of(instructions: str) -> Intent:
    """What `instructions` ask the model to say, as far as keywords tell."""
    for intent, pattern in _KEYWORDS:
        if pattern.search(instructions):
            return intent
    return Intent.GENERIC


def line_for(intent: Intent, language: str) -> str:
    """The canned line for `intent` in `language` ("he", "en"; others get English)."""
    lines = LINES[intent]
    return lines.get(language, lines["en"])
