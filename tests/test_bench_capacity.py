"""`hotline bench capacity` in its quick mode: a real `hotline serve` process and a load
generator, a few calls; the figures are checked for being measured and consistent, never
against times (this runs on shared CI machines)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from pathlib import Path
from typing import cast

import orjson
import pytest
import typer
from rich.console import Console

from hotline.benchmarks.capacity import (
    FLOOR_SECTION,
    SECTION,
    CapacityBench,
    CapacityConfig,
    ServerKind,
    StepResult,
    bench_capacity,
    markdown,
)
from hotline.benchmarks.capacity_ab import AbPair, AbResult, bench_ab
from hotline.benchmarks.capacity_engine import (
    DeltaAudio,
    EngineSession,
    EngineStats,
    read_tag,
    tag,
)
from hotline.benchmarks.capacity_profile import NO_SOCKET, SOCKETS, parse_collapsed
from hotline.benchmarks.capacity_wire import (
    CLOSE,
    MESSAGE_COUNT,
    PING,
    PONG,
    TEXT,
    FrameReader,
    frame,
    unmask,
)
from hotline.benchmarks.doc_sections import markers


def test_a_delta_carries_its_tag_in_its_first_bytes() -> None:
    audio = DeltaAudio(20)
    decoded = base64.b64decode(audio.payload(513, 7))
    assert len(decoded) == 160  # 20 ms of μ-law
    sent_us, response, frame_no = read_tag(decoded[:12]) or (0, 0, 0)
    assert (response, frame_no) == (513, 7) and sent_us > 0
    assert read_tag(b"\xff" * 12) is None  # audio the engine did not make
    assert read_tag(tag(2**45 + 5, 1, 2)) == (5 + (2**45 & (2**40 - 1)), 1, 2)


def test_frames_round_trip_masked_fragmented_and_split() -> None:
    reader = FrameReader()
    key = b"\x01\x02\x03\x04"
    masked = bytes((0x81, 0x80 | 5)) + key + unmask(b"hello", key)
    big = frame(b"x" * 70_000)
    fragments = bytes((0x01, 3)) + b"abc" + bytes((0x80, 3)) + b"def"
    data = masked + big + fragments + frame(b"ping", 0x9)
    messages = []
    for i in range(0, len(data), 7):  # any split across reads
        messages += reader.feed(data[i:i + 7])
    assert messages == [(1, b"hello"), (1, b"x" * 70_000), (1, b"abcdef"), (9, b"ping")]


class _Wire:
    def __init__(self) -> None:
        self.frames = FrameReader()
        self.events: list[dict[str, object]] = []

    def write(self, data: bytes) -> None:
        self.events += [orjson.loads(payload) for opcode, payload in self.frames.feed(data)
                        if opcode == TEXT]  # not a pong or a close

    def close(self) -> None:
        pass


def _lean_engine() -> tuple[EngineSession, Callable[[bytes], None], _Wire]:
    """A lean engine session on a wire that keeps its events; `append(audio)` sends it
    an append as Hotline would."""
    session = EngineSession(set(), DeltaAudio(20), EngineStats())
    wire = _Wire()
    session.transport = cast(asyncio.Transport, wire)
    session.open = True

    def append(audio: bytes) -> None:
        session.on_message(1, b'{"type":"input_audio_buffer.append","audio":"'
                           + base64.b64encode(audio) + b'"}')

    return session, append, wire


def test_the_lean_engine_hears_an_append_of_any_length_20_ms_at_a_time() -> None:
    _, append, wire = _lean_engine()
    quiet, loud = b"\xff" * 160, b"\x80\x00" * 80

    append(quiet * 5)  # 100 ms of quiet in one append
    append(quiet * 2 + loud * 2)  # the lead-in and the first speech
    assert not wire.events
    append(loud)  # one frame alone: the third voiced frame starts the turn
    [started] = wire.events
    assert started["type"] == "input_audio_buffer.speech_started"
    assert started["audio_start_ms"] == 140  # its first voiced frame began there


def test_the_lean_engine_hears_a_frame_split_across_appends_once() -> None:
    """Appends need not hold whole 20 ms frames: a part waits for the rest (the real VAD
    hears a stream of samples, not the appends)."""
    session, append, wire = _lean_engine()
    quiet, loud = b"\xff" * 160, b"\x80\x00" * 80

    append(quiet[:81])
    append(quiet[81:] + loud[:10])  # 20 ms of quiet, then the start of the speech
    append(loud[10:] + loud)
    session.on_message(1, orjson.dumps({"audio": base64.b64encode(loud[:1]).decode(),
                                        "type": "input_audio_buffer.append"}))
    assert not wire.events  # two voiced frames and a sample
    append(loud[1:])
    [started] = wire.events
    assert started["type"] == "input_audio_buffer.speech_started"
    assert started["audio_start_ms"] == 20


def test_each_data_message_is_counted_once_either_way_and_control_frames_never() -> None:
    session, _, wire = _lean_engine()
    MESSAGE_COUNT.messages = 0
    update = b'{"type":"session.update","session":{}}'
    first = bytes([TEXT]) + frame(update[:10], TEXT, masked=True)[1:]  # not final
    session.data_received(first[:-3])  # split mid-frame
    session.data_received(first[-3:])
    assert MESSAGE_COUNT.messages == 0  # the first fragment of a message (not final)
    session.data_received(b"".join([
        frame(b"", PING, masked=True), frame(b"", PONG, masked=True),
        frame(update[10:], 0x0, masked=True),  # its final fragment: one message in
        frame(b'{"type":"response.cancel"}', TEXT, masked=True)]))
    # In: the update and the cancel; out: session.updated (the pong is not counted).
    assert [e["type"] for e in wire.events] == ["session.updated"]
    assert MESSAGE_COUNT.messages == 3
    session.data_received(frame(b"\x03\xe8", CLOSE, masked=True))
    assert MESSAGE_COUNT.messages == 3 and not session.open
    session.send_text(b"{}")  # closed: nothing goes, nothing counted
    assert MESSAGE_COUNT.messages == 3


def test_a_profile_sums_self_time_by_function_and_areas_inclusively() -> None:
    collapsed = ("main (a.py);_execute (hotline/call/runner.py);send (starlette/websockets.py) 6\n"
                 "main (a.py);feed (hotline/audio/speech_gate.py) 4\n")
    profile = parse_collapsed(collapsed, calls=10)
    assert profile is not None and profile.samples == 10
    assert profile.functions[0] == ("send (starlette/websockets.py)", 0.6)
    assert dict(profile.areas) == {"Starlette/FastAPI WebSocket": 0.6,
                                   "call core (session, playback, gate)": 0.4}
    sockets = dict(profile.sockets)
    assert sockets[SOCKETS[0][0]] == 0.6 and sockets[NO_SOCKET] == 0.4


def test_the_parser_both_sockets_share_is_counted_for_the_socket_above_it() -> None:
    collapsed = (
        "run (a.py);data_received (uvicorn/protocols/websockets/websockets_sansio_impl.py);"
        "parse (websockets/protocol.py) 3\n"
        "run (a.py);_send (openai/_websocket_connection.py);send (websockets/asyncio/"
        "connection.py);parse (websockets/protocol.py) 5\n"
        "run (a.py);handle (hotline/core/session.py) 2\n")
    profile = parse_collapsed(collapsed, calls=1)
    assert profile is not None
    assert profile.sockets == [(SOCKETS[0][0], 0.3), (SOCKETS[1][0], 0.5), (NO_SOCKET, 0.2)]
    assert "by socket" in profile.markdown("x")


@pytest.mark.sockets
def test_the_quick_capacity_run_measures_every_step(tmp_path: Path) -> None:
    config = CapacityConfig(steps=(2, 4), generators=1, window_s=2.0, settle_s=0.5,
                            turn_every_s=1.0, stop_on_fail=False)
    [run] = bench_capacity([config], Console(quiet=True), "hotline bench capacity --quick",
                           tmp_path / "benchmarks.md")
    assert [s.calls for s in run.steps] == [2, 4]
    for step in run.steps:
        assert step.frames > 0 and step.marks > 0  # relayed, and its marks echoed
        assert (step.lost, step.duplicated, step.reordered, step.untagged) == (0, 0, 0, 0)
        assert step.server_cpu_s > 0 and step.rss_mb > step.idle_rss_mb > 0
        assert step.engine_errors == 0 and step.truncates_past_audio == 0
        # Every relayed frame is a message through the server; so is each caller frame.
        assert step.messages > 2 * step.frames and step.us_per_message > 0
        assert 0 <= step.server_kernel_s <= step.server_cpu_s
    assert sum(s.turns for s in run.steps) > 0  # the caller spoke (the engine's VAD heard it)
    text = (tmp_path / "benchmarks.md").read_text()
    start, end = markers(SECTION)
    assert start in text and end in text and "| 4 |" in text
    assert markdown([run], "x").count("| calls |") == 1


@pytest.mark.sockets
def test_the_floor_relay_carries_the_same_calls_and_is_labelled(tmp_path: Path) -> None:
    config = CapacityConfig(steps=(3,), generators=1, window_s=2.5, settle_s=0.5,
                            turn_every_s=1.0, stop_on_fail=False, server=ServerKind.FLOOR)
    [run] = bench_capacity([config], Console(quiet=True), "hotline bench capacity --floor",
                           tmp_path / "benchmarks.md", section=FLOOR_SECTION)
    [step] = run.steps
    assert step.calls == 3 and step.frames > 0 and step.marks > 0
    assert (step.lost, step.duplicated, step.reordered, step.untagged) == (0, 0, 0, 0)
    assert step.turns > 0 and step.clears > 0  # the caller barged in; the relay cut the agent
    assert step.engine_errors == 0 and step.truncates_past_audio == 0
    assert step.messages > 2 * step.frames and step.server_cpu_s > 0
    text = (tmp_path / "benchmarks.md").read_text()
    start, end = markers(FLOOR_SECTION)
    assert start in text and end in text and "NOT Hotline" in text
    assert markers(SECTION)[0] not in text  # Hotline's own section is left alone


@pytest.mark.sockets
def test_a_short_soak_loses_no_record(tmp_path: Path) -> None:
    config = CapacityConfig(generators=1, window_s=1.0, turn_every_s=1.0, call_s=1.5)
    result = CapacityBench(config, Console(quiet=True)).soak(calls=3, minutes=3 / 60)
    assert len(result.windows) == 3
    assert result.placed > 3  # calls were replaced as they ended
    assert result.recorded == result.placed
    assert "records: " in result.markdown("x")


def test_server_settings_must_be_hotline_names_with_values() -> None:
    from hotline.cli.bench import _server_env_args, _server_settings

    settings = _server_settings(["HOTLINE_QUIET_AUDIO_BATCH_MS=100", "HOTLINE_X=a=b"])
    assert settings == (("HOTLINE_QUIET_AUDIO_BATCH_MS", "100"), ("HOTLINE_X", "a=b"))
    assert _server_env_args(settings)[:2] == ["--server-env", "HOTLINE_QUIET_AUDIO_BATCH_MS=100"]
    for bad in ("PATH=/tmp", "HOTLINE_QUIET_AUDIO_BATCH_MS"):
        with pytest.raises(typer.BadParameter, match="HOTLINE_NAME=VALUE"):
            _server_settings([bad])


def _step(calls: int, cpu_ms_per_call_s: float, messages_per_call_s: float) -> StepResult:
    window_s = 10.0
    return StepResult(
        calls=calls, window_s=window_s,
        server_cpu_s=cpu_ms_per_call_s * calls * window_s / 1000,
        rss_mb=160, idle_rss_mb=150, frames=100, lost=0, duplicated=0, reordered=0, gaps=0,
        max_gap_ms=0, p50_ms=1, p99_ms=5, max_ms=8, lag_p99_ms=0, lag_max_ms=0,
        generator_cpu=0.2, marks=10, clears=1, turns=1, truncates_past_audio=0,
        engine_errors=0, messages=int(messages_per_call_s * calls * window_s))


def test_an_ab_run_reads_the_effect_from_its_pairs() -> None:
    setting = ("HOTLINE_QUIET_AUDIO_BATCH_MS", "100")
    pairs = [AbPair(100, _step(100, a, 190), _step(100, b, 160))
             for a, b in ((5.0, 4.0), (6.0, 4.5), (4.0, 4.4))]
    result = AbResult(CapacityConfig(steps=(100,)), setting, pairs)
    assert [round(p.ratio, 2) for p in pairs] == [0.8, 0.75, 1.1]
    [summary] = result.summary()
    assert "median **0.80** (-20%) over 3 pairs (range 0.75–1.10)" in summary
    assert "A 5.00 ms (≈200 calls per core), B 4.40 ms (≈227)" in summary
    text = result.markdown("hotline bench capacity --ab x")
    assert "`HOTLINE_QUIET_AUDIO_BATCH_MS=100` against the server without it" in text
    assert "| 100 | 3 | 4.00 | 4.40 | 1.10 | 190 | 160 |" in text


@pytest.mark.sockets
def test_an_ab_run_alternates_the_server_without_and_with_the_setting() -> None:
    config = CapacityConfig(steps=(3,), generators=1, window_s=1.5, settle_s=0.5,
                            turn_every_s=1.0)
    result = bench_ab(config, ("HOTLINE_QUIET_AUDIO_BATCH_MS", "100"), 1, Console(quiet=True))
    [pair] = result.pairs
    assert pair.a.frames > 0 and pair.b.frames > 0 and pair.a.lost == pair.b.lost == 0
    # The caller's quiet frames went to the engine several to a message with it on.
    assert pair.b.messages_per_call_s < pair.a.messages_per_call_s


def test_an_ab_run_puts_each_side_first_in_turn_so_drift_favours_neither(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A drift within a pair (this VM's CPU cost rising or falling over minutes) would pass
    for the setting's effect if B always ran second; ABBA order cancels a steady drift."""
    from hotline.benchmarks import capacity_ab
    from hotline.benchmarks.capacity import CapacityRun

    setting = ("HOTLINE_QUIET_AUDIO_BATCH_MS", "100")
    order: list[str] = []

    class FakeBench:
        def __init__(self, config: CapacityConfig, console: Console) -> None:
            self.config = config

        def run(self) -> CapacityRun:
            side = "B" if setting in self.config.server_env else "A"
            order.append(side)
            cpu = 5.0 if side == "A" else 4.0
            return CapacityRun(self.config, [_step(c, cpu, 190) for c in self.config.steps])

    monkeypatch.setattr(capacity_ab, "CapacityBench", FakeBench)
    result = bench_ab(CapacityConfig(steps=(50, 100)), setting, 4, Console(quiet=True))
    assert "".join(order) == "ABBAABBA"
    assert len(result.pairs) == 8 and all(round(p.ratio, 2) == 0.8 for p in result.pairs)
    assert "B first" in result.markdown("x")


