"""TwiML as the simulated phone reads it: the verbs of a voice `<Response>`, parsed once.

`parse_twiml(text)` turns the webhook's answer into a `Twiml` (a list of verbs in document
order) or raises `TwimlError` carrying the Twilio error code the real service would log:
12100 when the document isn't XML or its root isn't `<Response>`, 12200 when a verb the
phone executes lacks a required attribute (e.g. `<Stream>` without `url`).

Verbs the phone executes are typed (`Say`, `Pause`, `Connect` + `Stream`, `Hangup`,
`Reject`, `Dial` with its number, whether written as `<Dial>+1555…</Dial>` or with a
`<Number>` noun, and `Redirect`); anything else becomes `OtherVerb` so nothing in the
document is lost.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from hotline.errors import TwilioProtocolError

DOCUMENT_PARSE_FAILURE = 12100
SCHEMA_VALIDATION_ERROR = 12200


class TwimlError(TwilioProtocolError):
    """The server answered the voice webhook with TwiML Twilio would reject."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Stream:
    """`<Stream>` inside `<Connect>` (bidirectional) or `<Start>` (fork only)."""

    url: str
    parameters: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    track: str | None = None
    status_callback: str | None = None
    status_callback_method: str | None = None


@dataclass(frozen=True, slots=True)
class Connect:
    stream: Stream | None  # None: <Connect> holds something other than <Stream>
    action: str | None = None
    method: str = "POST"
    other_nouns: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StartStream:
    """`<Start><Stream>`: a unidirectional fork; recorded, not executed by the phone."""

    stream: Stream


@dataclass(frozen=True, slots=True)
class Say:
    text: str
    language: str | None = None
    voice: str | None = None
    loop: int = 1


@dataclass(frozen=True, slots=True)
class Pause:
    length_s: int = 1


@dataclass(frozen=True, slots=True)
class Hangup:
    pass


@dataclass(frozen=True, slots=True)
class Reject:
    reason: str = "rejected"


@dataclass(frozen=True, slots=True)
class Dial:
    number: str  # the text of <Dial>, or of its first <Number>/<Client>/<Sip> noun
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Redirect:
    url: str
    method: str = "POST"


@dataclass(frozen=True, slots=True)
class OtherVerb:
    name: str
    attributes: dict[str, str] = field(default_factory=dict)
    text: str = ""


Verb = Connect | StartStream | Say | Pause | Hangup | Reject | Dial | Redirect | OtherVerb


@dataclass(frozen=True, slots=True)
class Twiml:
    verbs: list[Verb]

    @property
    def stream(self) -> Stream | None:
        """The first `<Connect><Stream>`, if any."""
        for verb in self.verbs:
            if isinstance(verb, Connect) and verb.stream is not None:
                return verb.stream
        return None

    @property
    def say_texts(self) -> list[str]:
        return [verb.text for verb in self.verbs if isinstance(verb, Say)]

    @property
    def has_hangup(self) -> bool:
        return any(isinstance(verb, Hangup) for verb in self.verbs)

    @property
    def dial_numbers(self) -> list[str]:
        return [verb.number for verb in self.verbs if isinstance(verb, Dial)]

    @property
    def redirect_urls(self) -> list[str]:
        return [verb.url for verb in self.verbs if isinstance(verb, Redirect)]

    def describe(self) -> list[dict[str, object]]:
        """The verbs as JSON-ready dicts (`{"verb": "Say", ...fields}`)."""
        described: list[dict[str, object]] = []
        for verb in self.verbs:
            entry: dict[str, object] = {"verb": type(verb).__name__}
            for name in verb.__slots__:
                value = getattr(verb, name)
                if isinstance(value, Stream):
                    value = {slot: getattr(value, slot) for slot in value.__slots__}
                elif isinstance(value, tuple):
                    value = list(value)
                entry[name] = value
            described.append(entry)
        return described


def parse_twiml(text: str) -> Twiml:
    """Parse a voice TwiML document; raise `TwimlError` as Twilio would fail the call."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise TwimlError(DOCUMENT_PARSE_FAILURE, f"document is not XML: {exc}") from None
    if _local(root.tag) != "Response":
        raise TwimlError(DOCUMENT_PARSE_FAILURE, f"root element is <{_local(root.tag)}>, "
                                                 "not <Response>")
    return Twiml(verbs=[_verb(element) for element in root])


def _verb(element: ET.Element) -> Verb:
    name = _local(element.tag)
    attributes = dict(element.attrib)
    text = (element.text or "").strip()
    match name:
        case "Connect":
            stream: Stream | None = None
            others: list[str] = []
            for child in element:
                if _local(child.tag) == "Stream" and stream is None:
                    stream = _stream(child)
                else:
                    others.append(_local(child.tag))
            return Connect(stream=stream, action=attributes.get("action"),
                           method=attributes.get("method", "POST").upper(),
                           other_nouns=tuple(others))
        case "Start":
            for child in element:
                if _local(child.tag) == "Stream":
                    return StartStream(stream=_stream(child))
            return OtherVerb(name=name, attributes=attributes, text=text)
        case "Say":
            return Say(text=text, language=attributes.get("language"),
                       voice=attributes.get("voice"),
                       loop=_int_attribute(attributes, "loop", 1, name))
        case "Pause":
            return Pause(length_s=_int_attribute(attributes, "length", 1, name))
        case "Hangup":
            return Hangup()
        case "Reject":
            return Reject(reason=attributes.get("reason", "rejected"))
        case "Dial":
            number = text
            for child in element:
                if _local(child.tag) in ("Number", "Client", "Sip", "Conference", "Queue"):
                    number = (child.text or "").strip()
                    break
            return Dial(number=number, attributes=attributes)
        case "Redirect":
            if not text:
                raise TwimlError(SCHEMA_VALIDATION_ERROR, "<Redirect> without a URL")
            return Redirect(url=text, method=attributes.get("method", "POST").upper())
        case _:
            return OtherVerb(name=name, attributes=attributes, text=text)


def _stream(element: ET.Element) -> Stream:
    url = element.attrib.get("url", "").strip()
    if not url:
        raise TwimlError(SCHEMA_VALIDATION_ERROR, "<Stream> without a url attribute")
    parameters: dict[str, str] = {}
    for child in element:
        if _local(child.tag) != "Parameter":
            continue
        name = child.attrib.get("name")
        if name is None:
            raise TwimlError(SCHEMA_VALIDATION_ERROR, "<Parameter> without a name attribute")
        parameters[name] = child.attrib.get("value", "")
    return Stream(
        url=url,
        parameters=parameters,
        name=element.attrib.get("name"),
        track=element.attrib.get("track"),
        status_callback=element.attrib.get("statusCallback"),
        status_callback_method=element.attrib.get("statusCallbackMethod"),
    )


def _int_attribute(attributes: dict[str, str], key: str, default: int, verb: str) -> int:
    raw = attributes.get(key)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise TwimlError(SCHEMA_VALIDATION_ERROR,
                         f"<{verb}> {key}={raw!r} is not an integer") from None


def _local(tag: str) -> str:
    """Element name without an XML namespace."""
    return tag.rsplit("}", 1)[-1]
