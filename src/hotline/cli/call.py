"""`hotline call`: a simulated inbound call to a running server, or a real outbound one."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import typer
from rich.console import Console

from hotline.cli import app
from hotline.settings import load_settings
from hotline.sim.phone import SimulatedPhone
from hotline.sim.script import (
    CallScript,
    Hangup,
    Say,
    Step,
    WaitForAgentAudio,
    WaitForAgentSilence,
)

call_app = typer.Typer(help="Place calls: simulated inbound ones, outbound ones through Twilio.",
                       no_args_is_help=True)
app.add_typer(call_app, name="call")


def _server_url(server: str | None) -> str:
    settings = load_settings()
    return (server or f"http://127.0.0.1:{settings.port}").rstrip("/")


@call_app.command("inbound")
def inbound(
    to: str = typer.Option(..., help="The business number to call (E.164)."),
    from_: str = typer.Option("+15105550199", "--from", help="The caller's number."),
    say: list[str] = typer.Option([], help="What the caller says after each agent turn "
                                  "(repeatable)."),
    language: str = typer.Option("en", help="The caller's language (he, en, …)."),
    server: str | None = typer.Option(None, help="Server base URL (default http://127.0.0.1:PORT)."),
    wav: Path | None = typer.Option(None, help="Write what the caller heard to this WAV file."),
) -> None:
    """Dial a running server as Twilio would (signed webhook, media stream), from this machine.

    The server must be configured with the same HOTLINE_TWILIO_AUTH_TOKEN and
    HOTLINE_PUBLIC_URL pointing at itself."""
    settings = load_settings()
    steps: list[Step] = [WaitForAgentSilence(quiet_ms=700)]
    for line in say:
        steps += [Say(line, language=language), WaitForAgentAudio(played_ms=300),
                  WaitForAgentSilence(quiet_ms=700)]
    script = CallScript([*steps, Hangup()])
    phone = SimulatedPhone(server_url=_server_url(server),
                           auth_token=settings.twilio_auth_token.get_secret_value(),
                           account_sid=settings.twilio_account_sid)
    result = asyncio.run(phone.call(to=to, from_=from_, script=script))
    console = Console()
    if result.application_error or result.webhook_status != 200:
        console.print(f"[red]call failed:[/red] webhook {result.webhook_status} "
                      f"{result.application_error or ''}")
        raise typer.Exit(1)
    if result.say_texts:
        console.print(f"the server said: {' '.join(result.say_texts)}")
    first = result.start_to_first_media_ms
    console.print(f"call {result.call_sid}: start → first greeting frame "
                  f"{'—' if first is None else f'{first:.1f} ms'}, "
                  f"heard {result.played_ms / 1000:.1f} s of agent audio")
    if wav is not None:
        result.save_wav(wav, mix_caller=True)
        console.print(f"wrote {wav}")


@call_app.command("place")
def place(
    business: str = typer.Option(..., help="Business slug."),
    to: str = typer.Option(..., help="Number to call (E.164)."),
    template: str = typer.Option(..., help="Outbound template name."),
    var: list[str] = typer.Option([], help="Template variable NAME=VALUE (repeatable)."),
    server: str | None = typer.Option(None, help="Server base URL (default http://127.0.0.1:PORT)."),
) -> None:
    """Place an outbound call through the running server (which calls Twilio's REST API)."""
    variables: dict[str, str] = {}
    for item in var:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--var")
        variables[name] = value
    settings = load_settings()
    headers = ({"Authorization": f"Bearer {settings.api_token.get_secret_value()}"}
               if settings.api_token else {})
    try:
        response = httpx.post(f"{_server_url(server)}/api/calls", headers=headers, timeout=30,
                              json={"business": business, "to": to, "template": template,
                                    "variables": variables})
    except httpx.HTTPError as exc:
        Console(stderr=True).print(f"[red]cannot reach the server:[/red] {exc}")
        raise typer.Exit(1) from None
    if response.status_code != 201:
        detail = response.json().get("detail", response.text) if response.content else ""
        Console(stderr=True).print(f"[red]refused ({response.status_code}):[/red] {detail}")
        raise typer.Exit(1)
    body = response.json()
    Console().print(f"placed {body['call_sid']} to {body['to']} ({body['status']})")
