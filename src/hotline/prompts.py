"""Build the two prompts of a call and its greeting text.

The compact prompt is all the engine needs to say the greeting well (~800 chars): a short
prompt keeps the engine's time to first audio low. The full prompt (~3200 chars and up)
replaces it with `session.update` once the greeting is done.
"""

from __future__ import annotations

import enum
import string

from hotline.business import BusinessConfig, TemplateConfig
from hotline.errors import TemplateError

LANGUAGE_NAMES = {"he": "Hebrew", "en": "English", "ar": "Arabic", "ru": "Russian",
                  "es": "Spanish", "fr": "French"}
# The marker the greeting follows; the engine simulator looks for it too.
GREETING_MARKER = "Open the call with exactly this greeting:"


def language_name(code: str) -> str:
    return LANGUAGE_NAMES.get(code, code)


def render_greeting(template: TemplateConfig, variables: dict[str, str]) -> str:
    """Fill a template's {placeholders}; a missing one is an error, not a blank."""
    fields = {name for _, name, _, _ in string.Formatter().parse(template.greeting_template)
              if name}
    missing = sorted(fields - variables.keys())
    if missing:
        raise TemplateError(
            f"template {template.name!r} needs {', '.join(missing)}; pass --var NAME=VALUE"
        )
    return template.greeting_template.format_map(variables)


def compact_prompt(business: BusinessConfig, greeting: str, extra: str = "") -> str:
    parts = [
        business.role.strip(),
        f"Tone: {business.tone.strip()}",
        f"Always speak {language_name(business.language)}.",
        business.greeting_rules.strip(),
    ]
    if extra:
        parts.append(extra.strip())
    parts.append(f'{GREETING_MARKER} "{greeting}"')
    return "\n".join(p for p in parts if p)


def full_prompt(business: BusinessConfig, extra: str = "", *,
                greeting: str | None = None) -> str:
    """The whole prompt, for after the greeting. `greeting`: a one-prompt setup that greets
    from this prompt (the `greeting_in_full_prompt` setting) carries the greeting here, as
    the compact prompt does, instead of saying it has been said."""
    said = ("The greeting has already been said; do not greet again." if greeting is None
            else f'{GREETING_MARKER} "{greeting}"')
    parts = [
        business.role.strip(),
        f"Tone: {business.tone.strip()}",
        f"Always speak {language_name(business.language)}.",
        said,
        "# What you know\n" + business.knowledge.strip(),
        "# Policies\n" + business.policies.strip(),
        "# Frequent questions\n" + business.faq.strip(),
    ]
    if extra:
        parts.append("# This call\n" + extra.strip())
    return "\n\n".join(p for p in parts if p)


# -- lines the call core asks for (response.create instructions) ------------------------
# Short on purpose: the model says them in the call's language; the simulated engine
# answers them with a stock line for what they ask (`hotline.sim.engine_lines`), and says
# the text after SAY_EXACTLY_MARKER word for word.
SAY_EXACTLY_MARKER = "Say exactly this, word for word, and nothing else:"
NUDGE_INSTRUCTIONS = "Ask the caller briefly, in their language, whether they are still there."
SILENCE_GOODBYE_INSTRUCTIONS = ("The line has been silent for a while. Say a short, polite "
                                "goodbye in the caller's language.")
TIME_LIMIT_INSTRUCTIONS = ("The call has reached its time limit. Apologize briefly and say a "
                           "polite goodbye in the caller's language.")
GOODBYE_INSTRUCTIONS = "Say a short, warm goodbye in the caller's language."
DRAIN_GOODBYE_INSTRUCTIONS = ("This line has to close now for maintenance. Apologize briefly, "
                              "ask the caller to call again, and say a polite goodbye in the "
                              "caller's language.")
HANDOVER_INSTRUCTIONS = ("Tell the caller in one short sentence, in their language, that you "
                         "are connecting them to a person now.")


def say_exactly(text: str) -> str:
    """Instructions for a response that says `text` verbatim (a voicemail message)."""
    return f'{SAY_EXACTLY_MARKER} "{text}"'


# -- canned lines: said without the engine, as cached audio (see hotline.canned) -----------
class CannedLine(enum.Enum):
    """A line the caller hears when the engine cannot speak."""

    APOLOGY = "apology"  # no engine can be had: leave a message after the tone
    HOLD = "hold"  # the engine dropped while the caller waited on it: "one moment"


APOLOGY_TEXTS: dict[str, str] = {
    "en": ("Sorry, we're having technical trouble. Please leave your name, number and "
           "message after the tone."),
    "he": "סליחה, אנחנו נתקלים כרגע בבעיה טכנית. נא להשאיר שם, מספר טלפון והודעה אחרי הצליל.",
}
HOLD_TEXTS: dict[str, str] = {
    "en": "One moment, please.",
    "he": "רק רגע, בבקשה.",
}
CANNED_TEXTS: dict[CannedLine, dict[str, str]] = {CannedLine.APOLOGY: APOLOGY_TEXTS,
                                                  CannedLine.HOLD: HOLD_TEXTS}
APOLOGY_FALLBACK_LANGUAGE = "en"  # canned lines in a language without their own


def canned_text(line: CannedLine, language: str) -> str:
    """The line's words in `language`; English for a language without them."""
    texts = CANNED_TEXTS[line]
    return texts.get(language, texts[APOLOGY_FALLBACK_LANGUAGE])


def apology_text(language: str) -> str:
    """The apology in `language`; English for a language without one."""
    return canned_text(CannedLine.APOLOGY, language)


def hold_text(language: str) -> str:
    """The hold line in `language`; English for a language without one."""
    return canned_text(CannedLine.HOLD, language)
