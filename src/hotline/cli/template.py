"""`hotline template …`: the outbound call templates of each business."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from hotline.business import BusinessConfig, GreetingTiming, TemplateConfig
from hotline.cli import app
from hotline.cli.announce import announce_config_change
from hotline.cli.db import console, fail, run_with_store
from hotline.store import Store
from hotline.store.validation import check_greeting_template

template_app = typer.Typer(
    help="Outbound call templates: a greeting with {placeholders} and instructions.",
    no_args_is_help=True,
)
app.add_typer(template_app, name="template")


@template_app.command("add")
def add(
    business: Annotated[str, typer.Option(help="Slug of the business that places the call.")],
    name: Annotated[str, typer.Option(help="Template name, e.g. appointment-reminder.")],
    greeting: Annotated[
        str, typer.Option(help='Opening line with placeholders, e.g. "Hi {name}, …".')
    ],
    instructions: Annotated[str, typer.Option(help="What the agent should do on the call.")] = "",
    greeting_timing: Annotated[
        GreetingTiming | None,
        typer.Option(help="Greet at pickup, or after the answering-machine verdict "
                     "(default: the business's)."),
    ] = None,
) -> None:
    """Add an outbound template to a business, or replace the one of the same name."""
    template = TemplateConfig(name=name, greeting_template=greeting, instructions=instructions,
                              greeting_timing=greeting_timing)
    saved = run_with_store(lambda store: store.save_template(business, template))
    announce_config_change()  # a template is the business's config too
    placeholders = ", ".join(f"{{{p}}}" for p in check_greeting_template(saved.greeting_template))
    console().print(
        Text.assemble(
            "saved template ",
            (saved.name, "bold"),
            " of ",
            (business, "bold"),
            f" (placeholders: {placeholders or 'none'})",
        )
    )


@template_app.command("list")
def list_(
    business: Annotated[str | None, typer.Option(help="Only this business's templates.")] = None,
) -> None:
    """The outbound templates of every business, or of one."""

    async def load(store: Store) -> list[BusinessConfig] | None:
        if business is None:
            return await store.list_businesses()
        found = await store.get_business(business)
        return None if found is None else [found]

    businesses = run_with_store(load)
    if businesses is None:
        fail(f"no business {business!r}; `hotline business list` shows them all")
    console().print(templates_table(businesses))


def templates_table(businesses: Sequence[BusinessConfig], *, instructions: bool = False) -> Table:
    """The businesses' templates; their instructions in full, or only their length. The
    greeting timing is the template's own, or its business's."""
    count = sum(len(b.templates) for b in businesses)
    table = Table(title=f"{count} outbound templates", title_justify="left")
    for column in ("business", "name", "placeholders", "greeting"):
        table.add_column(column, overflow="fold")
    table.add_column("instructions", overflow="fold", justify="left" if instructions else "right")
    table.add_column("greeting timing")
    for b in businesses:
        for t in b.templates:
            table.add_row(
                b.slug,
                t.name,
                ", ".join(check_greeting_template(t.greeting_template)),
                Text(t.greeting_template),
                Text(t.instructions) if instructions else f"{len(t.instructions)} chars",
                str(t.greeting_timing or f"{b.greeting_timing} (business's)"),
            )
    return table
