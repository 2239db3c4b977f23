"""The benchmark's tenants: one business per lane (branches of one dental group, the same
but for the branch name), and the credentials the server and the simulators share.

A lane is a concurrency slot that carries one call at a time; its business tells its calls'
engine sessions apart (`lane_of` reads the branch back from a session's instructions).
"""

from __future__ import annotations

import re

from hotline.business import BusinessConfig, TemplateConfig
from hotline.prompts import compact_prompt, full_prompt, render_greeting

ACCOUNT_SID = "AC" + "b" * 32
AUTH_TOKEN = "bench-auth-token"
OPENAI_KEY = "sk-bench"
OUTBOUND_TEMPLATE = "reminder"  # each business's outbound template (no per-call variables)

BRANCHES = ("Oakland", "Berkeley", "Alameda", "Fremont", "Hayward", "San Leandro",
            "Walnut Creek", "Concord", "Richmond", "Daly City", "San Mateo", "Redwood City",
            "Palo Alto", "Mountain View", "Sunnyvale", "San Jose")
_LANE_IN_INSTRUCTIONS = re.compile(r"at the (.+?) clinic of Bayside Family Dental")


def branch_name(lane: int) -> str:
    return BRANCHES[lane] if lane < len(BRANCHES) else f"Bay Area {lane + 1}"


def lane_number(lane: int) -> str:
    return f"+1510555{2000 + lane:04d}"


def bench_business(lane: int) -> BusinessConfig:
    """A realistic tenant: compact prompt ~850 chars, full prompt ~3500 chars."""
    branch = branch_name(lane)
    return BusinessConfig(
        slug=f"bayside-dental-{lane + 1}",
        name=f"Bayside Family Dental ({branch})",
        language="en",
        voice="marin",
        greeting=(f"Thank you for calling Bayside Family Dental in {branch}, this is Maya. "
                  "How can I help you today?"),
        role=(f"You are Maya, the front-desk receptionist at the {branch} clinic of Bayside "
              "Family Dental, a group of family dental practices in the San Francisco Bay "
              "Area. You answer the phone for patients and for people who want to become "
              "patients: you book, move and cancel appointments, answer questions about the "
              "clinic, and take messages for the dentists and the billing team."),
        tone=("warm, calm and brief; one question at a time; plain words, no dental jargon; "
              "repeat names, dates and times back to confirm them"),
        greeting_rules=("Say the greeting exactly once, word for word, then stop and listen. "
                        "If the caller speaks over you, stop at once and let them finish. "
                        "Never add a second question to the greeting."),
        knowledge=(
            f"The {branch} clinic is open Monday to Friday 8:00-18:00 and Saturday 9:00-14:00; "
            "closed on Sundays and public holidays. Three dentists work here: Dr. Elena Ruiz "
            "(general and family dentistry, Monday to Thursday), Dr. Sam Okafor (general "
            "dentistry and crowns, Tuesday to Saturday) and Dr. Priya Natarajan (children and "
            "teenagers, Monday, Wednesday and Friday). Two hygienists, Lena and Marco, do "
            "cleanings every weekday. Services: check-ups and cleanings (45 minutes), "
            "fillings, crowns and bridges, root canals on the first molars and simpler, "
            "whitening, night guards, children's dentistry from age two, and emergency "
            "appointments for pain, swelling or a broken tooth, kept free every morning at "
            "8:00 and 8:45. Implants, wisdom teeth and orthodontics are referred to partner "
            "specialists. New patients book a 60-minute first visit with X-rays. The clinic "
            "has free parking behind the building, step-free access and a lift. Prices: "
            "check-up and cleaning $145, filling from $180, whitening $390. Payment by card, "
            "cash or HSA card; monthly plans for treatments over $1,000."),
        policies=(
            "Never give medical or dental advice and never say a problem is or is not serious: "
            "offer the earliest appointment, and for heavy bleeding, swelling that affects "
            "breathing or swallowing, or a high fever, tell the caller to call 911 or go to "
            "the emergency room now. Cancellations and changes need 24 hours' notice; later "
            "ones, and missed appointments, cost $50, waived once a year. Children under 16 "
            "come with a parent or guardian. Never read out or confirm a patient's records, "
            "balance or insurance details on the phone: the billing team calls back after "
            "checking identity. Take a message (name, number, best time to call, the reason "
            "in one sentence) for anything you cannot settle, and say when the team will "
            "call back: the same day for messages before 15:00, otherwise the next working "
            "day. Do not promise prices for treatments that need an examination first."),
        faq=(
            "Q: Do you take my insurance? A: Most PPO plans, Delta Dental, MetLife, Cigna and "
            "Aetna; bring the card to the first visit, and the front desk checks the cover "
            "before treatment. HMO plans are not accepted. "
            "Q: Can I get an appointment today? A: Emergency slots are kept every morning; "
            "otherwise the next free check-up is usually within a week. "
            "Q: Do you see children? A: Yes, from age two, with Dr. Natarajan. "
            "Q: Can I come in with a toothache? A: Yes: offer the next emergency slot. "
            "Q: How long is a cleaning? A: About 45 minutes; a first visit takes an hour. "
            "Q: Do you do sedation? A: Nitrous oxide for anxious patients; no general "
            "anaesthesia at this clinic. "
            "Q: Where do I park? A: Free parking behind the building, entrance on the side "
            "street. Q: Can I pay in instalments? A: Yes, for treatments over $1,000."),
        phone_numbers=(lane_number(lane),),
        bot_speaks_first=True,
        timezone="America/Los_Angeles",
        templates=(TemplateConfig(
            OUTBOUND_TEMPLATE,
            greeting_template=(f"Hi, this is Maya from Bayside Family Dental in {branch}, "
                               "calling about your appointment tomorrow at nine."),
            instructions=("Confirm tomorrow's 9:00 check-up; if the time does not suit, offer "
                          "to move it."),
            voicemail_template=(f"Hi, this is Maya from Bayside Family Dental in {branch}. "
                                "Please call us back to confirm your appointment tomorrow "
                                "at nine. Thank you!")),),
    )


def outbound_texts(business: BusinessConfig) -> tuple[str, str]:
    """(greeting, voicemail) of the business's outbound template, as the server renders
    them for a call placed without variables."""
    template = business.template(OUTBOUND_TEMPLATE)
    return render_greeting(template, {}), template.voicemail_template


def lane_of(instructions: str) -> int | None:
    """The lane whose business these instructions are for (None: not a lane's, e.g. the
    server's greeting-render sessions)."""
    match = _LANE_IN_INSTRUCTIONS.search(instructions)
    if match is None:
        return None
    branch = match.group(1)
    if branch in BRANCHES:
        return BRANCHES.index(branch)
    number = re.fullmatch(r"Bay Area (\d+)", branch)
    return int(number.group(1)) - 1 if number else None


def prompt_sizes(business: BusinessConfig) -> tuple[int, int]:
    """(compact, full) prompt lengths in characters, as the server builds them."""
    return (len(compact_prompt(business, business.greeting)), len(full_prompt(business)))
