"""Request and response shapes of the connector API, in both of the documentation's variants.

The lookup answer is built by hand (it is the hot path and its shape is fixed); the workflow
request, which is richer and rarer, is validated with marshmallow. :meth:`ResponseFormat.render`
is the one rendering of the engine's answers: the routes serve it (the engine caches it) and the
command line prints it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from marshmallow import EXCLUDE, Schema, fields, pre_load, validate

from lookup_core.types import Contact

if TYPE_CHECKING:
    from lookup_service.engine import Answer

CAMEL_KEYS = ("name", "company", "contactUri", "companyUri", "id", "crmName", "crmLogo", "crmActions", "customData")
PASCAL_KEYS = tuple(key[0].upper() + key[1:] for key in CAMEL_KEYS)


class ResponseFormat:
    """Serializes contacts with the configured key style (``camel``, or the older ``pascal``)."""

    def __init__(self, style: str = "camel"):
        self.keys = PASCAL_KEYS if style == "pascal" else CAMEL_KEYS

    def payload(self, answer: Answer) -> list[dict[str, Any]]:
        """The connector's JSON array for an answer of the engine, as Python objects."""
        return [self.contact(match.contact, match.public_id, match.source.crm_name, match.source.crm_logo,
                             match.source.workflows) for match in answer.matches]

    def render(self, answer: Answer) -> bytes:
        """The body of ``/Lookup`` for an answer of the engine (``[]`` when nothing matched)."""
        if not answer.matches:
            return EMPTY_ANSWER
        return _ENCODER.encode(self.payload(answer)).encode()

    def contact(self, contact: Contact, public_id: str, crm_name: str | None, crm_logo: str | None,
                actions: list[str]) -> dict[str, Any]:
        custom = {str(k): _text(v) for k, v in (contact.custom_data or {}).items() if v not in (None, "")}
        if contact.email and not any(k.lower() == "email" for k in custom):
            custom = {"email": contact.email, **custom}
        values = (
            contact.name or None,
            contact.company or None,
            contact.contact_uri or None,
            contact.company_uri or None,
            public_id,
            crm_name,
            crm_logo,
            list(actions),
            custom,
        )
        return dict(zip(self.keys, values, strict=True))

    @staticmethod
    def dumps(items: Iterable[Mapping[str, Any]]) -> bytes:
        return _ENCODER.encode(list(items)).encode()


EMPTY_ANSWER = b"[]"
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # built once: json.dumps builds one a call


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def find_key(mapping: Mapping[str, Any], wanted: str) -> Any:
    """The value of ``wanted`` in ``mapping``, the key matched case-insensitively."""
    if wanted in mapping:
        return mapping[wanted]
    lowered = wanted.lower()
    for key, value in mapping.items():
        if isinstance(key, str) and key.lower() == lowered:
            return value
    return None


class _CaseInsensitive(Schema):
    """Accepts the declared keys in any letter case (``ContactCrmId``, ``contactcrmid``...)."""

    class Meta:
        unknown = EXCLUDE  # the connector may extend the payload in the future

    @pre_load
    def fold_case(self, data: Any, **_: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        names = {name.lower(): name for name in self.fields}
        return {names.get(str(k).lower(), k): v for k, v in data.items()}


class _Text(fields.String):
    """A string field that also takes numbers (a number posted as 41215522000, not "41...")."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(int(value)) if float(value).is_integer() else str(value)
        return super()._deserialize(value, attr, data, **kwargs)


class WorkflowInputs(_CaseInsensitive):
    contactCrmId = _Text(required=True, validate=lambda v: bool(v.strip()),
                         error_messages={"required": "contactCrmId is required: the id returned by /Lookup",
                                         "validator_failed": "contactCrmId must not be empty"})
    userCrmId = _Text(load_default=None, allow_none=True)
    originatorNumber = _Text(load_default=None, allow_none=True)
    originatorName = _Text(load_default=None, allow_none=True)
    destinationNumber = _Text(load_default=None, allow_none=True)
    destinationName = _Text(load_default=None, allow_none=True)
    direction = _Text(load_default=None, allow_none=True)
    # Times stay raw here: lookup_service.timeparse turns them into datetimes and names a bad one.
    startedTime = fields.Raw(load_default=None, allow_none=True)
    answeredTime = fields.Raw(load_default=None, allow_none=True)
    endedTime = fields.Raw(load_default=None, allow_none=True)
    declinedTime = fields.Raw(load_default=None, allow_none=True)
    note = _Text(load_default=None, allow_none=True, validate=validate.Length(max=10000))


class MessageLogInputs(_CaseInsensitive):
    """MessageLog: one SMS, voicemail or fax (README "Logging messages")."""

    contactCrmId = WorkflowInputs._declared_fields["contactCrmId"]
    userCrmId = _Text(load_default=None, allow_none=True)
    type = _Text(required=True, error_messages={"required": "type is required: SMS, Voicemail or Fax"})
    direction = _Text(required=True, error_messages={"required": "direction is required: incoming or outgoing"})
    fromNumber = _Text(load_default=None, allow_none=True)
    fromName = _Text(load_default=None, allow_none=True)
    toNumber = _Text(load_default=None, allow_none=True)
    toName = _Text(load_default=None, allow_none=True)
    text = _Text(load_default=None, allow_none=True, validate=validate.Length(max=10000))
    subject = _Text(load_default=None, allow_none=True, validate=validate.Length(max=1000))
    time = fields.Raw(load_default=None, allow_none=True)
    conversationId = _Text(load_default=None, allow_none=True, validate=validate.Length(max=200))
    messageId = _Text(load_default=None, allow_none=True, validate=validate.Length(max=200))
    recordingLink = _Text(load_default=None, allow_none=True, validate=validate.Length(max=2000))
    faxDocLink = _Text(load_default=None, allow_none=True, validate=validate.Length(max=2000))


class CreateContactInputs(WorkflowInputs):
    """CreateContact: the usual inputs (``contactCrmId`` optional: the unknown-caller entry sends
    ``new:<e164>``) and the optional ``name``, ``company`` and ``email`` of the new contact."""

    contactCrmId = _Text(load_default=None, allow_none=True)
    name = _Text(load_default=None, allow_none=True)
    company = _Text(load_default=None, allow_none=True)
    email = _Text(load_default=None, allow_none=True)
