def test_meter_event_summary_round_trip(api):
    meter = api.create_meter()
    out = api.record(
        {"meterId": meter["id"], "userId": "u1", "value": 5},
        {"eventName": "input_tokens", "userId": "u1", "value": 7, "idempotency": "k"},
        {"eventName": "input_tokens", "userId": "u1", "value": 7, "idempotency": "k"},
    )
    assert [e["status"] for e in out["events"]] == ["created", "created", "duplicate"]
    assert out["events"][1]["id"] == out["events"][2]["id"]
    s = api.summary(meterId=meter["id"], userId="u1")
    assert s["value"] == 12 and s["eventCount"] == 2
