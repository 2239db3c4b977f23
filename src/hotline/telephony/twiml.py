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
