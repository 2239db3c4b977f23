"""The demo businesses: realistic, and sized for the two prompts they feed."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hotline.business import BUILTIN_TOOLS, BusinessConfig
from hotline.business_yaml import dump_business_yaml, load_businesses_yaml
from hotline.hours import hours_answer
from hotline.prompts import compact_prompt, full_prompt, render_greeting
from hotline.store.validation import check_greeting_template

ROOT = Path(__file__).parents[1]
PACKAGED = ROOT / "src" / "hotline" / "data" / "demo_businesses.yaml"
EXAMPLE = ROOT / "examples" / "businesses.yaml"
GA_VOICES = {
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
}
HEBREW_LETTER = re.compile(r"[\u05d0-\u05ea]")
LATIN_LETTER = re.compile(r"[A-Za-z]")

DEMO = {b.language: b for b in load_businesses_yaml(PACKAGED)}


def test_examples_file_is_the_packaged_demo_file() -> None:
    assert EXAMPLE.read_bytes() == PACKAGED.read_bytes()


def test_one_hebrew_and_one_english_business() -> None:
    assert sorted(DEMO) == ["en", "he"]
    hebrew, english = DEMO["he"], DEMO["en"]
    assert hebrew.phone_numbers == ("+97235550100",)
    assert english.phone_numbers == ("+14155550100",)
    assert (hebrew.timezone, english.timezone) == ("Asia/Jerusalem", "America/Los_Angeles")
    assert hebrew.bot_speaks_first and english.bot_speaks_first
    assert {hebrew.voice, english.voice} <= GA_VOICES


@pytest.mark.parametrize("language", ["he", "en"])
def test_prompt_sizes(language: str) -> None:
    business = DEMO[language]
    assert 600 <= len(compact_prompt(business, business.greeting)) <= 900
    assert 3000 <= len(full_prompt(business)) <= 4000


def _letters_in(text: str, alphabet: re.Pattern[str]) -> float:
    letters = len(HEBREW_LETTER.findall(text)) + len(LATIN_LETTER.findall(text))
    return len(alphabet.findall(text)) / max(letters, 1)


@pytest.mark.parametrize(
    "field", ["name", "greeting", "role", "tone", "greeting_rules", "knowledge", "policies", "faq"]
)
def test_hebrew_business_is_written_in_hebrew(field: str) -> None:
    assert _letters_in(getattr(DEMO["he"], field), HEBREW_LETTER) > 0.95
    assert _letters_in(getattr(DEMO["en"], field), LATIN_LETTER) == 1.0


@pytest.mark.parametrize(("language", "question"), [("he", "ש:"), ("en", "Q:")])
def test_faq_has_at_least_eight_pairs(language: str, question: str) -> None:
    answer = {"he": "ת:", "en": "A:"}[language]
    lines = DEMO[language].faq.splitlines()
    assert len(lines) >= 8
    assert all(line.startswith(question) and f" {answer} " in line for line in lines)


@pytest.mark.parametrize(
    ("language", "must_mention"),
    [
        ("he", ["24 שעות", "101", "פרטיות", "אסור", "08:00–20:00", "250"]),
        ("en", ["2 hours", "911", "Privacy", "Never", "7 am to 6 pm", "$89"]),
    ],
)
def test_knowledge_and_policies_are_concrete(language: str, must_mention: list[str]) -> None:
    business = DEMO[language]
    text = business.knowledge + business.policies
    for phrase in must_mention:
        assert phrase in text


@pytest.mark.parametrize("language", ["he", "en"])
def test_one_outbound_template_with_a_name_placeholder(language: str) -> None:
    (template,) = DEMO[language].templates
    assert check_greeting_template(template.greeting_template) == ("name",)
    assert template.instructions
    greeting = render_greeting(template, {"name": "Dana"})
    assert "Dana" in greeting and "{" not in greeting


@pytest.mark.parametrize("language", ["he", "en"])
def test_yaml_round_trip(language: str, tmp_path: Path) -> None:
    business: BusinessConfig = DEMO[language]
    path = tmp_path / "one.yaml"
    path.write_text(dump_business_yaml(business), encoding="utf-8")
    assert load_businesses_yaml(path) == [business]


# -- call control ---------------------------------------------------------------------------
def test_both_businesses_can_transfer_to_a_person() -> None:
    hebrew, english = DEMO["he"], DEMO["en"]
    assert (hebrew.transfer_number, english.transfer_number) == ("+97235550199", "+14155550199")
    assert hebrew.tools == english.tools == BUILTIN_TOOLS
    assert transfer_is_not_a_business_number(hebrew) and transfer_is_not_a_business_number(english)
    assert english.dtmf_actions == (("0", "transfer_to_human"),)
    assert hebrew.dtmf_actions == ()
    assert hebrew.max_call_duration_s == english.max_call_duration_s == 600
    assert hebrew.http_tools == english.http_tools == ()


def transfer_is_not_a_business_number(business: BusinessConfig) -> bool:
    return business.transfer_number not in business.phone_numbers


WEEK = {
    "he": (("mon", "08:00-20:00"), ("tue", "08:00-20:00"), ("wed", "08:00-20:00"),
           ("thu", "08:00-20:00"), ("fri", "08:00-13:00"), ("sat", "closed"),
           ("sun", "08:00-20:00")),
    "en": (("mon", "07:00-18:00"), ("tue", "07:00-18:00"), ("wed", "07:00-18:00"),
           ("thu", "07:00-18:00"), ("fri", "07:00-18:00"), ("sat", "08:00-14:00"),
           ("sun", "closed")),
}


@pytest.mark.parametrize("language", ["he", "en"])
def test_opening_hours_are_the_ones_the_knowledge_states(language: str) -> None:
    business = DEMO[language]
    assert business.opening_hours == WEEK[language]
    # What check_hours answers must agree with what the prompt says.
    stated = {"he": ["ראשון עד חמישי 08:00–20:00", "שישי 08:00–13:00", "בשבת", "סגורה"],
              "en": ["Monday to Friday 7 am to 6 pm", "Saturday 8 am to 2 pm", "closed Sunday"]}
    for phrase in stated[language]:
        assert phrase in business.knowledge, phrase


@pytest.mark.parametrize(
    ("language", "utc", "open_now", "next_or_close"),
    [
        # Sunday 09:00 in Tel Aviv (UTC+2 in March): a working day there.
        ("he", datetime(2026, 3, 1, 7, 0, tzinfo=UTC), True, ("closes_at", "20:00")),
        # Friday 14:00 in Tel Aviv: closed until Sunday morning.
        ("he", datetime(2026, 3, 6, 12, 0, tzinfo=UTC), False,
         ("next_opening", "Sunday 08:00")),
        # Saturday 09:00 in San Francisco (UTC-8 in February).
        ("en", datetime(2026, 2, 28, 17, 0, tzinfo=UTC), True, ("closes_at", "14:00")),
        # Sunday noon in San Francisco: next is Monday 07:00.
        ("en", datetime(2026, 3, 1, 20, 0, tzinfo=UTC), False,
         ("next_opening", "Monday 07:00")),
    ],
)
def test_check_hours_answers_in_the_business_timezone(
    language: str, utc: datetime, open_now: bool, next_or_close: tuple[str, str]
) -> None:
    business = DEMO[language]
    answer = hours_answer(business.opening_hours, business.timezone, utc)
    assert answer["open_now"] is open_now
    key, value = next_or_close
    assert answer[key] == value


@pytest.mark.parametrize(("language", "alphabet"), [("he", HEBREW_LETTER),
                                                    ("en", LATIN_LETTER)])
def test_each_template_leaves_a_voicemail_in_the_business_language(
    language: str, alphabet: re.Pattern[str]
) -> None:
    (template,) = DEMO[language].templates
    assert check_greeting_template(template.voicemail_template, "voicemail") == ("name",)
    assert _letters_in(template.voicemail_template.replace("{name}", ""), alphabet) > 0.95
    voicemail = render_greeting(replace(template, greeting_template=template.voicemail_template),
                                {"name": "Dana"})
    assert voicemail.startswith(("Hi Dana", "שלום Dana"))
    assert 80 <= len(voicemail) <= 300  # one breath after the beep, not a speech
