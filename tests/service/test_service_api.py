"""The scoring API in-process: the service class called directly, and its ASGI app
(``to_asgi()``) through a test client. Real champions (trained, registered and
imported by ``_serving_support``), no stub scorer.

Parity: the API's score for a lead / deal equals the batch path's (offline DuckDB
engine over the full tables + the same bundle) for the same entity and as-of time.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pytest
from _serving_support import Champions, as_mqls, module_champions, point_bentoml
from starlette.responses import JSONResponse

if TYPE_CHECKING:
    from starlette.testclient import TestClient

PERSONAL = "jane.doe@example.com"


@pytest.fixture(scope="module")
def champs(tmp_path_factory: pytest.TempPathFactory) -> Champions:
    return module_champions(tmp_path_factory.getbasetemp())


@pytest.fixture
def serving(champs: Champions, monkeypatch: pytest.MonkeyPatch) -> Champions:
    for key, value in champs.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("LEADML_API_KEY", raising=False)
    point_bentoml(champs.bentoml_home)
    return champs


_APP: list[Any] = []


def _client() -> Iterator[TestClient]:
    """A client of the service's ASGI app. The app is built once per process (BentoML
    registers its HTTP metrics when an app is built); each client runs the app's
    lifespan, which creates a fresh service instance reading the current settings."""
    import warnings

    from leadml.serving.service import LeadmlAPI

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
        from starlette.testclient import TestClient

    if not _APP:
        _APP.append(LeadmlAPI.to_asgi())
    with TestClient(_APP[0]) as client:
        yield client


@pytest.fixture
def client(serving: Champions) -> Iterator[TestClient]:
    yield from _client()


def _leads(c: Champions, n: int | None = None) -> dict[str, Any]:
    leads = c.parity["leads"] if n is None else c.parity["leads"][:n]
    return {"as_of": c.parity["as_of"], "leads": copy.deepcopy(leads)}


def _deals(c: Champions, period_end: str = "2024-12-31T00:00:00Z") -> dict[str, Any]:
    return {
        "as_of": c.parity["as_of"],
        "period_end": period_end,
        "deals": copy.deepcopy(c.parity["deals"]),
    }


# ---------------------------------------------------------------- depth 1: the class


def test_service_class_scores_leads_with_the_champion(serving: Champions) -> None:
    from leadml.serving.schemas import ScoreLeadsRequest, ScoreLeadsResponse
    from leadml.serving.service import LeadmlAPI

    svc = LeadmlAPI()
    out = asyncio.run(svc.score_leads(ScoreLeadsRequest.model_validate(_leads(serving))))
    assert isinstance(out, ScoreLeadsResponse)
    assert [s.lead_id for s in out.scores] == [lead["lead_id"] for lead in serving.parity["leads"]]
    info = asyncio.run(svc.metadata())
    cut = info.models["lead_readiness"]["grade_cutoffs"]
    for s in out.scores:
        assert (
            s.model.name == "lead_readiness"
            and s.model.version == serving.versions["lead_readiness"]
        )
        assert 0 <= s.readiness <= 1 and 0 <= s.percentile <= 100
        expected = (
            "A"
            if s.readiness >= cut["A"]
            else "B"
            if s.readiness >= cut["B"]
            else ("C" if s.readiness >= cut["C"] else "D")
        )
        assert s.grade == expected
        assert s.reasons and all(
            r.text and r.feature in info.models["lead_readiness"]["features"] for r in s.reasons
        )
    # percentile is a monotone function of the calibrated probability
    ranked = sorted(out.scores, key=lambda s: s.readiness)
    assert all(a.percentile <= b.percentile for a, b in zip(ranked, ranked[1:], strict=False))


def test_service_class_refuses_records_at_or_after_as_of(serving: Champions) -> None:
    from leadml.serving.schemas import ScoreLeadsRequest
    from leadml.serving.service import LeadmlAPI

    body = _leads(serving, 2)
    body["leads"][1]["events"].append({"ts": body["as_of"], "type": "web_visit"})
    out = asyncio.run(LeadmlAPI().score_leads(ScoreLeadsRequest.model_validate(body)))
    assert isinstance(out, JSONResponse) and out.status_code == 422
    n = len(body["leads"][1]["events"]) - 1
    assert b'"loc":["leads",1,"events",%d,"ts"]' % n in out.body


# ---------------------------------------------------------------- depth 2: ASGI


def test_asgi_every_endpoint_answers(client: TestClient, serving: Champions) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    meta = client.get("/metadata").json()
    for kind in ("lead_readiness", "deal_close"):
        m = meta["models"][kind]
        assert m["version"] == serving.versions[kind]
        assert m["features"] and len(m["training_window"]) == 2
    r = client.post("/score_leads", json=_leads(serving))
    assert r.status_code == 200, r.text
    assert len(r.json()["scores"]) == len(serving.parity["leads"])
    assert r.headers["x-request-id"]
    deals = client.post("/score_deals", json=_deals(serving))
    assert deals.status_code == 200, deals.text
    for d in deals.json()["scores"]:
        assert 0 <= d["p_won_by_period_end"] <= 1 and d["stage"]
        assert "p_won_in_period" not in d
        assert d["horizon_days"] == meta["models"]["deal_close"]["horizon_days"]


def test_asgi_batched_scores_equal_unbatched(
    serving: Champions, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = _leads(serving)
    for client in _client():
        plain = client.post("/score_leads", json=body).json()["scores"]
    monkeypatch.setenv("LEADML_SERVING__BATCHING__ENABLED", "true")
    monkeypatch.setenv("LEADML_SERVING__BATCHING__MAX_BATCH_SIZE", "4")  # 6 leads: split in two
    for client in _client():
        assert client.get("/metadata").json()["batching"]["enabled"] is True
        batched = client.post("/score_leads", json=body).json()["scores"]
    assert batched == plain


def test_asgi_deal_probabilities_grow_with_the_period(
    client: TestClient, serving: Champions
) -> None:
    short = client.post("/score_deals", json=_deals(serving, "2024-09-16T00:00:00Z")).json()[
        "scores"
    ]
    long = client.post("/score_deals", json=_deals(serving, "2025-02-28T00:00:00Z")).json()[
        "scores"
    ]
    for a, b in zip(short, long, strict=True):
        assert a["p_won"] == b["p_won"]
        assert a["p_won_by_period_end"] <= b["p_won_by_period_end"] + 1e-12


def test_asgi_handoff_fills_capacity_by_readiness(client: TestClient, serving: Champions) -> None:
    meta = client.get("/metadata").json()
    per_lead = meta["models"]["lead_readiness"]["policy"]["slots_per_lead"]
    capacity = int(2 * per_lead)
    request = as_mqls(_leads(serving))
    r = client.post("/handoff", json={**request, "is_capacity": capacity})
    assert r.status_code == 200, r.text
    out = r.json()
    decisions = out["decisions"]
    assert [d["rank"] for d in decisions] == list(range(1, len(decisions) + 1))
    assert [d["readiness"] for d in decisions] == sorted(
        (d["readiness"] for d in decisions), reverse=True
    )
    handed = [d for d in decisions if d["decision"] == "handoff"]
    assert len(handed) == 2 and [d["rank"] for d in handed] == [1, 2]
    assert out["capacity_left"] == capacity - round(2 * per_lead)
    assert out["slots_per_lead"] == per_lead
    none_left = client.post("/handoff", json={**request, "is_capacity": 0}).json()
    assert all(d["decision"] != "handoff" for d in none_left["decisions"])


def test_asgi_handoff_offers_only_leads_inside_sales_calls(
    client: TestClient, serving: Champions
) -> None:
    """As the nightly call list: only leads whose status at as_of is in
    batch.call_list_statuses (mql, recycled) take IS slots; an SQL lead (already with
    sales) or a disqualified one is not_eligible, ranked after them, whatever its score."""
    request = _leads(serving, 4)
    leads = request["leads"]
    as_of = pd.Timestamp(request["as_of"])
    for lead, status in zip(leads, ["sql", "disqualified", "mql", "nurturing"], strict=True):
        ts = (as_of - pd.Timedelta(days=3)).isoformat()
        lead["status_history"] = [{"ts": lead["created_at"], "status": "lead"}]
        lead["status_history"].append({"ts": ts, "status": status})
    r = client.post("/handoff", json={**request, "is_capacity": 100})
    assert r.status_code == 200, r.text
    by_id = {d["lead_id"]: d for d in r.json()["decisions"]}
    sql, dq, mql, nurturing = (by_id[lead["lead_id"]] for lead in leads)
    assert mql["decision"] == "handoff" and mql["rank"] == 1
    assert nurturing["decision"] == "not_eligible"
    for d, status in ((sql, "sql"), (dq, "disqualified"), (nurturing, "nurturing")):
        assert d["decision"] == "not_eligible" and d["rank"] > 1
        assert f"status {status} is not one inside sales calls" in d["reasons"][0]
    assert r.json()["capacity_left"] == 100 - round(r.json()["slots_per_lead"])


def test_asgi_forecast_mean_is_the_sum_of_expected_deals(
    client: TestClient, serving: Champions
) -> None:
    body = {
        "as_of": serving.parity["as_of"],
        "period_start": "2024-09-01T00:00:00Z",
        "period_end": "2024-12-31T00:00:00Z",
        "deals": serving.parity["deals"],
        "won_amount": 1000.0,
        "target": 50_000.0,
    }
    f = client.post("/forecast", json=body)
    assert f.status_code == 200, f.text
    fc = f.json()
    scores = client.post("/score_deals", json=_deals(serving)).json()["scores"]
    amounts = [
        max(d["stage_history"], key=lambda h: h["ts"])["amount"] for d in serving.parity["deals"]
    ]
    expected = 1000.0 + sum(
        a * s["p_won_by_period_end"] for a, s in zip(amounts, scores, strict=True)
    )
    assert fc["mean"] == pytest.approx(expected, abs=len(amounts) * max(amounts) / 1000)
    assert fc["won_amount"] <= fc["p10"] <= fc["p50"] <= fc["p90"] <= 1000.0 + sum(amounts)
    assert sum(row["deals"] for row in fc["by_stage"]) == len(amounts)
    assert 0 <= fc["p_reach_target"] <= 1
    # the mean is exact: won + the breakdown's expected values (not the grid's mean)
    assert fc["open_expected"] == pytest.approx(sum(row["expected"] for row in fc["by_stage"]))
    assert fc["mean"] == pytest.approx(fc["won_amount"] + fc["open_expected"], rel=1e-12)
    assert fc["source"] == "deals" and fc["new_expected"] == 0.0 and fc["model"]["version"]


def test_asgi_documented_examples_are_valid_requests(client: TestClient) -> None:
    from leadml.serving import schemas

    for path, example in (
        ("/score_leads", schemas.EXAMPLE_SCORE_LEADS),
        ("/handoff", schemas.EXAMPLE_HANDOFF),
        ("/score_deals", schemas.EXAMPLE_SCORE_DEALS),
        ("/forecast", schemas.EXAMPLE_FORECAST),
    ):
        r = client.post(path, json=example)
        assert r.status_code == 200, (path, r.text)


def test_asgi_deal_hygiene_flags(client: TestClient, serving: Champions) -> None:
    deal = copy.deepcopy(serving.parity["deals"][0])
    stage = deal["stage_history"][-1]["stage"]
    deal["created_at"] = "2024-04-01T00:00:00Z"
    closes = ["2024-06-01", "2024-06-15", "2024-07-01", "2024-07-15"]
    deal["stage_history"] = [
        {
            "ts": f"2024-05-{d:02d}T00:00:00Z",
            "stage": stage,
            "amount": 1000.0,
            "expected_close_date": f"{c}T00:00:00Z",
        }
        for d, c in zip((1, 8, 15, 22), closes, strict=True)
    ]
    fresh = copy.deepcopy(deal)
    fresh["stage_history"] = [
        {
            "ts": "2024-09-01T00:00:00Z",
            "stage": stage,
            "amount": 1000.0,
            "expected_close_date": "2024-11-30T00:00:00Z",
        }
    ]
    deal["activities"] = [{"ts": "2024-05-20T10:00:00Z", "type": "call"}]
    # The same deal, but someone called yesterday: worked on, so not stale.
    called = copy.deepcopy(deal)
    fresh["opportunity_id"] = deal["opportunity_id"] + "-fresh"
    called["opportunity_id"] = deal["opportunity_id"] + "-called"
    as_of = pd.Timestamp(serving.parity["as_of"])
    called["activities"] = [{"ts": (as_of - pd.Timedelta(days=1)).isoformat(), "type": "call"}]
    body = {
        "as_of": serving.parity["as_of"],
        "period_end": "2024-12-31T00:00:00Z",
        "deals": [deal, fresh, called],
    }
    r = client.post("/score_deals", json=body)
    assert r.status_code == 200, r.text
    old, new, worked = r.json()["scores"]
    assert {f["rule"] for f in old["hygiene_flags"]} == {
        "past_close_date",
        "stale",
        "close_date_pushed",
    }
    assert new["hygiene_flags"] == []
    assert {f["rule"] for f in worked["hygiene_flags"]} == {"past_close_date", "close_date_pushed"}


# ---------------------------------------------------------------- bad input -> 4xx


def test_asgi_schema_errors_are_400_with_the_field_path(
    client: TestClient, serving: Champions
) -> None:
    body = _leads(serving, 1)
    body["leads"][0]["events"] = [{"ts": "not a time", "type": "web_visit"}]
    r = client.post("/score_leads", json=body)
    assert r.status_code == 400
    assert r.json()["detail"][0]["loc"] == ["leads", 0, "events", 0, "ts"]
    missing = client.post("/score_leads", json={"as_of": serving.parity["as_of"]})
    assert missing.status_code == 400 and missing.json()["detail"][0]["loc"] == ["leads"]
    garbage = client.post(
        "/score_leads", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert garbage.status_code == 400
    assert "Traceback" not in r.text + missing.text + garbage.text
    # the shape of every other error: no internal class name, pydantic prefix or link
    number = dict(_leads(serving, 1), as_of=12345)
    shaped = client.post("/score_leads", json=number).json()
    assert shaped["error"] == "1 problem with the request", shaped
    (problem,) = shaped["detail"]
    assert set(problem) == {"loc", "msg", "type"} and problem["loc"] == ["as_of"]
    assert problem["msg"].startswith("a timestamp must be ISO 8601 text"), problem
    assert "IODescriptor" not in str(shaped) and "errors.pydantic.dev" not in str(shaped)


def test_asgi_bodies_are_json_whatever_the_content_type(
    client: TestClient, serving: Champions
) -> None:
    """`curl -d` sends form encoding: the body is still read as JSON, and a bad one is
    refused without echoing it (BentoML would name the whole body as a form field)."""
    import json

    body = _leads(serving, 1)
    want = client.post("/score_leads", json=body).json()["scores"]
    for ctype in ("application/x-www-form-urlencoded", "text/plain", "multipart/form-data"):
        r = client.post("/score_leads", content=json.dumps(body), headers={"content-type": ctype})
        assert r.status_code == 200, (ctype, r.text)
        assert r.json()["scores"] == want
    body["leads"][0]["email"] = "john.doe@example.com"
    r = client.post(
        "/score_leads",
        content=json.dumps(body),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 400
    assert r.json()["detail"][0]["loc"] == ["leads", 0, "email"]
    assert "john.doe" not in r.text


def test_asgi_over_the_limits_is_413(serving: Champions, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADML_SERVING__MAX_LEADS_PER_REQUEST", "2")
    monkeypatch.setenv("LEADML_SERVING__MAX_EVENTS_PER_LEAD", "3")
    for client in _client():
        too_many = client.post("/score_leads", json=_leads(serving, 3))
        assert too_many.status_code == 413
        locs = [d["loc"] for d in too_many.json()["detail"]]
        assert ["leads"] in locs and ["leads", 0, "events"] in locs
        assert "max_leads_per_request" in too_many.text


def test_asgi_body_over_max_request_bytes_is_413_before_parsing(
    serving: Champions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body larger than serving.max_request_bytes is refused from its Content-Length,
    or, sent chunked without one, once that many bytes have arrived; smaller ones pass."""
    small = json.dumps(_leads(serving, 1)).encode()
    limit = len(small) + 100
    monkeypatch.setenv("LEADML_SERVING__MAX_REQUEST_BYTES", str(limit))
    big = json.dumps({**_leads(serving, 1), "pad": "x" * 200}).encode()

    def chunked(data: bytes) -> Iterator[bytes]:
        for i in range(0, len(data), 1000):
            yield data[i : i + 1000]

    for client in _client():
        declared = client.post("/score_leads", content=big)
        streamed = client.post("/score_leads", content=chunked(big))
        fine = client.post("/score_leads", content=chunked(small))
        meta = client.get("/metadata").json()
    for r in (declared, streamed):
        assert r.status_code == 413, r.text
        problem = r.json()["detail"][0]
        assert (
            problem["loc"] == ["body"] and f"max_request_bytes ({limit:,} bytes)" in problem["msg"]
        )
    assert fine.status_code == 200, fine.text
    assert meta["limits"]["max_request_bytes"] == limit


