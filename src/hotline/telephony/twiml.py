"""TwiML responses, built with the twilio SDK (never by hand)."""

from __future__ import annotations

from twilio.twiml.voice_response import VoiceResponse

UNKNOWN_NUMBER_MESSAGE = (
    "Sorry, this number is not in service with us. Please check the number and call again. "
    "Goodbye."
)


def connect_stream(stream_url: str, parameters: dict[str, str]) -> str:
    """<Connect><Stream url=…> with <Parameter>s: the bidirectional media stream."""
    response = VoiceResponse()
    stream = response.connect().stream(url=stream_url)
    for name, value in parameters.items():
        stream.parameter(name=name, value=value)
    return str(response)


def say_and_hang_up(message: str, language: str = "en-US") -> str:
    response = VoiceResponse()
    response.say(message, language=language)
    response.hangup()
    return str(response)


# A call that comes in while this instance drains (shuts down), when no fail-over URL is
# set: one short line in the business's language (English when unknown), then a hang-up.
FAILOVER_MESSAGES = {
    "en": "Sorry, we can't take your call right now. Please call again in a few minutes. "
          "Goodbye.",
    "he": "מצטערים, איננו יכולים לענות כרגע. אנא התקשרו שוב בעוד כמה דקות. להתראות.",
}
# <Say>'s language and a voice that speaks it (Twilio's default voice speaks English only).
SAY_VOICES = {"en": ("en-US", None), "he": ("he-IL", "Google.he-IL-Standard-A")}


def fail_over(redirect_url: str | None, language: str | None = None) -> str:
    """TwiML for a call this instance will not take: `<Redirect>` to `redirect_url` (another
    deployment, or the load balancer in front of the instances still serving), else an
    apology and `<Hangup/>`."""
    response = VoiceResponse()
    if redirect_url:
        response.redirect(redirect_url, method="POST")
        return str(response)
    code = language if language in FAILOVER_MESSAGES else "en"
    say_language, voice = SAY_VOICES[code]
    response.say(FAILOVER_MESSAGES[code], language=say_language, voice=voice)
    response.hangup()
    return str(response)