def _capacity_cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, list[tuple]]:
    """`hotline bench capacity ARGS`, with every benchmark replaced by a recorder."""
    from typer.testing import CliRunner

    from hotline.benchmarks import capacity, capacity_ab
    from hotline.cli import _register, app
    from hotline.cli import bench as bench_cli

    ran: list[tuple] = []
    _register()
    monkeypatch.setattr(capacity, "bench_capacity", lambda *a, **k: ran.append(("steps", a)))
    monkeypatch.setattr(capacity, "bench_soak", lambda *a, **k: ran.append(("soak", a)))
    monkeypatch.setattr(capacity_ab, "bench_ab", lambda *a, **k: ran.append(("ab", a)))
    monkeypatch.setattr(bench_cli, "_capacity_ab", lambda *a: ran.append(("ab", a)))
    result = CliRunner().invoke(app, ["bench", "capacity", *args, "--no-output"])
    return result.exit_code, result.output, ran


@pytest.mark.parametrize("args", [
    ("--soak", "5", "--ab", "HOTLINE_X=1"),  # the soak ran and --ab was ignored
    ("--ab", "HOTLINE_X=1", "--profile-at", "100"),  # no profile in pairs, yet recorded
    ("--ab", "HOTLINE_X=1", "--delta-ms", "20,100"),  # only the first size was measured
    ("--floor", "--call-length", "30"),  # the floor's bare set-up would pass for Hotline's
])
def test_capacity_refuses_options_that_would_be_ignored_or_mislead(
        monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]) -> None:
    code, output, ran = _capacity_cli(monkeypatch, *args)
    assert code == 2 and ran == [], output


