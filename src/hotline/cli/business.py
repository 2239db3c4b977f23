"""`hotline business …`: add, list, show, import and export the businesses Hotline answers for."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from hotline.business import BusinessConfig, GreetingTiming
from hotline.business_yaml import dump_business_yaml, load_businesses_yaml
from hotline.cli import app
from hotline.cli.announce import announce_config_change
from hotline.cli.db import console, fail, run_with_store
from hotline.cli.template import templates_table
from hotline.errors import HotlineError
from hotline.prompts import compact_prompt, full_prompt, language_name
from hotline.store import Store

business_app = typer.Typer(
    help="The businesses Hotline answers for: numbers, greeting, voice, prompts.",
    no_args_is_help=True,
)
app.add_typer(business_app, name="business")


@business_app.command("add")
def add(
    slug: Annotated[str, typer.Option(help="Short id, e.g. smile-dental (a-z, 0-9, -).")],
    name: Annotated[str, typer.Option(help="The business's name, as callers know it.")],
    language: Annotated[str, typer.Option(help="Language code the agent speaks: he, en, …")],
    voice: Annotated[str, typer.Option(help="Realtime voice: marin, cedar, alloy, …")],
    greeting: Annotated[str, typer.Option(help="The agent's first words on inbound calls.")],
    number: Annotated[
        list[str], typer.Option("--number", help="E.164 number it answers (repeatable).")
    ],
    role: Annotated[str, typer.Option(help="Who the agent is [default: from --name].")] = "",
    tone: Annotated[str, typer.Option(help="How it speaks.")] = "",
    greeting_rules: Annotated[str, typer.Option(help="How it opens the call.")] = "",
    knowledge: Annotated[str, typer.Option(help="Hours, services, prices, address.")] = "",
    policies: Annotated[str, typer.Option(help="Cancellations, emergencies, limits.")] = "",
    faq: Annotated[str, typer.Option(help="Frequent questions and their answers.")] = "",
    caller_speaks_first: Annotated[
        bool, typer.Option("--caller-speaks-first", help="Wait for the caller to talk first.")
    ] = False,
    timezone: Annotated[str, typer.Option(help="IANA time zone, e.g. Asia/Jerusalem.")] = "UTC",
) -> None:
    """Add a business (to change one later: `business export`, edit, `business import`)."""
    business = BusinessConfig(
        slug=slug,
        name=name,
        language=language,
        voice=voice,
        greeting=greeting,
        role=role or f"You are the friendly phone assistant of {name}.",
        tone=tone,
        greeting_rules=greeting_rules,
        knowledge=knowledge,
        policies=policies,
        faq=faq,
        phone_numbers=tuple(number),
        bot_speaks_first=not caller_speaks_first,
        timezone=timezone,
    )

    async def save(store: Store) -> BusinessConfig | None:
        if await store.get_business(slug) is not None:
            return None
        return await store.save_business(business)

    saved = run_with_store(save)
    if saved is None:
        fail(f"business {slug!r} exists already; change it with `hotline business import`")
    announce_config_change()
    console().print(
        Text.assemble("added business ", (saved.slug, "bold"), f" ({_prompt_sizes(saved)})")
    )


@business_app.command("list")
def list_() -> None:
    """Every business, with its numbers, templates and prompt sizes."""
    businesses = run_with_store(lambda store: store.list_businesses())
    table = Table(title=f"{len(businesses)} businesses", title_justify="left")
    table.add_column("slug", no_wrap=True)
    table.add_column("name")
    table.add_column("language")
    table.add_column("voice")
    table.add_column("numbers", no_wrap=True)
    table.add_column("templates", overflow="fold")
    table.add_column("compact", justify="right")
    table.add_column("full", justify="right")
    for b in businesses:
        table.add_row(
            b.slug,
            b.name,
            b.language,
            b.voice,
            "\n".join(b.phone_numbers),
            "\n".join(t.name for t in b.templates),
            str(len(compact_prompt(b, b.greeting))),
            str(len(full_prompt(b))),
        )
    console().print(table)


@business_app.command("show")
def show(slug: Annotated[str, typer.Argument(help="The business's slug.")]) -> None:
    """Everything about one business: fields, prompt sizes and templates."""
    business = _get(slug)
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold", no_wrap=True)
    fields.add_column(overflow="fold")
    rows = (
        ("slug", business.slug),
        ("name", business.name),
        ("language", f"{business.language} ({language_name(business.language)})"),
        ("voice", business.voice),
        ("numbers", ", ".join(business.phone_numbers)),
        ("timezone", business.timezone),
        ("speaks first", "the agent" if business.bot_speaks_first else "the caller"),
        ("prompt sizes", _prompt_sizes(business)),
        ("greeting", business.greeting),
        ("role", business.role),
        ("tone", business.tone),
        ("greeting rules", business.greeting_rules),
        ("knowledge", business.knowledge),
        ("policies", business.policies),
        ("faq", business.faq),
        ("tools", ", ".join(business.tools) or "none"),
        ("transfer to", business.transfer_number or "—"),
        ("hours", ", ".join(f"{day} {ranges}" for day, ranges in business.opening_hours)
         or "—"),
        ("keys", ", ".join(f"{digit} → {action}" for digit, action in business.dtmf_actions)
         or "—"),
        ("call limit", f"{business.max_call_duration_s} s"),
        ("http tools", ", ".join(f"{t.name} ({t.url})" for t in business.http_tools) or "—"),
        ("greeting timing", f"{business.greeting_timing} ({_TIMING[business.greeting_timing]})"),
        ("recording", (f"on, kept {_days(business.recording_retention_days)}"
                       if business.recording else
                       f"off (when on, kept {_days(business.recording_retention_days)})")),
    )
    for label, value in rows:
        fields.add_row(label, Text(value))
    out = console()
    out.print(fields)
    out.print(templates_table([business], instructions=True))


def _days(days: int) -> str:
    return f"{days} day" if days == 1 else f"{days} days"


@business_app.command("export")
def export(slug: Annotated[str, typer.Argument(help="The business's slug.")]) -> None:
    """Print one business as YAML, in the format `business import` reads."""
    typer.echo(dump_business_yaml(_get(slug)), nl=False)


@business_app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="YAML file of businesses (see examples/).")],
) -> None:
    """Add or update the businesses of a YAML file (templates it names are upserted)."""
    try:
        businesses = load_businesses_yaml(file)
    except HotlineError as exc:
        fail(str(exc))

    async def save_all(store: Store) -> list[tuple[str, BusinessConfig]]:
        done: list[tuple[str, BusinessConfig]] = []
        for business in businesses:
            stored = await store.get_business(business.slug)
            if stored is not None and _unchanged(stored, business):
                done.append(("unchanged", stored))
            else:
                saved = await store.save_business(business)
                done.append(("added" if stored is None else "updated", saved))
        return done

    done = run_with_store(save_all)
    if any(action != "unchanged" for action, _ in done):
        announce_config_change()
    table = Table(title=f"{file}: {len(done)} businesses", title_justify="left")
    table.add_column("slug", no_wrap=True)
    table.add_column("")
    table.add_column("numbers", no_wrap=True)
    table.add_column("templates", overflow="fold")
    table.add_column("compact", justify="right")
    table.add_column("full", justify="right")
    for action, b in done:
        table.add_row(
            b.slug,
            Text(action, style="green" if action == "added" else "yellow"),
            "\n".join(b.phone_numbers),
            "\n".join(t.name for t in b.templates),
            str(len(compact_prompt(b, b.greeting))),
            str(len(full_prompt(b))),
        )
    console().print(table)


# What each greeting timing means, for `business show`.
_TIMING = {
    GreetingTiming.IMMEDIATE: "outbound: greets at pickup; a machine's AMD verdict cuts it",
    GreetingTiming.AFTER_AMD: "outbound: silent until the AMD verdict, at most "
    "HOTLINE_AMD_GREETING_CAP_MS",
}


def _get(slug: str) -> BusinessConfig:
    business = run_with_store(lambda store: store.get_business(slug))
    if business is None:
        fail(f"no business {slug!r}; `hotline business list` shows them all")
    return business


def _prompt_sizes(business: BusinessConfig) -> str:
    compact = len(compact_prompt(business, business.greeting))
    return f"compact {compact} chars, full {len(full_prompt(business))} chars"


def _unchanged(stored: BusinessConfig, wanted: BusinessConfig) -> bool:
    """Saving `wanted` would change nothing (templates it does not name are kept anyway)."""
    stored_templates = {t.name: replace(t, id=None) for t in stored.templates}
    return replace(stored, id=None, templates=()) == replace(wanted, id=None, templates=()) and all(
        stored_templates.get(t.name) == replace(t, id=None) for t in wanted.templates
    )
