"""Hotline's exceptions, one hierarchy, each naming which side broke what.

HotlineError
 ├── TwilioProtocolError    Twilio (or whatever claims to be it) sent something off-protocol
 ├── EngineProtocolError    the realtime engine sent something off-protocol
 ├── InvalidStreamToken     a media stream presented a missing, wrong or reused token
 ├── CallPlanNotFound       no plan for this CallSid (expired, or never made here)
 ├── UnknownNumber          a call to a number no business answers
 ├── TemplateError          an outbound template is missing or lacks a variable
 ├── InvalidBusiness        a business, phone number or template definition is invalid
 ├── BusinessNotFound       no business has this slug
 ├── DuplicateNumber        a phone number already belongs to another business
 ├── TwilioApiError         Twilio's REST API refused a request or could not be reached
 ├── StoreUnavailable       the database could not be reached
 └── RegistryUnavailable    the call registry (Redis) could not be reached
"""

from __future__ import annotations


class HotlineError(Exception):
    """Base class of every error Hotline raises on purpose."""


class TwilioProtocolError(HotlineError):
    """A Media Streams or webhook message that breaks Twilio's protocol."""


class EngineProtocolError(HotlineError):
    """A realtime engine message that breaks the Realtime protocol."""


class InvalidStreamToken(HotlineError):
    """The stream's per-call token is missing, wrong or already used."""


class CallPlanNotFound(HotlineError):
    """No CallPlan is registered for this call."""


class UnknownNumber(HotlineError):
    """No business answers this phone number."""


class TemplateError(HotlineError):
    """An outbound template is unknown or a placeholder has no value."""


class InvalidBusiness(HotlineError):
    """A business, phone number or template definition failed validation (names the field)."""


class BusinessNotFound(HotlineError):
    """No business has this slug."""


class ApiKeyError(HotlineError):
    """An API key cannot be created or revoked: no key secret, or no key with that prefix."""


class DuplicateNumber(HotlineError):
    """A phone number is already answered by another business (the message names it;
    `number` alone is what a tenant who asked for the number may be told)."""

    def __init__(self, message: str, *, number: str = "") -> None:
        super().__init__(message)
        self.number = number


class StoreUnavailable(HotlineError):
    """The database is down or refused the write."""


class RegistryUnavailable(HotlineError):
    """The call registry (Redis) could not be reached."""


class TwilioApiError(HotlineError):
    """Twilio's REST API refused a request or could not be reached (no credentials in it)."""