def test_an_ab_run_records_the_one_delta_size_it_measures(
        monkeypatch: pytest.MonkeyPatch) -> None:
    code, output, ran = _capacity_cli(monkeypatch, "--ab", "HOTLINE_X=1")
    assert code == 0, output
    [(kind, (config, setting, repeats, command, *_))] = ran
    assert kind == "ab" and setting == ("HOTLINE_X", "1") and repeats == 4
    assert config.delta_ms == 20 and "--delta-ms 20 " in command


def test_the_floor_relay_masks_what_it_sends_the_engine_as_a_real_client_must() -> None:
    """RFC 6455 §5.3: a client's masking key is fresh and unpredictable per frame. The
    phones and the lean engine may use the all-zero key (they are the harness), but the
    floor stands for a real relay to the real API: its masking must be paid for."""
    from hotline.benchmarks.capacity_floor import Config, EngineSide, TwilioSide

    class Wire:
        def __init__(self) -> None:
            self.data: list[bytes] = []

        def write(self, data: bytes) -> None:
            self.data.append(data)

        def is_closing(self) -> bool:
            return False

    def decoded(data: bytes) -> tuple[bytes, bytes]:
        assert data[1] & 0x80  # masked
        [(opcode, payload)] = FrameReader().feed(data)
        assert opcode == TEXT
        return data[2:6], payload

    async def scenario() -> list[tuple[bytes, bytes]]:
        call = TwilioSide(Config(8000, "ws://127.0.0.1:9/v1", "k"))
        engine = EngineSide("127.0.0.1:9", "/v1/realtime", {}, call)
        wire = Wire()
        engine.transport = cast(asyncio.Transport, wire)
        engine.open = True
        call.engine = engine
        media = b'{"event":"media","streamSid":"MZ1","media":{"payload":"AAAAAAAA"}}'
        call._twilio_message(TEXT, media)
        call._twilio_message(TEXT, media)
        engine.send_text(b'{"type":"response.cancel"}')
        return [decoded(data) for data in wire.data]

    frames = asyncio.run(scenario())
    assert [p for _, p in frames] == [
        b'{"type":"input_audio_buffer.append","audio":"AAAAAAAA"}'] * 2 + [
        b'{"type":"response.cancel"}']
    keys = [key for key, _ in frames]
    assert b"\x00\x00\x00\x00" not in keys and len(set(keys)) == 3


def test_the_openai_sdks_own_work_is_not_counted_as_the_runners() -> None:
    """The socket split gives the SDK's connection to the engine socket; the area table
    must not put the same samples under the runner, or the two tables disagree."""
    collapsed = ("run (a.py);_send_engine (hotline/call/runner.py);"
                 "_send (openai/_websocket_connection.py) 4\n"
                 "run (a.py);_dispatch (hotline/call/runner.py) 1\n")
    profile = parse_collapsed(collapsed, calls=1)
    assert profile is not None
    areas = dict(profile.areas)
    assert areas["runner (dispatch, sends)"] == 0.2
    assert dict(profile.sockets)[SOCKETS[1][0]] == 0.8


def test_an_ab_report_counts_repeats_not_pairs_when_a_step_repeats() -> None:
    setting = ("HOTLINE_X", "1")
    pairs = [AbPair(100, _step(100, 5.0, 190), _step(100, 4.0, 160)) for _ in range(4)]
    result = AbResult(CapacityConfig(steps=(100, 100)), setting, pairs)  # 2 repeats
    assert "2 repeats of each step" in result.markdown("x")
