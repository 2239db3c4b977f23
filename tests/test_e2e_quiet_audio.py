"""Quiet caller audio in bigger appends (HOTLINE_QUIET_AUDIO_BATCH_MS) over real sockets: the
simulated phone calls, barges in on the greeting and is answered, as with the setting off,
and the simulated engine receives exactly the audio the phone sent, in fewer appends."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from hotline.audio import mulaw
from hotline.sim.script import CallScript, Hangup, Say, WaitForAgentAudio, WaitForAgentSilence
from tests.factories import TEST_NUMBER, make_business
from tests.stack import running_stack
from tests.test_e2e_calls import CALLER, LONG_GREETING, assert_nothing_leaked, received

pytestmark = pytest.mark.sockets  # servers, simulators or services over real sockets


@pytest.mark.parametrize("batch_ms", [0, 100])
async def test_a_barge_in_and_its_answer_with_the_engine_hearing_what_the_phone_sent(
        database_url: str, tmp_path: Path, batch_ms: int) -> None:
    async with running_stack(database_url, tmp_path, [make_business(greeting=LONG_GREETING)],
                             greeting_cache=False, quiet_audio_batch_ms=batch_ms) as stack:
        script = CallScript([WaitForAgentAudio(played_ms=1500, timeout_ms=20_000),
                             Say("Sorry, can I just ask something?"),
                             # The answer (played audio is counted over the call: the
                             # greeting's ~1.7 s heard, then the reply's).
                             WaitForAgentAudio(played_ms=2300, timeout_ms=20_000),
                             WaitForAgentSilence(quiet_ms=800, timeout_ms=20_000), Hangup()])
        result = await stack.phone.call(to=TEST_NUMBER, from_=CALLER, script=script)
        session = await stack.engine.wait_for_session()
        record = await stack.services.final_record(result.call_sid, timeout_s=20)

        # The call went as it goes with the setting off: the greeting cut where the caller
        # spoke, their turn answered.
        assert record.outcome == "completed" and result.clears
        assert "barge_in" in [s.stage for s in record.timeline]
        speakers = [t.speaker for t in record.transcript]
        assert speakers[:3] == ["agent", "caller", "agent"], speakers
        assert record.transcript[0].interrupted and not record.transcript[2].interrupted
        assert session.errors_sent == []

        # The engine heard the phone's audio, every byte in order (inbound, the bot speaks
        # first: no pickup guard). At the end, what was still on its way when the phone hung
        # up may be missing: a few frames, and with batching the quiet audio held, less
        # than batch_ms.
        appends = [str(e["audio"]) for _, e in received(session, "input_audio_buffer.append")]
        heard = b"".join(base64.b64decode(a) for a in appends)
        sent = bytes(result.caller_audio)
        assert len(sent) == result.frames_sent * mulaw.FRAME_BYTES
        assert heard == sent[:len(heard)]
        missing_ms = (len(sent) - len(heard)) / mulaw.BYTES_PER_MS
        assert missing_ms < batch_ms + 200, missing_ms
        sizes = {len(base64.b64decode(a)) for a in appends}
        if batch_ms:
            # The caller listened most of the call: most frames went several to an append,
            # none more than batch_ms of them (speech goes at once, with what was held).
            assert len(appends) < result.frames_sent * 0.6, (len(appends), result.frames_sent)
            assert max(sizes) <= batch_ms * mulaw.BYTES_PER_MS
        else:
            assert sizes == {mulaw.FRAME_BYTES} and len(appends) == result.frames_sent
        await assert_nothing_leaked(stack)
