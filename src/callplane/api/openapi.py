"""The OpenAPI document: what each operation takes and what it really answers.

The routers parse their own form bodies and query strings (Restcomm's field names and error messages), so FastAPI
cannot infer them. This module states them: the form fields of every POST, the query parameters' types and bounds,
the JSON representations, and the errors each operation returns (with the ``RestException`` body). FastAPI's 422
validation responses are removed: no route lets FastAPI validate anything, so the API never answers 422.
``tests/api/test_openapi.py`` runs schemathesis against a live node to hold the document to the truth.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from callplane.store.accounts import STATUSES as ACCOUNT_STATUSES
from callplane.store.calls import STATUSES as CALL_STATUSES

from .numbers import APPLICATION_FIELDS, FLAG_FIELDS, METHOD_FIELDS, URL_FIELDS
from .paging import MAX_LIMIT, MAX_PAGE_SIZE

__all__ = ["DESCRIPTION", "OPERATIONS", "install_openapi"]

DESCRIPTION = """\
The callplane REST API: the Restcomm Connect `2012-04-24` API (Accounts, Calls with live call modification,
Recordings, Notifications, Clients and IncomingPhoneNumbers), served under both
`/2012-04-24` and `/restcomm/2012-04-24`.

**Authentication.** HTTP Basic on every operation: the AccountSid (or the account's email address) as the user
name and the AuthToken as the password. An account acts on itself and on its sub-accounts only.

**Representations.** XML by default, as Restcomm. JSON when the last path segment ends in `.json`
(`/Accounts/{AccountSid}/Calls.json`) or when the `Accept` header names JSON.

**Request bodies.** POST operations take `application/x-www-form-urlencoded` fields with Restcomm's names
(`FriendlyName`, `Status`, ...), as Restcomm and Twilio client libraries send them.

**Errors.** Every error has a body: JSON `{"code", "message", "more_info", "status"}` or XML `<RestException>`, with
Twilio-compatible codes (20001 bad request, 20003 authentication failed, 20403 forbidden, 20404 not found, 20004
method not allowed). A 401 carries `WWW-Authenticate`, a 405 carries `Allow`.

**Paging.** Lists take `Page` (from 0) and `PageSize` (1 to 1000), or the cursor `AfterSid` that `next_page_uri`
carries; `Limit` caps how many records the whole listing spans. See `docs/api.md` for the envelope arithmetic.
"""

_STRING = {"type": "string"}
_XML = {"application/xml": {"schema": {"type": "string", "description": "Restcomm XML representation"}}}


def _json_and_xml(ref: str, description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}, **_XML},
    }
    if headers:
        out["headers"] = headers
    return out


_ERROR_TEXT = {
    400: "A field or parameter is invalid; the message names it",
    401: "No credentials, or an unknown AccountSid or wrong AuthToken",
    403: "The caller's account is not active, or the account is not the caller's nor one of its sub-accounts",
    404: "No such account or resource",
    409: "A conflict: the EmailAddress or the Client Login is taken, the PhoneNumber is provisioned already, or the "
    "call has already ended (or lives on another node)",
    413: "The body is larger than the API accepts",
    415: "The body is not application/x-www-form-urlencoded",
    503: "The call engine is not running on this node",
}
_WWW_AUTHENTICATE = {
    "WWW-Authenticate": {"description": 'Always `Basic realm="callplane"`', "schema": {"type": "string"}}
}


def _errors(*statuses: int) -> dict[str, Any]:
    return {
        str(s): _json_and_xml("RestException", _ERROR_TEXT[s], _WWW_AUTHENTICATE if s == 401 else None)
        for s in statuses
    }


_FRIENDLY_NAME = {
    "type": "string",
    "minLength": 1,
    "maxLength": 256,
    "pattern": r"\S",
    "description": "A name for the account, 1 to 256 characters (surrounding white space is removed)",
}


def _form(ref: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {"application/x-www-form-urlencoded": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


SCHEMAS: dict[str, Any] = {
    "RestException": {
        "type": "object",
        "required": ["code", "message", "more_info", "status"],
        "properties": {
            "code": {"type": "integer", "description": "Twilio-compatible error code"},
            "message": _STRING,
            "more_info": {"type": "string", "format": "uri"},
            "status": {"type": "integer", "description": "The HTTP status, repeated"},
        },
    },
    "Account": {
        "type": "object",
        "required": [
            "sid",
            "friendly_name",
            "type",
            "status",
            "role",
            "date_created",
            "date_updated",
            "uri",
            "subresource_uris",
        ],
        "properties": {
            "sid": {"type": "string", "pattern": "^AC[0-9a-f]{32}$"},
            "friendly_name": _STRING,
            "email_address": {"type": "string", "description": "Present when the account has one"},
            "type": _STRING,
            "status": {"type": "string", "enum": list(ACCOUNT_STATUSES)},
            "role": _STRING,
            "owner_account_sid": {"type": "string", "description": "The parent account (absent for the administrator)"},
            "date_created": {"type": "string", "description": "RFC 2822 date"},
            "date_updated": {"type": "string", "description": "RFC 2822 date"},
            "auth_token": {
                "type": "string",
                "description": "Only in the answer that created or rotated the token; tokens are stored hashed",
            },
            "uri": _STRING,
            "subresource_uris": {"type": "object", "additionalProperties": _STRING},
        },
    },
    "AccountList": {"type": "array", "items": {"$ref": "#/components/schemas/Account"}},
    "FormFields": {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "description": "Form fields with Restcomm's names (see the operation's description)",
    },
    "AccountCreate": {
        "type": "object",
        "required": ["FriendlyName"],
        "properties": {
            "FriendlyName": _FRIENDLY_NAME,
            "EmailAddress": {
                "type": "string",
                "format": "email",
                "description": "Optional; unique among all accounts (409 when taken). Also a login name",
            },
        },
    },
    "AccountUpdate": {
        "type": "object",
        "properties": {
            "FriendlyName": _FRIENDLY_NAME,
            "Status": {
                "type": "string",
                "enum": list(ACCOUNT_STATUSES),
                "description": "Only an ancestor may change it (403 for the account itself); closing closes every "
                "sub-account",
            },
            "RotateAuthToken": {
                "type": "string",
                "enum": ["true", "false"],
                "description": "true: a fresh random token is generated and returned once, in this answer",
            },
        },
    },
    "Call": {
        "type": "object",
        "required": ["sid", "subresource_uris"],
        "properties": {
            "sid": _STRING,
            "InstanceId": {"type": "string", "description": "The node that owns (or owned) the call"},
            "date_created": {"type": "string", "description": "RFC 2822 date"},
            "date_updated": {"type": "string", "description": "RFC 2822 date"},
            "parent_call_sid": _STRING,
            "account_sid": _STRING,
            "to": _STRING,
            "from": _STRING,
            "phone_number_sid": _STRING,
            "status": {"type": "string", "enum": list(CALL_STATUSES)},
            "start_time": {"type": "string", "description": "ISO 8601"},
            "end_time": {"type": "string", "description": "ISO 8601"},
            "duration": {"type": "integer", "minimum": 0, "description": "Seconds, 0 until the call has ended"},
            "direction": _STRING,
            "answered_by": _STRING,
            "api_version": _STRING,
            "forwarded_from": _STRING,
            "caller_name": _STRING,
            "uri": _STRING,
            "ring_duration": {"type": "integer", "minimum": 0},
            "subresource_uris": {"type": "object", "additionalProperties": _STRING},
        },
    },
    "CallList": {
        "type": "object",
        "required": [
            "page",
            "num_pages",
            "page_size",
            "total",
            "limit",
            "start",
            "end",
            "uri",
            "first_page_uri",
            "previous_page_uri",
            "next_page_uri",
            "last_page_uri",
            "calls",
        ],
        "properties": {
            "page": {"type": "integer", "minimum": 0},
            "num_pages": {"type": "integer", "minimum": 0, "description": "The last page's index (total // page_size)"},
            "page_size": {"type": "integer", "minimum": 1},
            "total": {"type": "integer", "minimum": 0, "description": "Matching records, capped at limit"},
            "limit": {"type": "integer", "minimum": 1},
            "start": {"type": "string", "description": "Index of the page's first record, as a string"},
            "end": {"type": "string", "description": "Index of the page's last record, as a string"},
            "uri": _STRING,
            "first_page_uri": _STRING,
            "previous_page_uri": {"type": "string", "description": 'The string "null" on the first page'},
            "next_page_uri": {"type": "string", "description": 'The string "null" on the last page'},
            "last_page_uri": _STRING,
            "calls": {"type": "array", "items": {"$ref": "#/components/schemas/Call"}},
        },
    },
}


def _paged(key: str, item: str) -> dict[str, Any]:
    """A list envelope like CallList's, holding ``item`` values under ``key``."""
    envelope = dict(SCHEMAS["CallList"])
    props = {k: v for k, v in envelope["properties"].items() if k != "calls"}
    props[key] = {"type": "array", "items": {"$ref": f"#/components/schemas/{item}"}}
    return {"type": "object", "required": [*envelope["required"][:-1], key], "properties": props}


_URL = {"type": "string", "format": "uri", "description": "Absolute http(s) URL"}
_WEBHOOK_FIELDS = ("url", "method", "fallback_url", "fallback_method", "application_sid")
_METHOD = {"type": "string", "enum": ["GET", "POST"], "description": "Default POST"}
SCHEMAS.update(
    {
        "CallCreate": {
            "type": "object",
            "required": ["From", "To", "Url"],
            "properties": {
                "From": {"type": "string", "description": "Caller id: a number or login, or a SIP URI"},
                "To": {
                    "type": "string",
                    "description": "sip:user@host[:port][;transport=tcp], client:login (every registration rings) "
                    "or a number (through CALLPLANE_OUTBOUND_PROXY); ?X-h=v adds custom SIP headers",
                },
                "Url": _URL,
                "Method": _METHOD,
                "FallbackUrl": _URL,
                "FallbackMethod": _METHOD,
                "StatusCallback": _URL,
                "StatusCallbackMethod": _METHOD,
                "StatusCallbackEvent": {
                    "type": "string",
                    "description": "initiated, ringing, answered, completed; comma or space separated (default "
                    "completed)",
                },
                "Timeout": {"type": "integer", "minimum": 1, "maximum": 600, "description": "Ring seconds, default 60"},
                "Username": {"type": "string", "description": "Digest user for a 401/407 to the INVITE"},
                "Password": {"type": "string", "description": "Digest password"},
            },
            "additionalProperties": {"type": "string", "description": "X-… fields become SIP headers"},
        },
        "CallUpdate": {
            "type": "object",
            "properties": {
                "Url": _URL,
                "Method": _METHOD,
                "FallbackUrl": _URL,
                "FallbackMethod": _METHOD,
                "StatusCallback": _URL,
                "StatusCallbackMethod": _METHOD,
                "Status": {"type": "string", "enum": ["canceled", "completed"]},
                "Mute": {"type": "string", "enum": ["true", "false"]},
                "ChildCallMode": {"type": "string", "enum": ["Hangup", "Move", "StayConnected"]},
                "MoveConnectedCallLeg": {"type": "string", "enum": ["true", "false"]},
            },
        },
        "Recording": {
            "type": "object",
            "required": ["sid", "account_sid", "call_sid", "duration", "uri", "file_uri"],
            "properties": {
                "sid": {"type": "string", "pattern": "^RE[0-9a-f]{32}$"},
                "date_created": {"type": "string", "description": "RFC 2822 date"},
                "date_updated": {"type": "string", "description": "RFC 2822 date"},
                "account_sid": _STRING,
                "call_sid": _STRING,
                "duration": {"type": "string", "description": "Seconds, e.g. 3.0"},
                "api_version": _STRING,
                "file_uri": {"type": "string", "description": "Absolute URL of the audio (audio/wav)"},
                "uri": _STRING,
            },
        },
        "Notification": {
            "type": "object",
            "required": ["sid", "account_sid", "error_code", "message_text", "uri"],
            "properties": {
                "sid": {"type": "string", "pattern": "^NO[0-9a-f]{32}$"},
                "date_created": _STRING,
                "date_updated": _STRING,
                "account_sid": _STRING,
                "call_sid": _STRING,
                "api_version": _STRING,
                "log": {"type": "integer", "enum": [0, 1], "description": "0 error, 1 warning"},
                "error_code": {"type": "integer"},
                "more_info": _STRING,
                "message_text": _STRING,
                "message_date": _STRING,
                "request_url": _STRING,
                "request_method": _STRING,
                "request_variables": _STRING,
                "response_headers": _STRING,
                "response_body": _STRING,
                "uri": _STRING,
            },
        },
    }
)
_CLIENT_FIELDS: dict[str, Any] = {
    "FriendlyName": {**_FRIENDLY_NAME, "description": "1 to 256 characters, no control characters; default the Login"},
    "Status": {"type": "string", "enum": ["1", "0", "true", "false"], "description": "1 enabled (default), 0 disabled"},
    "VoiceUrl": _URL,
    "VoiceMethod": _METHOD,
    "VoiceFallbackUrl": _URL,
    "VoiceFallbackMethod": _METHOD,
    "VoiceApplicationSid": {"type": "string", "pattern": "^(AP[0-9a-fA-F]{32})?$"},
}
_LOGIN = {
    "type": "string",
    "pattern": r"^[A-Za-z0-9\-_.!~*'()&=+$]{1,64}$",
    "description": "A SIP user name, unique on the cluster (409 when taken); it cannot change",
}
_PASSWORD = {
    "type": "string",
    "minLength": 8,
    "maxLength": 128,
    "description": "Three of lower-case letters, capitals, digits and symbols, not containing the Login (else 400 "
    "Password too weak). Stored only as digest HA1s; never returned",
}
_NULLABLE = {"type": "string", "description": "Absent when not set"}
SCHEMAS.update(
    {
        "Client": {
            "type": "object",
            "required": [
                "sid",
                "date_created",
                "date_updated",
                "account_sid",
                "api_version",
                "friendly_name",
                "login",
                "password_algorithm",
                "status",
                "voice_method",
                "voice_fallback_method",
                "uri",
            ],
            "properties": {
                "sid": {"type": "string", "pattern": "^CL[0-9a-f]{32}$"},
                "date_created": {"type": "string", "description": "RFC 2822 date"},
                "date_updated": {"type": "string", "description": "RFC 2822 date"},
                "account_sid": _STRING,
                "api_version": _STRING,
                "friendly_name": _STRING,
                "login": _STRING,
                "password_algorithm": {"type": "string", "enum": ["MD5"]},
                "status": {"type": "integer", "enum": [0, 1]},
                "voice_url": _NULLABLE,
                "voice_method": {"type": "string", "enum": ["GET", "POST"]},
                "voice_fallback_url": _NULLABLE,
                "voice_fallback_method": {"type": "string", "enum": ["GET", "POST"]},
                "voice_application_sid": _NULLABLE,
                "uri": _STRING,
            },
            "additionalProperties": False,
        },
        "ClientList": {"type": "array", "items": {"$ref": "#/components/schemas/Client"}},
        "ClientCreate": {
            "type": "object",
            "required": ["Login", "Password"],
            "properties": {"Login": _LOGIN, "Password": _PASSWORD, **_CLIENT_FIELDS},
        },
        "ClientUpdate": {
            "type": "object",
            "properties": {
                "Login": {**_LOGIN, "description": "Only the Client's own Login (400 otherwise): it cannot change"},
                "Password": _PASSWORD,
                **_CLIENT_FIELDS,
            },
        },
    }
)
_TRUE_FALSE = {"type": "string", "enum": ["true", "false"], "description": "true or false, in any case"}
_NUMBER_FORM: dict[str, Any] = {
    "PhoneNumber": {
        "type": "string",
        "description": "The number, stored in E.164: +, country code and number (spaces, dashes, dots and "
        "parentheses are ignored; 00 is read as +; digits without + are taken to include the country code)",
    },
    "FriendlyName": {"type": "string", "maxLength": 256, "description": "1 to 256 characters; default the number"},
    **dict.fromkeys(URL_FIELDS, _URL),
    **dict.fromkeys(METHOD_FIELDS, _METHOD),
    **dict.fromkeys(
        APPLICATION_FIELDS,
        {"type": "string", "pattern": "^AP[0-9a-fA-F]{32}$", "description": "Stored and returned; not used"},
    ),
    **dict.fromkeys(FLAG_FIELDS, _TRUE_FALSE),
}
_NUMBER_FIELDS = [
    "sid",
    "account_sid",
    "friendly_name",
    "phone_number",
    "voice_url",
    "voice_method",
    "voice_fallback_url",
    "voice_fallback_method",
    "status_callback",
    "status_callback_method",
    "voice_caller_id_lookup",
    "voice_application_sid",
    "date_created",
    "date_updated",
    *(f"{kind}_{field}" for kind in ("sms", "ussd") for field in _WEBHOOK_FIELDS),
    "refer_url",
    "refer_method",
    "refer_application_sid",
    "capabilities",
    "api_version",
    "uri",
]
_NUMBER_UNSET = {*URL_FIELDS.values(), *APPLICATION_FIELDS.values()}  # JSON leaves these out while unset
SCHEMAS.update(
    {
        "IncomingPhoneNumber": {
            "type": "object",
            "required": [f for f in _NUMBER_FIELDS if f not in _NUMBER_UNSET],
            "properties": {
                **{f: _STRING for f in _NUMBER_FIELDS},
                "sid": {"type": "string", "pattern": "^PN[0-9a-f]{32}$"},
                "phone_number": {"type": "string", "pattern": r"^\+[1-9][0-9]{1,14}$", "description": "E.164"},
                "voice_caller_id_lookup": {"type": "boolean"},
                "capabilities": {
                    "type": "object",
                    "required": ["voice_capable", "sms_capable", "mms_capable", "fax_capable"],
                    "properties": {
                        name: {"type": "boolean"}
                        for name in ("voice_capable", "sms_capable", "mms_capable", "fax_capable")
                    },
                },
            },
        },
        "IncomingPhoneNumberCreate": {"type": "object", "required": ["PhoneNumber"], "properties": _NUMBER_FORM},
        "IncomingPhoneNumberUpdate": {
            "type": "object",
            "description": "Only the fields given change. PhoneNumber, if given, must be the number's own",
            "properties": _NUMBER_FORM,
        },
    }
)
SCHEMAS["IncomingPhoneNumberList"] = _paged("incomingPhoneNumbers", "IncomingPhoneNumber")
SCHEMAS["RecordingList"] = _paged("recordings", "Recording")
SCHEMAS["NotificationList"] = _paged("notifications", "Notification")

#: Per route name: the 200 representation, the form body (if any) and the error statuses it can answer.
OPERATIONS: dict[str, tuple[str, str | None, tuple[int, ...]]] = {
    "list_accounts": ("AccountList", None, (401, 403)),
    "create_account": ("Account", "AccountCreate", (400, 401, 403, 409, 413, 415)),
    "get_account": ("Account", None, (401, 403, 404)),
    "update_account": ("Account", "AccountUpdate", (400, 401, 403, 404, 413, 415)),
    "list_calls": ("CallList", None, (400, 401, 403, 404)),
    "get_call": ("Call", None, (401, 403, 404)),
    "place_call": ("Call", "CallCreate", (400, 401, 403, 404, 413, 415, 503)),
    "modify_call": ("Call", "CallUpdate", (400, 401, 403, 404, 409, 413, 415, 503)),
    "list_recordings": ("RecordingList", None, (400, 401, 403, 404)),
    "list_call_recordings": ("RecordingList", None, (400, 401, 403, 404)),
    "get_recording": ("Recording", None, (401, 403, 404)),
    "delete_recording": ("", None, (401, 403, 404)),
    "list_notifications": ("NotificationList", None, (400, 401, 403, 404)),
    "list_call_notifications": ("NotificationList", None, (400, 401, 403, 404)),
    "get_notification": ("Notification", None, (401, 403, 404)),
    "list_clients": ("ClientList", None, (401, 403, 404)),
    "create_client": ("Client", "ClientCreate", (400, 401, 403, 404, 409, 413, 415)),
    "get_client": ("Client", None, (401, 403, 404)),
    "update_client": ("Client", "ClientUpdate", (400, 401, 403, 404, 413, 415)),
    "replace_client": ("Client", "ClientUpdate", (400, 401, 403, 404, 413, 415)),
    "delete_client": ("", None, (401, 403, 404)),
    "list_incoming_numbers": ("IncomingPhoneNumberList", None, (400, 401, 403, 404)),
    **{
        name: ("IncomingPhoneNumber", "IncomingPhoneNumberCreate", (400, 401, 403, 404, 409, 413, 415))
        for name in (
            "create_incoming_number",
            "create_local_incoming_number",
            "create_tollfree_incoming_number",
            "create_mobile_incoming_number",
        )
    },
    "get_incoming_number": ("IncomingPhoneNumber", None, (401, 403, 404)),
    "update_incoming_number": ("IncomingPhoneNumber", "IncomingPhoneNumberUpdate", (400, 401, 403, 404, 413, 415)),
    "put_incoming_number": ("IncomingPhoneNumber", "IncomingPhoneNumberUpdate", (400, 401, 403, 404, 413, 415)),
    "delete_incoming_number": ("", None, (401, 403, 404)),
}

_QUERY_SCHEMAS: dict[str, dict[str, Any]] = {
    "Page": {"type": "integer", "minimum": 0},
    "PageSize": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
    "Limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
    "Status": {"type": "string", "enum": list(CALL_STATUSES)},
    "Reverse": {"type": "string", "enum": ["true", "false"]},
}
_PATH_PARAMS = {
    "AccountSid": "The account's Sid (AC + 32 hex digits)",
    "CallSid": "The call's Sid",
    "ClientSid": "The Client's Sid (CL + 32 hex digits)",
    "PhoneNumberSid": "The incoming phone number's Sid (PN + 32 hex digits)",
}


def _document_operation(operation: dict[str, Any], name: str, method: str) -> None:
    if name in OPERATIONS:
        representation, form, errors = OPERATIONS[name]
        success = (
            {"200": _json_and_xml(representation, "Success")} if representation else {"204": {"description": "Deleted"}}
        )
        operation["responses"] = {**success, **_errors(*errors)}
        if form is not None:
            operation["requestBody"] = _form(form)
    else:  # a route without an entry yet: what every route shares, and no 422 (nothing is validated by FastAPI)
        responses = {k: v for k, v in operation.get("responses", {}).items() if k != "422"}
        operation["responses"] = responses | _errors(400, 401, 403, 404)
        if method == "post":
            operation["requestBody"] = _form("FormFields")
    for param in operation.get("parameters", []):
        if param["in"] == "path" and param["name"] in _PATH_PARAMS:
            param["description"] = _PATH_PARAMS[param["name"]]
            param["schema"] = {"type": "string", "minLength": 1}
        elif param["in"] == "query" and param["name"] in _QUERY_SCHEMAS:
            param["schema"] = _QUERY_SCHEMAS[param["name"]]


def build_document(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    for path_item in schema.get("paths", {}).values():
        for method, operation in path_item.items():
            name = operation["operationId"].removeprefix("restcomm_")
            _document_operation(operation, name, method)
    components = schema.setdefault("components", {})
    components["schemas"] = dict(SCHEMAS)  # drops FastAPI's HTTPValidationError/ValidationError (never answered)
    components["securitySchemes"] = {
        "basic": {"type": "http", "scheme": "basic", "description": "AccountSid (or email) and AuthToken"}
    }
    schema["security"] = [{"basic": []}]
    return schema


def install_openapi(app: FastAPI) -> None:
    """Serve :func:`build_document` at ``app.openapi_url`` (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
