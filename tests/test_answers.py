"""Each answer is described once, by its response schema (app/schemas/responses.py).

Most views answer through their schema (`@response`, app/api/declare.py). The two hot
paths answer by hand (`responses.record_json`, `events.summary_json`; benchmarks/answers.py
measures why); these tests hold their real answers to their schemas: every required field
present, nothing the schema does not name, each field in the schema's own form.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app import create_app
from app.api.declare import body, operation, response
from app.openapi import document
from app.openapi.operations import operation_of
from app.schemas import responses

MOMENT = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)


def _at(hours: int) -> str:
    return (MOMENT + timedelta(hours=hours)).isoformat().replace("+00:00", "Z")


def _conforms(schema, answer: dict) -> None:
    assert schema.validate(answer) == {}  # required fields present, no unknown one
    assert schema.dump(answer) == answer  # and each in the form the schema writes


def test_the_recording_answer_is_its_schema(api):
    meter = api.create_meter()
    event = {"meterId": meter["id"], "userId": "u1", "value": 3, "idempotency": "k1"}
    answer = api.record(event, event, {**event, "value": 4})
    _conforms(responses.RecordResult(), answer)
    assert [e["status"] for e in answer["events"]] == ["created", "duplicate", "conflict"]


def test_the_summary_answer_is_its_schema_with_windows_groups_and_exact_big_values(api):
    meter = api.create_meter(dimensions=["model"])
    big = 1 << 62  # two of them sum past int64: the value is sent as a string of digits
    api.record(
        *(
            {
                "meterId": meter["id"],
                "userId": "u1",
                "value": value,
                "timestamp": _at(h),
                "dimensions": {"model": model},
            }
            for h, model, value in ((1, "a", big), (2, "a", big), (3, "b", 5))
        )
    )
    answer = api.summary(
        meterId=meter["id"],
        userId="u1",
        windowSize="day",
        groupBy="model",
        periodStart=_at(0),
        periodEnd=_at(4),
    )
    _conforms(responses.Summary(), answer)
    assert answer["value"] == str(2 * big + 5)
    assert {w["groupBy"]["model"]: w["value"] for w in answer["windows"]} == {
        "a": str(2 * big),
        "b": 5,
    }


def test_a_plain_summary_answer_is_its_schema(api):
    meter = api.create_meter(aggregationType="max")
    _conforms(responses.Summary(), api.summary(meterId=meter["id"]))  # null value, no windows


def test_a_page_of_users_and_top_users_are_their_schema(api):
    meter = api.create_meter()
    api.record(
        *({"meterId": meter["id"], "userId": u, "value": 2, "timestamp": _at(1)} for u in "abc")
    )
    first = api.summary(meterId=meter["id"], groupBy="userId", limit=2)
    _conforms(responses.Summary(), first)
    assert isinstance(first["nextCursor"], str)
    last = api.summary(meterId=meter["id"], groupBy="userId", cursor=first["nextCursor"])
    _conforms(responses.Summary(), last)
    assert last["nextCursor"] is None
    top = api.summary(meterId=meter["id"], groupBy="userId", orderBy="-value", limit=1)
    _conforms(responses.Summary(), top)
    assert [w["groupBy"] for w in top["windows"]] == [{"userId": "a"}]


def test_a_view_answers_through_its_schema_and_documents_it(config):
    """The decorators both run and describe: the body is validated and passed in, the
    answer is serialized by the schema (attributes renamed, empty fields left out)."""
    app = create_app(config)

    @app.post("/v1/billing/echo")
    @operation("meters")
    @body(responses.Revoked)
    @response(responses.Meter, 201, "The echo.")
    def echo(fields):
        """Echo a meter."""
        return _Meter(fields["revoked"])

    answer = app.test_client().post("/v1/billing/echo", json={"revoked": 2})
    assert answer.status_code == 201
    assert answer.get_json() == {
        "id": "mtr_2",
        "name": "n",
        "eventName": "e",
        "aggregationType": "sum",
        "currency": "usd",
        "dimensions": ["model"],
        "metadata": {},
        "status": "archived",
        "createdAt": "2026-11-01T00:00:00Z",
        "updatedAt": "2026-11-01T00:00:00.000001Z",
        "allowBackfill": False,  # issue 17: always answered, False by default
    }
    declared = operation_of(app.view_functions["echo"])
    assert (declared.tag, declared.body, declared.success[201].shape) == (
        "meters",
        responses.Revoked,
        responses.Meter,
    )
    operation_doc = document.build(app)["paths"]["/v1/billing/echo"]["post"]
    assert operation_doc["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Meter"
    }


class _Meter:
    """Shaped like the stored meter the services return."""

    def __init__(self, number: int):
        self.id_ = f"mtr_{number}"
        self.name, self.event_name, self.aggregation_type = "n", "e", "sum"
        self.currency, self.dimensions, self.metadata = "usd", ["model"], {}  # type: ignore[var-annotated]
        self.unique_by, self.deleted = None, True
        self.created_at = datetime(2026, 11, 1, tzinfo=UTC)
        self.updated_at = self.created_at + timedelta(microseconds=1)
