"""deploy/: the README's systemd unit (a stop timeout longer than the drain), the compose
file and its nginx config (the shipped template, rendered)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from hotline.cli.fleet import user_settings
from hotline.fleet.fleet import Fleet, FleetConfig, shared_database_url
from hotline.fleet.nginx import Upstream, render
from hotline.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_the_shipped_unit_is_the_readme_one_and_outlasts_the_drain() -> None:
    readme_unit = re.search(r"```ini\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert readme_unit is not None
    shipped = (ROOT / "deploy" / "hotline.service").read_text()
    assert shipped.endswith(readme_unit.group(1))
    values = dict(re.findall(r"^(\w+)=(.*)$", shipped, re.M))
    assert values["KillSignal"] == "SIGTERM" and values["Restart"] == "on-failure"
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    drain_s = defaults.drain_timeout_s + defaults.goodbye_cap_s
    assert int(values["TimeoutStopSec"]) >= drain_s + 20


def test_the_compose_nginx_config_is_the_template_rendered_for_its_two_instances() -> None:
    shipped = (ROOT / "deploy" / "nginx.conf").read_text()
    pinned = (("hotline-1", "hotline-1:8000"), ("hotline-2", "hotline-2:8000"))
    assert shipped == render("80", [Upstream("hotline-1:8000"), Upstream("hotline-2:8000")],
                             pinned=pinned)
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    instances = {name for name in compose["services"] if name.startswith("hotline-")}
    assert instances == {"hotline-1", "hotline-2"}
    for name in instances:
        service = compose["services"][name]
        assert service["environment"]["HOTLINE_INSTANCE_ID"] == name
        # Its stream comes back to it through nginx (the warm session; Redis down).
        instance_url = service["environment"]["HOTLINE_INSTANCE_URL"]
        assert f"location = {instance_url}/twilio/media {{" in shipped
        settings = Settings(_env_file=None, public_url="https://hotline.example.com",  # type: ignore[call-arg]
                            instance_url=instance_url)
        assert settings.instance_stream_url == (
            f"wss://hotline.example.com/instances/{name}/twilio/media")
        assert service["environment"]["HOTLINE_REDIS_URL"].startswith("redis://")
        assert service["stop_grace_period"] == "360s"


def test_nginx_config_marks_unready_instances_down_but_never_all() -> None:
    upstreams = [Upstream("127.0.0.1:8001", down=True), Upstream("127.0.0.1:8002")]
    text = render("127.0.0.1:8080", upstreams, workers="1")
    assert "server 127.0.0.1:8001 max_fails=1 fail_timeout=2s down;" in text
    assert "server 127.0.0.1:8002 max_fails=1 fail_timeout=2s;" in text
    assert "listen 127.0.0.1:8080;" in text and "@" not in text.split("http {")[1]
    everyone_down = render("8080", [Upstream("a:1", down=True), Upstream("b:1", down=True)])
    assert " down;" not in everyone_down  # nothing to send calls to otherwise
    # The media stream's location upgrades to a WebSocket.
    media = text.split("location /twilio/media")[1].split("}")[0]
    assert "proxy_set_header Upgrade $http_upgrade;" in media


def test_a_fleet_shares_one_store_even_when_its_sqlite_path_is_relative(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each instance runs in its own directory: `./hotline.db` must name one file for all."""
    monkeypatch.chdir(tmp_path)
    assert shared_database_url("sqlite+aiosqlite:///./hotline.db") == (
        f"sqlite+aiosqlite:///{tmp_path.resolve() / 'hotline.db'}")
    for url in ("sqlite+aiosqlite:////var/lib/hotline/hotline.db",
                "postgresql+asyncpg://hotline:secret@db:5432/hotline"):
        assert shared_database_url(url) == url


def test_fleet_up_hands_the_users_settings_to_every_instance(tmp_path: Path) -> None:
    """The instances run in their own directories with no HOTLINE_* of their own: the
    user's secrets (environment or .env) must reach them; the fleet's own settings win."""
    env_file = tmp_path / ".env"
    env_file.write_text("HOTLINE_OPENAI_API_KEY=sk-from-dotenv\n"
                        "HOTLINE_TWILIO_AUTH_TOKEN=from-dotenv\n"
                        "HOTLINE_DATABASE_URL=sqlite+aiosqlite:///./other.db\n")
    environ = {"HOTLINE_TWILIO_AUTH_TOKEN": "from-env", "HOTLINE_PORT": "9999", "PATH": "/bin"}
    passed = user_settings(environ, env_file)
    assert passed == {"HOTLINE_OPENAI_API_KEY": "sk-from-dotenv",
                      "HOTLINE_TWILIO_AUTH_TOKEN": "from-env"}
    fleet = Fleet(FleetConfig(database_url="sqlite+aiosqlite:////srv/hotline.db",
                              redis_url="redis://127.0.0.1:6379/0", work_dir=tmp_path,
                              port=8080, instance_ports=(8001, 8002), env=passed))
    for instance in fleet.instances:
        assert instance.env["HOTLINE_OPENAI_API_KEY"] == "sk-from-dotenv"
        assert instance.env["HOTLINE_DATABASE_URL"] == "sqlite+aiosqlite:////srv/hotline.db"
        assert "sk-from-dotenv" not in repr(instance)  # (a failing test's output shows it)
    assert user_settings({}, tmp_path / "missing.env") == {}


def test_compose_takes_every_setting_from_its_env_file() -> None:
    """Compose fills ${...} from the shell or deploy/.env, never from `env_file`: one there
    made `docker compose up`, as the README has it, refuse to start."""
    text = (ROOT / "deploy" / "docker-compose.yml").read_text()
    assert "${" not in text
    example = dict(line.split("=", 1) for line in
                   (ROOT / "deploy" / "hotline.env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert example["HOTLINE_FAILOVER_URL"] == example["HOTLINE_PUBLIC_URL"] + "/twilio/voice"