def test_asgi_unknown_event_types_reject_or_ignore(
    serving: Champions, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = _leads(serving, 1)
    plain = copy.deepcopy(body)
    body["leads"][0]["events"].insert(0, {"ts": "2024-08-01T00:00:00Z", "type": "tiktok_like"})
    for client in _client():
        r = client.post("/score_leads", json=body)
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["leads", 0, "events", 0, "type"]
    monkeypatch.setenv("LEADML_SERVING__UNKNOWN_EVENT_TYPES", "ignore")
    for client in _client():
        ignored = client.post("/score_leads", json=body).json()["scores"][0]
        clean = client.post("/score_leads", json=plain).json()["scores"][0]
    assert ignored["ignored_events"] == 1 and clean["ignored_events"] == 0
    assert ignored["readiness"] == clean["readiness"]


def test_asgi_api_key_is_required_when_configured(
    serving: Champions, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEADML_API_KEY", "s3cret-key")
    body = _leads(serving, 1)
    for client in _client():
        assert client.post("/score_leads", json=body).status_code == 401
        assert (
            client.post("/score_leads", json=body, headers={"X-API-Key": "wrong"}).status_code
            == 401
        )
        assert client.get("/metadata").status_code == 401
        assert (
            client.post("/score_leads", json=body, headers={"X-API-Key": "s3cret-key"}).status_code
            == 200
        )
        bearer = client.post(
            "/score_leads", json=body, headers={"Authorization": "Bearer s3cret-key"}
        )
        assert bearer.status_code == 200
        # the 401 names the header the caller used
        wrong_bearer = client.post(
            "/score_leads", json=body, headers={"Authorization": "Bearer nope"}
        )
        assert wrong_bearer.json()["detail"][0]["loc"] == ["header", "authorization"]
        none = client.post("/score_leads", json=body).json()
        assert none["detail"][0]["loc"] == ["header", "x-api-key"]
        assert (
            client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200
        )


def test_asgi_logs_ids_and_timings_never_personal_values(
    client: TestClient, serving: Champions, caplog: pytest.LogCaptureFixture
) -> None:
    body = _leads(serving, 1)
    bad = _leads(serving, 1)
    bad["leads"][0]["email"] = PERSONAL
    # personal data as an extra attribute: its name and its value are never echoed
    named = _leads(serving, 1)
    named["leads"][0]["attributes"] = {"contact": PERSONAL, PERSONAL: [1]}
    unread = _leads(serving, 1)
    unread["leads"][0]["attributes"] = {"contact": PERSONAL}
    with caplog.at_level(logging.INFO):
        ok = client.post("/score_leads", json=body, headers={"X-Request-ID": "crm-42"})
        refused = client.post("/score_leads", json=bad)
        refused_name = client.post("/score_leads", json=named)
        refused_unread = client.post("/score_leads", json=unread)
    assert ok.status_code == 200 and ok.headers["x-request-id"] == "crm-42"
    assert refused.status_code == 400 and PERSONAL not in refused.text
    assert refused_name.status_code == 400 and PERSONAL not in refused_name.text
    assert refused_name.json()["detail"][0]["loc"] == ["leads", 0, "attributes"]
    assert refused_unread.status_code == 422 and PERSONAL not in refused_unread.text
    assert refused_unread.json()["detail"][0]["loc"] == ["leads", 0, "attributes"]
    lines = [r.getMessage() for r in caplog.records if r.name == "leadml.serving"]
    assert any("request_id=crm-42" in m and "total_ms=" in m and "status=200" in m for m in lines)
    everything = caplog.text + "".join(str(r.exc_info) for r in caplog.records)
    assert PERSONAL not in everything
    # a client's 400 is not logged as a server "Exception" (log alerts match that word)
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("bad request on /score_leads") for m in messages)
    assert not any(m.startswith("Exception on") for m in messages)


def test_asgi_scores_and_decisions_reach_prometheus(client: TestClient, serving: Champions) -> None:
    from prometheus_client import REGISTRY

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    version = serving.versions["lead_readiness"]
    before = value("leadml_readiness_score_count", model_version=version)
    handed = value("leadml_handoff_decisions_total", decision="handoff", model_version=version)
    low = value("leadml_readiness_score_bucket", model_version=version, le="0.01")
    client.post("/handoff", json={**as_mqls(_leads(serving)), "is_capacity": 100})
    assert value("leadml_readiness_score_count", model_version=version) == before + len(
        serving.parity["leads"]
    )
    assert (
        value("leadml_handoff_decisions_total", decision="handoff", model_version=version) > handed
    )
    # ops review: buckets resolve the small probabilities most leads have (log-spaced)
    assert value("leadml_readiness_score_bucket", model_version=version, le="0.01") >= low


def test_asgi_ambiguous_requests_are_422_with_the_field_path(
    client: TestClient, serving: Champions
) -> None:
    twice = _leads(serving, 2)
    twice["leads"].append(copy.deepcopy(twice["leads"][0]))
    r = client.post("/handoff", json={**twice, "is_capacity": 100})
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == [
        {
            "loc": ["leads", 2, "lead_id"],
            "msg": "the same lead as leads.0; send each lead once",
            "type": "duplicate_id",
        }
    ]
    deals = _deals(serving)
    deals["deals"].append(copy.deepcopy(deals["deals"][0]))
    r = client.post("/score_deals", json=deals)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["deals", len(deals["deals"]) - 1, "opportunity_id"]
    # two stage rows at one time that disagree: which one is current is ambiguous
    tie = _deals(serving)
    hist = tie["deals"][0]["stage_history"]
    hist.append({**hist[-1], "stage": "approval", "amount": hist[-1]["amount"] + 1})
    r = client.post("/score_deals", json=tie)
    assert r.status_code == 422
    problem = r.json()["detail"][0]
    assert problem["loc"] == ["deals", 0, "stage_history", len(hist) - 1, "ts"]
    assert problem["type"] == "conflicting_rows"
    # the same row sent twice is not ambiguous
    same = _deals(serving)
    same["deals"][0]["stage_history"].append(dict(same["deals"][0]["stage_history"][-1]))
    assert client.post("/score_deals", json=same).status_code == 200


@pytest.mark.parametrize(
    ("where", "value"),
    [
        ("as_of", "0001-01-01T00:00:00+05:00"),  # converting to UTC overflows
        ("as_of", "9999-12-31T23:59:59-05:00"),
        ("as_of", 1717286400),  # an epoch number is not an ISO timestamp
        ("created_at", 12345),
        ("amount", 1e18),
    ],
)
def test_asgi_implausible_values_are_400_not_500(
    client: TestClient, serving: Champions, where: str, value: Any
) -> None:
    body = _deals(serving)
    if where == "as_of":
        body["as_of"] = value
        loc = ["as_of"]
    elif where == "created_at":
        body["deals"][0]["created_at"] = value
        loc = ["deals", 0, "created_at"]
    else:
        body["deals"][0]["stage_history"][0]["amount"] = value
        loc = ["deals", 0, "stage_history", 0, "amount"]
    r = client.post("/score_deals", json=body, headers={"X-Request-ID": "crm-bad-1"})
    assert r.status_code == 400, r.text
    assert r.json()["detail"][0]["loc"][: len(loc)] == loc
    assert r.headers["x-request-id"] == "crm-bad-1"


def test_asgi_every_refused_request_has_an_id_a_log_line_and_a_count(
    serving: Champions, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from prometheus_client import REGISTRY

    def refused(status: str) -> float:
        labels = {"endpoint": "score_leads", "status": status}
        return REGISTRY.get_sample_value("leadml_rejected_requests_total", labels) or 0.0

    monkeypatch.setenv("LEADML_API_KEY", "s3cret-key")
    key = {"X-API-Key": "s3cret-key"}
    before_400, before_401 = refused("400"), refused("401")
    with caplog.at_level(logging.INFO):
        for client in _client():
            schema = client.post(
                "/score_leads", json={"leads": []}, headers={**key, "X-Request-ID": "crm-400"}
            )
            nokey = client.post(
                "/score_leads", json=_leads(serving, 1), headers={"X-Request-ID": "crm-401"}
            )
            meta = client.get("/metadata", headers={**key, "X-Request-ID": "crm-meta"})
            # a gateway's own Authorization header beside the client's right X-API-Key
            both = client.post(
                "/score_leads",
                json=_leads(serving, 1),
                headers={**key, "Authorization": "Bearer gateway-token"},
            )
    assert (schema.status_code, nokey.status_code, meta.status_code) == (400, 401, 200)
    assert both.status_code == 200
    assert schema.headers["x-request-id"] == "crm-400"
    assert nokey.headers["x-request-id"] == "crm-401"
    assert meta.headers["x-request-id"] == "crm-meta"
    lines = [r.getMessage() for r in caplog.records if r.name == "leadml.serving"]
    for rid, status in (("crm-400", 400), ("crm-401", 401), ("crm-meta", 200)):
        assert sum(f"request_id={rid} status={status}" in m for m in lines) == 1, lines
    assert refused("400") == before_400 + 1 and refused("401") == before_401 + 1


def _publish_nightly(workspace: Path, day: str, scale: float) -> None:
    """Publish a nightly forecast table as `leadml batch` writes it (two quarters,
    total / team / segment rows)."""
    from leadml.batch.outputs import OutputStore, ParquetOutputs

    rows = []
    for quarter, label, start, end in (
        ("current", "2024Q3", "2024-07-01", "2024-10-01"),
        ("next", "2024Q4", "2024-10-01", "2025-01-01"),
    ):
        for grouping, group, share in (
            ("total", "all", 1.0),
            ("team", "fs_east", 0.6),
            ("team", "fs_west", 0.4),
            ("segment", "smb", 0.3),
            ("segment", "enterprise", 0.7),
        ):
            k = scale * share
            rows.append(
                {
                    "kind": "snapshot",
                    "quarter": quarter,
                    "period": label,
                    "period_start": pd.Timestamp(start, tz="UTC"),
                    "period_end": pd.Timestamp(end, tz="UTC"),
                    "grouping": grouping,
                    "group": group,
                    "won": 100.0 * k,
                    "open_expected": 200.0 * k,
                    "new_expected": 10.0 * k,
                    "expected": 310.0 * k,
                    "p10": 250.0 * k,
                    "p50": 305.0 * k,
                    "p90": 370.0 * k,
                    "target": 400.0 * k if grouping != "segment" else np.nan,
                    "p_reach_target": 0.05 if grouping != "segment" else np.nan,
                    "open_pipeline": 900.0 * k,
                    "open_deals": round(20 * share),
                    "probability_source": "empirical",
                }
            )
    frame = pd.DataFrame(rows)
    fan = frame.iloc[:1].assign(kind="fan")  # the fan chart's rows are not answers
    store = OutputStore(ParquetOutputs(workspace / "outputs"), None)
    store.publish(pd.Timestamp(day).date(), {"forecast": pd.concat([frame, fan])})


def test_asgi_forecast_from_the_latest_nightly_run(
    serving: Champions, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LEADML_WORKSPACE", str(tmp_path))
    for client in _client():
        none = client.post("/forecast", json={"as_of": "2024-08-07T09:00:00Z"})
        assert none.status_code == 404 and none.json()["detail"][0]["loc"] == ["deals"]
        _publish_nightly(tmp_path, "2024-08-05", 1.0)
        _publish_nightly(tmp_path, "2024-08-12", 2.0)
        r = client.post("/forecast", json={"as_of": "2024-08-07T09:00:00Z"})
        assert r.status_code == 200, r.text
        fc = r.json()
        nxt = client.post(
            "/forecast",
            json={
                "as_of": "2024-08-13T00:00:00Z",
                "period_start": "2024-10-01T00:00:00Z",
                "period_end": "2025-01-01T00:00:00Z",
            },
        ).json()
        wrong = client.post(
            "/forecast",
            json={"period_start": "2025-01-01T00:00:00Z", "period_end": "2025-04-01T00:00:00Z"},
        )
        with_won = client.post("/forecast", json={"won_amount": 5.0})
        # the newest run's current quarter ended before as_of: not an answer for then
        ended = client.post("/forecast", json={"as_of": "2024-10-02T00:00:00Z"})
    assert ended.status_code == 422, ended.text
    problem = ended.json()["detail"][0]
    assert problem["loc"] == ["as_of"] and "2024Q3 ended 2024-10-01" in problem["msg"]
    # the run of 2024-08-05 (the newest at or before as_of), its current quarter
    assert fc["source"] == "nightly" and fc["model"] is None
    assert fc["as_of"].startswith("2024-08-05") and fc["period_start"].startswith("2024-07-01")
    assert (fc["won_amount"], fc["open_expected"], fc["new_expected"], fc["mean"]) == (
        100.0,
        200.0,
        10.0,
        310.0,
    )
    assert (fc["p10"], fc["p50"], fc["p90"], fc["target"]) == (250.0, 305.0, 370.0, 400.0)
    assert fc["probability_source"] == "empirical" and fc["by_stage"] == []
    assert [t["group"] for t in fc["by_team"]] == ["fs_east", "fs_west"]
    assert sum(t["expected"] for t in fc["by_team"]) == pytest.approx(fc["open_expected"])
    assert sum(t["deals"] for t in fc["by_segment"]) == 20
    assert fc["by_segment"][0]["won"] == pytest.approx(70.0)  # enterprise, sorted first
    # per group the whole period too, as the CLI and the report show it (leader review)
    east = fc["by_team"][0]
    assert (east["total_expected"], east["p10"], east["p90"], east["target"]) == pytest.approx(
        (186.0, 150.0, 222.0, 240.0)
    )
    assert east["p_reach_target"] == 0.05 and fc["by_segment"][0]["target"] is None
    # the next quarter of the 2024-08-12 run
    assert nxt["as_of"].startswith("2024-08-12") and nxt["mean"] == pytest.approx(620.0)
    assert nxt["period_end"].startswith("2025-01-01")
    assert wrong.status_code == 422 and "2024Q3" in wrong.text and "2024Q4" in wrong.text
    assert with_won.status_code == 422
    assert with_won.json()["detail"][0]["loc"] == ["won_amount"]


# ---------------------------------------------------------------- parity with batch


def _batch_scores(serving: Champions, entity: str, ids: list[str]) -> tuple[Any, pd.DataFrame]:
    """The batch path: offline (DuckDB) features over the full tables + the champion bundle."""
    from leadml.config import load_settings
    from leadml.contracts import connect
    from leadml.features.offline import compute_features
    from leadml.serving.scorer import catalog_of, load_bundle
    from leadml.serving.store import latest_stored

    settings = load_settings()
    name = "lead_readiness" if entity == "lead" else "deal_close"
    bundle = load_bundle(latest_stored(name).path_of("mlflow_model"))
    con, _ = connect(serving.data, settings.vocabulary)
    try:
        key = "lead_id" if entity == "lead" else "opportunity_id"
        spine = pd.DataFrame({key: ids, "as_of": pd.Timestamp(serving.parity["as_of"])})
        feats = compute_features(con, catalog_of(bundle, settings), entity, spine)
    finally:
        con.close()
    return bundle, feats


def test_api_scores_equal_batch_scores(client: TestClient, serving: Champions) -> None:
    leads = serving.parity["leads"]
    api = client.post("/score_leads", json=_leads(serving)).json()["scores"]
    bundle, feats = _batch_scores(serving, "lead", [lead["lead_id"] for lead in leads])
    batch = bundle.score(feats[bundle.features])
    np.testing.assert_allclose(
        [s["readiness"] for s in api], batch["probability"], rtol=0, atol=1e-12
    )
    assert [s["grade"] for s in api] == list(batch["grade"])
    explained = bundle.explain(feats[bundle.features], k=3)
    for s, e in zip(api, explained, strict=True):
        expected = sorted([*e["positive"], *e["negative"]], key=lambda r: -abs(r["contribution"]))
        assert [(r["feature"], r["text"]) for r in s["reasons"]] == [
            (r["feature"], r["text"]) for r in expected
        ]

    deals = serving.parity["deals"]
    api_d = client.post("/score_deals", json=_deals(serving)).json()["scores"]
    dbundle, dfeats = _batch_scores(serving, "opportunity", [d["opportunity_id"] for d in deals])
    np.testing.assert_allclose(
        [s["p_won"] for s in api_d],
        dbundle.predict_proba(dfeats[dbundle.features]),
        rtol=0,
        atol=1e-12,
    )


def test_a_lead_sent_bare_is_a_new_lead_and_missing_values_are_no_reasons(
    client: TestClient, serving: Champions
) -> None:
    """A CRM that sends no status history: the lead is in the first status since its
    creation (as the warehouse records every lead), not "status unknown", which the
    model never saw and scored as hot; and a missing value is never shown as a reason."""
    as_of = serving.parity["as_of"]
    created = (pd.Timestamp(as_of) - pd.Timedelta(days=60)).isoformat()
    bare = {"lead_id": "L-bare", "created_at": created}
    explicit = dict(bare, status_history=[{"ts": created, "status": "lead"}])
    scores = [
        client.post("/score_leads", json={"as_of": as_of, "leads": [lead]}).json()["scores"][0]
        for lead in (bare, explicit)
    ]
    assert scores[0]["readiness"] == scores[1]["readiness"]
    assert scores[0]["reasons"] == scores[1]["reasons"]
    texts = [r["text"] for s in scores for r in s["reasons"]]
    assert texts and not [t for t in texts if "unknown" in t], texts


def test_values_the_model_never_saw_are_reported_and_metadata_lists_the_known_ones(
    client: TestClient, serving: Champions
) -> None:
    """A misspelt category (Seminar for seminar, Japan for JP) is read as missing by the
    model; the answer names the feature, and /metadata lists the values it knows."""
    known = client.get("/metadata").json()["models"]["lead_readiness"]["categories"]
    request = as_mqls(_leads(serving, 1))  # an open lead (the sample's first is disqualified)
    lead = request["leads"][0]
    clean = client.post("/score_leads", json=request).json()["scores"][0]
    assert clean["unseen_values"] == []
    lead["source"] = "Definitely Not A Source"
    assert lead["source"] not in known["lead_source"] and known["lead_source"]
    odd = client.post("/score_leads", json=request).json()["scores"][0]
    assert odd["unseen_values"] == ["lead_source"]
    deals = _deals(serving)
    deals["deals"] = deals["deals"][:1]
    deals["deals"][0]["segment"] = "smb"
    deal = client.post("/score_deals", json=deals).json()["scores"][0]
    assert deal["unseen_values"] == []
    assert (
        "smb"
        in client.get("/metadata").json()["models"]["deal_close"]["categories"]["deal_segment"]
    )


def test_openapi_document_names_the_api_key_when_one_is_set(
    serving: Champions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """API review: with a key configured the docs page had no way to send it (no
    securitySchemes), and info.version read "None"."""
    from leadml import __version__

    for client in _client():
        open_doc = client.get("/docs.json").json()
    monkeypatch.setenv("LEADML_API_KEY", "s3cret-key")
    for client in _client():
        keyed = client.get("/docs.json")
    assert keyed.status_code == 200
    doc = keyed.json()
    assert open_doc["info"]["version"] == doc["info"]["version"] == __version__
    assert "securitySchemes" not in open_doc.get("components", {})
    schemes = doc["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["Bearer"]["scheme"] == "bearer"
    assert doc["paths"]["/score_leads"]["post"]["security"] == [{"ApiKey": []}, {"Bearer": []}]
    assert "security" not in doc["paths"]["/healthz"]["get"]


# ---------------------------------------------------------------- CRM-webhook review


@pytest.mark.parametrize("digits", ["20251105", "1762336800", "1762336800000"])
@pytest.mark.parametrize(
    ("endpoint", "path"),
    [
        ("/score_leads", ["leads", 0, "events", 0, "ts"]),
        ("/score_leads", ["leads", 0, "status_history", 0, "ts"]),
        ("/score_leads", ["as_of"]),
        ("/score_deals", ["deals", 0, "stage_history", 0, "expected_close_date"]),
        ("/score_deals", ["deals", 0, "owner_deals", 0, "closed_at"]),
        ("/score_deals", ["period_end"]),
    ],
)
def test_asgi_a_timestamp_of_digits_is_400_at_its_field_path(
    client: TestClient, serving: Champions, endpoint: str, path: list[Any], digits: str
) -> None:
    """{"ts": "20251105"} was read as epoch seconds (1970-08-24: "last engaged 20,168 days
    ago"); digits are refused like a number, naming the field and the ISO form."""
    from leadml.serving import schemas

    source = (
        schemas.EXAMPLE_SCORE_LEADS if endpoint == "/score_leads" else schemas.EXAMPLE_SCORE_DEALS
    )
    body = copy.deepcopy(source)
    node: Any = body
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = digits
    r = client.post(endpoint, json=body)
    assert r.status_code == 400, r.text
    (problem,) = r.json()["detail"]
    assert problem["loc"] == path
    assert "ISO 8601" in problem["msg"] and "2025-11-05T00:00:00Z" in problem["msg"]


@pytest.mark.parametrize("status", ["disqualified", "sql", "recycled", "lead"])
def test_asgi_a_status_the_model_never_saw_is_flagged_and_never_a_reason(
    client: TestClient, serving: Champions, status: str
) -> None:
    """The readiness model is trained on open leads; /metadata lists the statuses it
    saw. A status row it never saw (a valid vocabulary word) was scored as if it meant
    something (top reason "Lead status is disqualified", unseen_values [])."""
    known = client.get("/metadata").json()["models"]["lead_readiness"]["categories"]
    assert status not in known["lead_status"], known["lead_status"]
    request = as_mqls(_leads(serving, 1))
    as_of = pd.Timestamp(request["as_of"])
    mql = client.post("/score_leads", json=request).json()["scores"][0]
    lead = request["leads"][0]
    lead["status_history"].append(
        {"ts": (as_of - pd.Timedelta(days=1)).isoformat(), "status": status}
    )
    r = client.post("/score_leads", json=request)
    assert r.status_code == 200, r.text
    moved = r.json()["scores"][0]
    assert mql["unseen_values"] == [] and mql["unseen_status"] is None
    assert "lead_status" in moved["unseen_values"] and moved["unseen_status"] == status
    assert all(r["feature"] not in moved["unseen_values"] for r in moved["reasons"])
    # /handoff: not_eligible unless inside sales calls that status (as the nightly call
    # list); an eligible one (recycled) is never handed off on an extrapolated score
    # (audit 6: it took a slot): nurture, saying why
    h = client.post("/handoff", json={**request, "is_capacity": 100}).json()["decisions"][0]
    assert h["unseen_status"] == status
    if status in ("mql", "recycled"):
        assert h["decision"] == "nurture"
        assert "not in the readiness model's training data" in h["reasons"][0]
    else:
        assert h["decision"] == "not_eligible"


def test_an_unseen_category_is_never_a_reason_however_large_its_contribution(
    serving: Champions,
) -> None:
    """TreeSHAP gives the unseen (= missing to the model) value a contribution; the
    reasons skip it as they skip a missing value, and keep a known value."""
    from leadml.serving.scorer import FastReadiness, known_categories, load_bundle
    from leadml.serving.store import latest_stored

    bundle = load_bundle(latest_stored("lead_readiness").path_of("mlflow_model"))
    fast = FastReadiness(bundle)
    feats = list(bundle.features)
    status = next(f for f in known_categories(bundle) if f == "lead_status")
    numeric = next(f for f in feats if f not in known_categories(bundle))
    c = np.zeros(len(feats))
    c[feats.index(status)], c[feats.index(numeric)] = 2.53, 0.4
    row: dict[str, Any] = {numeric: 3.0}
    seen = sorted(known_categories(bundle)[status])[0]
    cited = [r.feature for r in fast._reasons({**row, status: seen}, c)]
    assert cited == [status, numeric]
    assert [r.feature for r in fast._reasons({**row, status: "disqualified"}, c)] == [numeric]


def test_asgi_unseen_deal_values_are_read_as_missing_without_changing_p_won(
    client: TestClient, serving: Champions
) -> None:
    known = client.get("/metadata").json()["models"]["deal_close"]["categories"]
    country = next(c for c in ("FR", "GB", "KR", "SG", "BR") if c not in known["account_country"])
    body = _deals(serving)
    body["deals"] = body["deals"][:1]
    deal = body["deals"][0]
    deal["account"] = dict(deal.get("account") or {"account_id": deal["account_id"]})
    deal["account"]["country"] = country
    blank = copy.deepcopy(body)
    blank["deals"][0]["account"]["country"] = None
    odd, missing = (client.post("/score_deals", json=b).json()["scores"][0] for b in (body, blank))
    assert odd["unseen_values"] == ["account_country"] and missing["unseen_values"] == []
    assert odd["p_won"] == missing["p_won"] and odd["reasons"] == missing["reasons"]
    assert all(r["feature"] != "account_country" for r in odd["reasons"])


def test_deal_probabilities_from_one_hazard_prediction_equal_the_bundles(
    serving: Champions,
) -> None:
    """Scoring a deal predicts the hazards once for every horizon it reports."""
    from leadml.config import load_settings
    from leadml.serving.schemas import DealIn
    from leadml.serving.scorer import DealTask, Scorer, won_by_horizons
    from leadml.serving.store import latest_stored

    scorer = Scorer.from_store(
        latest_stored("lead_readiness"), latest_stored("deal_close"), load_settings()
    )
    as_of = pd.Timestamp(serving.parity["as_of"]).to_pydatetime()
    tasks = [
        DealTask(as_of=as_of, period_end=pd.Timestamp("2024-12-31", tz="UTC"), deal=DealIn(**d))
        for d in serving.parity["deals"]
    ]
    X = scorer.deal_features(tasks)
    bundle = scorer.deal.bundle
    days = np.linspace(10.0, 200.0, len(tasks))
    p, by_end, before = won_by_horizons(bundle, X, days, days / 2)
    np.testing.assert_array_equal(p, bundle.predict_proba(X))
    np.testing.assert_array_equal(by_end, bundle.predict_proba(X, horizon_days=days))
    assert before is not None
    np.testing.assert_array_equal(before, bundle.predict_proba(X, horizon_days=days / 2))


def test_asgi_score_leads_is_not_held_up_by_a_deal_being_scored(
    serving: Champions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/score_deals costs ~0.1 s of CPU per call; on the event loop it held every
    /score_leads arriving meanwhile (p50 7 -> 205 ms). Deal scoring runs in a worker
    thread: a /score_leads call answers while a (deliberately slow) deal is scored."""
    import threading
    import time

    from leadml.serving.scorer import Scorer

    started, finished = threading.Event(), threading.Event()
    original = Scorer.score_deals

    def slow(self: Scorer, tasks: Any) -> Any:
        started.set()
        time.sleep(1.5)  # blocks whichever thread runs it
        try:
            return original(self, tasks)
        finally:
            finished.set()

    monkeypatch.setattr(Scorer, "score_deals", slow)
    for client in _client():
        deal_answer: list[Any] = []

        def post_deal(c: TestClient, out: list[Any]) -> None:
            out.append(c.post("/score_deals", json=_deals(serving)))

        worker = threading.Thread(target=post_deal, args=(client, deal_answer))
        worker.start()
        assert started.wait(10)
        t0 = time.perf_counter()
        leads = client.post("/score_leads", json=_leads(serving, 1))
        elapsed = time.perf_counter() - t0
        deal_busy = not finished.is_set()
        worker.join(30)
    assert leads.status_code == 200, leads.text
    assert deal_busy and elapsed < 1.0, elapsed
    assert deal_answer and deal_answer[0].status_code == 200, deal_answer
    assert deal_answer[0].headers["x-request-id"]


def test_asgi_handoff_of_tied_leads_does_not_depend_on_the_request_order(
    client: TestClient, serving: Champions
) -> None:
    """Leads of equal readiness (6 at exactly 0.395833 for 4 places) went to inside
    sales by their order in the request; ties now go by lead_id, as the nightly call list."""
    meta = client.get("/metadata").json()
    per_lead = meta["models"]["lead_readiness"]["policy"]["slots_per_lead"]
    request = as_mqls(_leads(serving, 1))
    twin = request["leads"][0]
    ids = ["L-t4", "L-t1", "L-t6", "L-t3", "L-t5", "L-t2"]
    request["leads"] = [dict(copy.deepcopy(twin), lead_id=i) for i in ids]
    forward = client.post("/handoff", json={**request, "is_capacity": int(4 * per_lead)}).json()
    request["leads"].reverse()
    backward = client.post("/handoff", json={**request, "is_capacity": int(4 * per_lead)}).json()
    assert len({d["readiness"] for d in forward["decisions"]}) == 1  # all tied
    for out in (forward, backward):
        assert [d["lead_id"] for d in out["decisions"]] == sorted(ids)
        handed = [d["lead_id"] for d in out["decisions"] if d["decision"] == "handoff"]
        assert handed == ["L-t1", "L-t2", "L-t3", "L-t4"]
    assert forward["decisions"] == backward["decisions"]


def test_asgi_default_as_of_tolerates_a_sender_clock_slightly_ahead(
    client: TestClient, serving: Champions
) -> None:
    """No as_of and the webhook's own event stamped 0.5 s in the future (the sender's
    clock runs ahead) was refused (422 "is not before as_of"). Within the clock skew the
    default as_of moves just after it; further ahead, or with an explicit as_of, the
    strict rule holds."""
    from datetime import UTC, datetime, timedelta

    from leadml.serving.checks import CLOCK_SKEW

    def body(ahead: timedelta, as_of: datetime | None = None) -> dict[str, Any]:
        lead = copy.deepcopy(as_mqls(_leads(serving, 1))["leads"][0])
        ts = datetime.now(UTC) + ahead
        lead["events"].append({"ts": ts.isoformat(), "type": "form_submit"})
        out: dict[str, Any] = {"leads": [lead]}
        if as_of is not None:
            out["as_of"] = as_of.isoformat()
        return out

    sent = body(timedelta(seconds=0.5))
    ok = client.post("/score_leads", json=sent)
    assert ok.status_code == 200, ok.text
    event_ts = pd.Timestamp(sent["leads"][0]["events"][-1]["ts"])
    assert pd.Timestamp(ok.json()["as_of"]) > event_ts
    deal = _deals(serving)
    deal.pop("as_of")
    deal["deals"] = deal["deals"][:1]
    soon = (datetime.now(UTC) + timedelta(seconds=0.5)).isoformat()
    deal["deals"][0]["activities"].append({"ts": soon, "type": "call"})
    deal["period_end"] = (datetime.now(UTC) + timedelta(days=90)).isoformat()
    assert client.post("/score_deals", json=deal).status_code == 200

    far = body(CLOCK_SKEW + timedelta(minutes=1))
    refused = client.post("/score_leads", json=far)
    assert refused.status_code == 422, refused.text
    (problem,) = refused.json()["detail"]
    n = len(far["leads"][0]["events"]) - 1
    assert problem["loc"] == ["leads", 0, "events", n, "ts"]
    assert "as_of was not sent" in problem["msg"] and "clock" in problem["msg"]
    strict = client.post("/score_leads", json=body(timedelta(seconds=0.5), datetime.now(UTC)))
    assert strict.status_code == 422
    assert "as_of was not sent" not in strict.text


def test_the_clock_skew_comes_from_the_serving_config(
    serving: Champions, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import UTC, datetime, timedelta

    from leadml.serving.schemas import ScoreLeadsRequest
    from leadml.serving.service import LeadmlAPI

    lead = copy.deepcopy(as_mqls(_leads(serving, 1))["leads"][0])
    soon = datetime.now(UTC) + timedelta(seconds=30)
    lead["events"].append({"ts": soon.isoformat(), "type": "form_submit"})
    request = ScoreLeadsRequest.model_validate({"leads": [lead]})
    monkeypatch.setenv("LEADML_SERVING__CLOCK_SKEW_SECONDS", "0")
    strict = asyncio.run(LeadmlAPI().score_leads(request))
    assert isinstance(strict, JSONResponse) and strict.status_code == 422
    monkeypatch.setenv("LEADML_SERVING__CLOCK_SKEW_SECONDS", "60")
    assert not isinstance(asyncio.run(LeadmlAPI().score_leads(request)), JSONResponse)


def test_openapi_document_matches_the_answers(client: TestClient) -> None:
    """API review: fields answered null were declared non-nullable, an internal field
    was declared, the hygiene rule's example named a rule the API never sends, and the
    error answers (a list of {loc, msg, type}) were declared as one string, 400 only."""
    doc = client.get("/docs.json").json()
    schemas = doc["components"]["schemas"]
    forecast = doc["paths"]["/forecast"]["post"]["responses"]["200"]["content"]
    props = forecast["application/json"]["schema"]["properties"]
    for name in ("target", "p_reach_target", "model"):
        assert props[name].get("nullable") is True, (name, props[name])
    assert "$ref" not in props["model"] and props["model"]["allOf"]
    assert "p_won_in_period" not in schemas["DealScore"]["properties"]
    rule = schemas["HygieneFlag"]["properties"]["rule"]
    assert rule["example"] in rule["enum"] and "past_close_date" in rule["enum"]
    assert "past_expected_close" not in json.dumps(rule)
    for path in ("/score_leads", "/handoff", "/score_deals", "/forecast"):
        responses = doc["paths"][path]["post"]["responses"]
        for status in ("400", "413", "422", "503"):
            content = responses[status]["content"]["application/json"]["schema"]
            assert content == {"$ref": "#/components/schemas/Error"}, (path, status)
    detail = schemas["Error"]["properties"]["detail"]
    assert detail["type"] == "array"
    assert set(schemas["Problem"]["required"]) == {"loc", "msg", "type"}
    assert "404" in doc["paths"]["/forecast"]["post"]["responses"]


# ---------------------------------------------------------------- audit 6


def _tiny_leads(n: int) -> list[dict[str, Any]]:
    return [{"lead_id": f"L-{i}", "created_at": "2024-08-01T00:00:00Z"} for i in range(n)]


def test_asgi_an_over_count_body_is_refused_before_the_schema_validation(
    client: TestClient, serving: Champions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A million tiny leads (42 MB, under max_request_bytes) were all validated by
    pydantic (~20 s of the only worker) before the count check answered 413. A large body
    is now counted on its parsed JSON first: the 413 comes before the schema is validated
    (a schema error in the same body is never reached), with the count check's message."""
    from leadml.serving import checks, service

    prechecked: list[str] = []
    original = checks.check_sizes_json

    def spy(endpoint: str, body: Any, cfg: Any) -> None:
        prechecked.append(endpoint)
        original(endpoint, body, cfg)

    monkeypatch.setattr(checks, "check_sizes_json", spy)
    leads = _tiny_leads(3000)
    leads[-1]["email"] = PERSONAL  # an unknown field: the schema's 400, were it validated
    body = json.dumps({"as_of": serving.parity["as_of"], "leads": leads}).encode()
    assert len(body) > service.PRECHECK_BYTES

    def chunked(data: bytes) -> Iterator[bytes]:
        for i in range(0, len(data), 50_000):
            yield data[i : i + 50_000]

    for sent in (body, chunked(body)):
        r = client.post("/score_leads", content=sent)
        assert r.status_code == 413, r.text[:500]
        assert r.json()["detail"] == [
            {
                "loc": ["leads"],
                "msg": "3000 leads; at most 100 are accepted (serving.max_leads_per_request)",
                "type": "too_many",
            }
        ]
        assert r.headers["x-request-id"] and PERSONAL not in r.text
    assert prechecked == ["score_leads", "score_leads"]
    deals = _deals(serving)
    deals["deals"] = [dict(deals["deals"][0], opportunity_id=f"O-{i}") for i in range(501)]
    r = client.post("/score_deals", json=deals)
    assert r.status_code == 413 and r.json()["detail"][0]["loc"] == ["deals"], r.text[:300]
    # a large body within the limits is still scored (parsed twice, answered once)
    lead = copy.deepcopy(as_mqls(_leads(serving, 1))["leads"][0])
    lead["events"] = [{"ts": "2024-08-01T10:00:00Z", "type": "web_visit"}] * 1900
    large = {"as_of": serving.parity["as_of"], "leads": [lead]}
    assert len(json.dumps(large)) > service.PRECHECK_BYTES
    ok = client.post("/score_leads", json=large)
    assert ok.status_code == 200, ok.text[:300]


def test_asgi_an_empty_body_is_named_as_such(client: TestClient) -> None:
    """An empty body was answered "leads: Field required". /forecast, whose fields are all
    optional, still reads it as {} (the latest nightly forecast: none published here)."""
    nightly = client.post("/forecast", content=b"")
    assert nightly.status_code == 404 and "nightly" in nightly.text, nightly.text
    doc = client.get("/docs.json").json()
    for path in ("/score_leads", "/handoff", "/score_deals"):
        assert doc["paths"][path]["post"]["requestBody"]["required"] is True
        r = client.post(path, content=b"", headers={"X-Request-ID": "crm-empty"})
        assert r.status_code == 400, (path, r.text)
        (problem,) = r.json()["detail"]
        assert problem["loc"] == ["body"] and problem["type"] == "empty_body"
        assert problem["msg"].startswith("empty request body")
        assert r.headers["x-request-id"] == "crm-empty"


def test_asgi_unknown_paths_and_methods_answer_the_error_shape_with_an_id(
    client: TestClient,
) -> None:
    """404 / 405 were plain text ("Not Found"), unlike every other error."""
    for method, path, status, loc in (
        ("GET", "/nope", 404, ["path"]),
        ("POST", "/score_lead", 404, ["path"]),
        ("GET", "/score_leads", 405, ["method"]),
        ("PUT", "/metadata", 405, ["method"]),
    ):
        r = client.request(method, path, headers={"X-Request-ID": "crm-route"})
        assert r.status_code == status, (method, path, r.text)
        assert r.headers["content-type"] == "application/json"
        assert r.headers["x-request-id"] == "crm-route"
        body = r.json()
        assert set(body) == {"error", "detail"} and body["detail"][0]["loc"] == loc
        assert "/score_leads" in body["detail"][0]["msg"]
        if status == 405:
            assert r.headers["allow"]


def _undescribed(node: Any, where: str = "") -> list[str]:
    """Every property (of every object schema, however deep) without a description."""
    out: list[str] = []
    if isinstance(node, dict):
        props = node.get("properties")
        if isinstance(props, dict):
            out += [
                f"{where}.{name}"
                for name, spec in props.items()
                if not (isinstance(spec, dict) and spec.get("description"))
            ]
        for key, value in node.items():
            out += _undescribed(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _undescribed(value, f"{where}[{i}]")
    return out


def _refs_with_siblings(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        here = [node] if "$ref" in node and len(node) > 1 else []
        return here + [x for v in node.values() for x in _refs_with_siblings(v)]
    if isinstance(node, list):
        return [x for v in node for x in _refs_with_siblings(v)]
    return []


def test_openapi_document_describes_every_field_and_the_api(client: TestClient) -> None:
    """49 properties had no description (AccountIn.account_id, DealIn.lead_id, the
    responses' as_of, /metadata's limits and batching, ...), and the page's header was
    BentoML's boilerplate ("BentoML Team")."""
    doc = client.get("/docs.json").json()
    missing = _undescribed(doc.get("components")) + _undescribed(doc.get("paths"))
    assert not missing, missing
    # OpenAPI 3.0 ignores keys beside a $ref: descriptions of model fields sit beside allOf
    assert not _refs_with_siblings(doc), _refs_with_siblings(doc)[:3]
    info = doc["info"]
    assert info["title"] == "leadml scoring API" and "contact" not in info
    text = info["description"]
    assert "BentoML" not in text
    for topic in ("as_of", "1900-2199", "413", "422", "X-Request-ID", "X-API-Key", "limits"):
        assert topic in text, topic
    meta = doc["components"]["schemas"]
    for name in ("ServiceLimits", "ServiceBatching"):
        assert meta[name]["properties"]
    limits = client.get("/metadata").json()["limits"]
    assert set(limits) == set(meta["ServiceLimits"]["properties"])
    assert "TaskStatusResponse" not in meta  # BentoML's, for endpoints the API does not have


def test_asgi_a_deal_history_before_its_creation_is_422(
    client: TestClient, serving: Champions
) -> None:
    body = _deals(serving)
    deal = body["deals"][0]
    first = min(h["ts"] for h in deal["stage_history"])
    deal["created_at"] = (pd.Timestamp(first) + pd.Timedelta(days=3)).isoformat()
    r = client.post("/score_deals", json=body)
    assert r.status_code == 422, r.text
    problems = r.json()["detail"]
    assert {p["type"] for p in problems} == {"before_created"}
    assert all(p["loc"][:3] == ["deals", 0, "stage_history"] for p in problems)
