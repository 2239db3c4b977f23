"""The demo businesses: realistic, and sized for the two prompts they feed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hotline.business import BusinessConfig
from hotline.business_yaml import dump_business_yaml, load_businesses_yaml
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
