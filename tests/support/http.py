"""A tiny HTTP client for the live service, with the caller's key built in."""

from __future__ import annotations

import time

import requests

#: Seconds after which a test's next request opens a new connection rather than reuse an
#: idle one the server may be closing (`metering serve`: gunicorn's keep-alive of 2 s).
IDLE_REUSE_SECONDS = 1.0


class Api:
    """Calls the live service over HTTP as one caller (an org key, an admin, or nobody)."""

    def __init__(self, base_url: str, key: str | None = None):
        self.base_url = base_url
        self.key = key
        self.session = requests.Session()
        self.last_answer = 0.0  # monotonic, when the last request ended

    def as_key(self, key: str | None) -> Api:
        return Api(self.base_url, key)

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if self.key is not None and "Authorization" not in headers:
            headers["Authorization"] = f"Bearer {self.key}"
        if time.monotonic() - self.last_answer > IDLE_REUSE_SECONDS:
            # gunicorn closes a kept-alive connection after 2 s idle: a request sent on it
            # just then meets a reset (CI of session 16, after a test's sleep of 2 s)
            self.session.close()
        try:
            return self.session.request(
                method, self.base_url + path, headers=headers, timeout=60, **kwargs
            )
        finally:
            self.last_answer = time.monotonic()

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path, **kwargs):
        return self.request("POST", path, **kwargs)

    def patch(self, path, **kwargs):
        return self.request("PATCH", path, **kwargs)

    def delete(self, path, **kwargs):
        return self.request("DELETE", path, **kwargs)

    def post_retried(self, path, **kwargs) -> requests.Response:
        """POST as a client does: again after a 503 ("retry later", nothing committed).
        With `metering serve`'s background loop running, the legacy emulator now and then
        refuses a commit while the loop commits in the same org's entity group (a sent
        message's attempt), past NDB's retries; tests of the loop are not about that."""
        for _attempt in range(5):
            answer = self.post(path, **kwargs)
            if answer.status_code != 503:
                return answer
            time.sleep(0.5)
        return answer

    # -- conveniences the tests share ----------------------------------------

    def create_meter(self, **fields) -> dict:
        body = {"name": "Input tokens", "eventName": "input_tokens", **fields}
        answer = self.post("/v1/billing/meters", json=body)
        assert answer.status_code == 201, answer.text
        return answer.json()

    def record(self, *events, expect: int = 201) -> dict:
        answer = self.post("/v1/billing/meter-events", json={"events": list(events)})
        assert answer.status_code == expect, answer.text
        return answer.json()

    def summary(self, **params) -> dict:
        answer = self.get("/v1/billing/meter-events/summary", params=params)
        assert answer.status_code == 200, answer.text
        return answer.json()


def error_of(response: requests.Response) -> dict:
    """The `error` object of an envelope, after checking the envelope's shape."""
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["type"] == "api-error"
    assert isinstance(error["message"], str) and error["message"]
    return error
