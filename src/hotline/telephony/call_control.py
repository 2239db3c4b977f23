"""Acting on a live call through Twilio's REST API: hang up, or transfer to a person.

Both are call updates (`Calls(sid).update`): `status=completed` hangs up; new TwiML with
`<Dial>` ends the `<Connect><Stream>` (Twilio sends the stream's `stop`) and dials the
business's number, the caller staying on the line.
"""

from __future__ import annotations

import logging

from twilio.twiml.voice_response import VoiceResponse

from hotline.telephony.rest import TwilioRest

log = logging.getLogger("hotline.call_control")


def dial_twiml(number: str, caller_id: str | None = None) -> str:
    response = VoiceResponse()
    response.dial(number, caller_id=caller_id)
    return str(response)


class CallControl:
    def __init__(self, rest: TwilioRest) -> None:
        self._rest = rest

    async def hang_up(self, call_sid: str) -> None:
        await self._rest.call(self._rest.client.calls(call_sid).update_async(status="completed"),
                              f"hang up call {call_sid}")
        log.info("call %s hung up through the REST API", call_sid)

    async def transfer(self, call_sid: str, number: str, caller_id: str | None = None) -> None:
        await self._rest.call(
            self._rest.client.calls(call_sid).update_async(twiml=dial_twiml(number, caller_id)),
            f"transfer call {call_sid}")
        log.info("call %s transferred through the REST API", call_sid)
