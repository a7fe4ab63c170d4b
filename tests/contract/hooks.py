"""Rules of the task API that JSON Schema cannot state, applied to generated requests.

The document says what each field accepts on its own. A few rules relate fields to each other
or to the stored task (README, "API" and "Reminders"): a reminder needs a due time and fires at
or before it, only one reminder form at a time, due_before later than due_after, a cursor only
as the API issued it, one Idempotency-Key per distinct request. A request valid by the schema
alone may break them and rightly get 422. These hooks make generated requests keep them, the
way a real client's requests do, so positive_data_acceptance tests what it should: any 422 left
is a real disagreement.

A request meant to be invalid must stay invalid, so each repair only touches values that are
themselves valid by the document (its own patterns, read from openapi.json); one with an invalid
value is left as it was. The hooks run for every phase: map_case where cases are built directly
(examples, coverage), the body, query and header hooks where they are drawn from strategies
(fuzzing, stateful).
"""

import json
import pathlib
import re
import uuid
from collections.abc import MutableMapping

import schemathesis

DOCUMENT = json.loads((pathlib.Path(__file__).resolve().parents[2] / "openapi.json").read_text())
_INPUT = DOCUMENT["components"]["schemas"]["TaskCreate"]["properties"]
DATE_TIME = re.compile(_INPUT["due_at"]["pattern"])
MAX_MINUTES = _INPUT["remind_before_minutes"]["maximum"]
_KEY_SCHEMA = next(
    p["schema"]
    for p in DOCUMENT["paths"]["/api/{user_id}/tasks"]["post"]["parameters"]
    if p["name"] == "Idempotency-Key"
)
IDEMPOTENCY_KEY = re.compile(_KEY_SCHEMA["pattern"])

TASKS = "/api/{user_id}/tasks"
TASK = "/api/{user_id}/tasks/{id}"
REMINDERS = ("remind_before_minutes", "remind_at")
# A due time the repairs give a reminder that has none: inside every limit.
DUE = "2030-01-02T03:04:05Z"


def _date_time(value) -> bool:
    return isinstance(value, str) and DATE_TIME.match(value) is not None


def _minutes(value) -> bool:
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    return not isinstance(value, bool) and whole and 0 <= value <= MAX_MINUTES


def _valid_or_null(name: str, value) -> bool:
    if value is None:
        return True
    return _minutes(value) if name == "remind_before_minutes" else _date_time(value)


def _fit_reminder(body: dict, whole: bool) -> None:
    """A reminder needs a due time and fires at or before it; one reminder form at a time."""
    due = body.get("due_at")
    if (due is not None and not _date_time(due)) or not all(
        _valid_or_null(name, body.get(name)) for name in REMINDERS
    ):
        return
    if not whole and not any(name in body for name in ("due_at", *REMINDERS)):
        return
    present = [name for name in REMINDERS if body.get(name) is not None]
    if len(present) == 2:
        body["remind_at"] = None
        present = ["remind_before_minutes"]
    if not present:
        if not whole:
            # A PATCH that moves or clears due_at must not strand the stored reminder.
            for name in REMINDERS:
                body[name] = None
        return
    if body.get("due_at") is None:
        body["due_at"] = DUE
    if "remind_at" in present:
        # The due time itself is the latest a reminder may fire.
        body["remind_at"] = body["due_at"]


def _repair_body(method: str, path: str, body):
    if isinstance(body, dict):
        if (method, path) in (("POST", TASKS), ("PUT", TASK)):
            _fit_reminder(body, whole=True)
        elif (method, path) == ("PATCH", TASK):
            _fit_reminder(body, whole=False)
    return body


def _repair_query(method: str, path: str, query):
    if (method, path) == ("GET", TASKS) and isinstance(query, dict):
        # Any string is a cursor by the document; only one the API issued is valid.
        query.pop("cursor", None)
        before, after = query.get("due_before"), query.get("due_after")
        if _date_time(before) and _date_time(after):
            query.pop("due_before")
    return query


def _repair_headers(headers):
    if isinstance(headers, MutableMapping):
        for name in [n for n in headers if n.lower() == "idempotency-key"]:
            key = headers[name]
            if isinstance(key, str) and IDEMPOTENCY_KEY.match(key):
                # The same key with another body is a 422 by design.
                headers[name] = f'"{uuid.uuid4()}"'
    return headers


def _operation(context):
    operation = context.operation
    return operation.method.upper(), operation.path


@schemathesis.hook
def map_case(context, case):
    # In place only: schemathesis notices changed containers and validates them again, so a
    # repaired case is judged as what is sent. Assigning a container marks it changed even
    # when it is not.
    method, path = case.operation.method.upper(), case.operation.path
    _repair_body(method, path, case.body)
    _repair_query(method, path, case.query)
    _repair_headers(case.headers)
    return case


@schemathesis.hook
def map_body(context, body):
    return _repair_body(*_operation(context), body)


@schemathesis.hook
def map_query(context, query):
    return _repair_query(*_operation(context), query)


@schemathesis.hook
def map_headers(context, headers):
    return _repair_headers(headers)
