"""The API methods that are one operation of the caller's arguments, written once for
both clients.

Most of the API is one `operations` generator called with what the caller passed (some
build a body of it first): `MeteringClient` drives it to its value, `AsyncMeteringClient`
awaits the same. Written out, each such method stood twice, as a function and as a
coroutine function with the same signature, docstring and body. Here each is one `Call`
in `ApiCalls`, the base class both clients share: of an `operations` function as it is
(with the method's docstring), or of a function below that takes the retry policy where
the method takes `self` and has the method's signature and docstring.

A client class gets from each `Call` a real method of its own kind when it is defined
(`ApiCalls.__init_subclass__`): a function for the sync client, a coroutine function for
the async one (the kind its `_drive` is), with the operation's parameters and the value
it returns as its signature. So help(), `inspect` and IDEs show the method as if written
out, and mypy types it through `Call.__get__`: `T` on a MeteringClient, an awaitable `T`
on an AsyncMeteringClient. A method that pages, streams or caches is written out in
each client.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, Unpack, overload

from metering_client import operations as ops
from metering_client.operations import Op
from metering_client.retry import RetryPolicy
from metering_client.types import (
    Alert,
    AlertScope,
    Amendment,
    ApiKey,
    CancelOutcome,
    CancelPreview,
    Correction,
    Event,
    EventOutcome,
    Meter,
    PortalToken,
    Summary,
    UsageLimit,
    WebhookEndpoint,
)

if TYPE_CHECKING:  # only for the types: the clients import this module
    from metering_client.aio import AsyncMeteringClient
    from metering_client.client import MeteringClient

P = ParamSpec("P")
Q = ParamSpec("Q")
T = TypeVar("T")
V = TypeVar("V")


class Call(Generic[P, T]):
    """A client method that drives `operation(client.retry, *arguments)`."""

    def __init__(
        self, operation: Callable[Concatenate[RetryPolicy, P], Op[T]], doc: str | None = None
    ) -> None:
        self.operation, self.name = operation, operation.__name__
        #: the method's docstring; on the Call too, so that help() finds no other one
        self.doc = self.__doc__ = doc

    @staticmethod
    def of(function: Callable[Concatenate[RetryPolicy, Q], Op[V]]) -> Call[Q, V]:
        """A call of `function`, written here for the method, whose docstring it has."""
        return Call(function, function.__doc__)

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, client: None, owner: type) -> Call[P, T]: ...

    @overload
    def __get__(self, client: MeteringClient, owner: type) -> Callable[P, T]: ...

    @overload
    def __get__(
        self, client: AsyncMeteringClient, owner: type
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...

    def __get__(self, client: object, owner: type) -> Any:
        # Only a class that is no client reads the Call itself: each client has its own
        # method in its place (ApiCalls.__init_subclass__).
        return self

    def method_for(self, owner: type) -> Callable[..., Any]:
        """This call as a method of `owner`: a coroutine function if `owner._drive` is one."""
        awaits = inspect.iscoroutinefunction(inspect.getattr_static(owner, "_drive"))
        method = (_awaited if awaits else _driven)(self.operation)
        signature = self.signature()
        method.__name__, method.__doc__ = self.name, self.doc
        method.__qualname__ = f"{owner.__qualname__}.{self.name}"
        method.__module__ = owner.__module__
        method.__signature__ = signature  # type: ignore[attr-defined]  # what inspect shows
        method.__annotations__ = {
            **{p.name: p.annotation for p in list(signature.parameters.values())[1:]},
            "return": signature.return_annotation,
        }
        return method

    def signature(self) -> inspect.Signature:
        """The operation's signature as a method's: `self` for the policy, and the value
        the operation returns (`Op[X]` -> `X`) as what the method returns."""
        of_operation = inspect.signature(self.operation)
        returned = str(of_operation.return_annotation)
        if not (returned.startswith("Op[") and returned.endswith("]")):
            raise TypeError(f"{self.name}: the operation returns {returned}, not an Op[...]")
        self_parameter = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
        return of_operation.replace(
            parameters=[self_parameter, *list(of_operation.parameters.values())[1:]],
            return_annotation=returned[len("Op[") : -1],
        )


# -- events


def _send_now(policy: RetryPolicy, events: Sequence[Event]) -> Op[list[EventOutcome]]:
    """Send events at once, bypassing the buffer; one outcome per event.

    Raises ApiError when the service refuses a batch (it then stores none of it).
    """
    return ops.send_events(policy, list(events))


def _cancel(
    policy: RetryPolicy,
    ids: Iterable[str] = (),
    idempotency_keys: Iterable[str] = (),
    *,
    event_name: str | None = None,
    meter_id: str | None = None,
) -> Op[list[CancelOutcome]]:
    """Cancel events by id, or by idempotency key (with the meter's event name or id)."""
    targets = ops.cancel_targets(ids, idempotency_keys, event_name=event_name, meter_id=meter_id)
    return ops.cancel_events(policy, targets)


# -- meters and their usage


def _create_meter(
    policy: RetryPolicy,
    name: str,
    event_name: str,
    *,
    aggregation_type: str | None = None,
    currency: str | None = None,
    dimensions: Sequence[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    unique_by: str | None = None,
) -> Op[Meter]:
    """Create a meter; `aggregation_type` defaults to `sum` on the service."""
    body = ops.meter_body(
        name,
        event_name,
        aggregation_type=aggregation_type,
        currency=currency,
        dimensions=dimensions,
        metadata=metadata,
        unique_by=unique_by,
    )
    return ops.create_meter(policy, body)


def _update_meter(policy: RetryPolicy, meter_id: str, **changes: Any) -> Op[Meter]:
    """Change `name`, `metadata` (and `event_name`, `aggregation_type`, `dimensions`,
    `unique_by` while the meter has no events)."""
    return ops.update_meter(policy, meter_id, ops.meter_changes(**changes))


def _summary(
    policy: RetryPolicy, meter_id: str, **options: Unpack[ops.SummaryOptions]
) -> Op[Summary]:
    """A meter's usage over a period: one value, or windows and groups when asked."""
    return ops.summary(policy, ops.summary_params(meter_id, **options))


# -- issue 17, corrections


def _cancel_range(
    policy: RetryPolicy,
    meter_id: str,
    period_start: datetime | date | str,
    period_end: datetime | date | str,
    *,
    user_id: str | None = None,
    filters: Mapping[str, str | Iterable[str]] | None = None,
) -> Op[Correction]:
    """Cancel every event of a meter in [period_start, period_end) (one user's, with
    these dimension values): the request is repeated until the correction is complete."""
    body = ops.range_body(meter_id, period_start, period_end, user_id=user_id, filters=filters)
    return ops.cancel_range(policy, body)


def _preview_cancel_range(
    policy: RetryPolicy,
    meter_id: str,
    period_start: datetime | date | str,
    period_end: datetime | date | str,
    *,
    user_id: str | None = None,
    filters: Mapping[str, str | Iterable[str]] | None = None,
) -> Op[CancelPreview]:
    """What `cancel_range` would cancel now (a dry run: nothing changes)."""
    body = ops.range_body(meter_id, period_start, period_end, user_id=user_id, filters=filters)
    return ops.preview_cancel_range(policy, body)


def _amend(
    policy: RetryPolicy,
    event_id: str,
    *,
    value: int | None = None,
    dimensions: Mapping[str, str] | None = None,
    timestamp: datetime | str | None = None,
) -> Op[Amendment]:
    """Replace a recorded event by a copy with these changes, in one commit."""
    changes = ops.amend_changes(value, dimensions, timestamp)
    return ops.amend_event(policy, event_id, changes)


def _corrections(policy: RetryPolicy) -> Op[list[Correction]]:
    """The org's correction records (range cancels, amendments), newest first."""
    return ops.list_corrections(policy)


# -- webhook endpoints and their delivery log


def _create_webhook_endpoint(
    policy: RetryPolicy,
    url: str,
    *,
    description: str | None = None,
    event_types: Sequence[str] | None = None,
) -> Op[WebhookEndpoint]:
    """Create an endpoint (every event type unless `event_types` says which). Its
    `secret` is in this answer only: keep it where your receiver reads it."""
    body = ops.endpoint_body(url, description=description, event_types=event_types)
    return ops.create_webhook_endpoint(policy, body)


def _update_webhook_endpoint(
    policy: RetryPolicy, endpoint_id: str, **changes: Any
) -> Op[WebhookEndpoint]:
    """Change `url`, `description`, `event_types` (`ALL_EVENT_TYPES` for every type)
    or `enabled`; re-enabling an endpoint the service disabled clears its reason."""
    return ops.update_webhook_endpoint(policy, endpoint_id, ops.endpoint_changes(**changes))


# -- alert rules and their triggers


def _create_alert(
    policy: RetryPolicy,
    name: str,
    meter_id: str,
    thresholds: Sequence[int],
    *,
    scope: AlertScope = "user",
    period: str = "month",
    time_zone: str | None = None,
    filter: Mapping[str, str] | None = None,
    notify_on_resolve: bool | None = None,
) -> Op[Alert]:
    """A rule: `alert.triggered` once when a subject's usage of the meter in the
    period reaches each threshold. `scope` is `user` (each user), `org` (the
    meter's total) or `{"userId": ...}`; `period` `day` or `month` in `time_zone`."""
    body = ops.alert_body(
        name,
        meter_id,
        thresholds,
        scope=scope,
        period=period,
        time_zone=time_zone,
        filter=filter,
        notify_on_resolve=notify_on_resolve,
    )
    return ops.create_alert(policy, body)


def _update_alert(policy: RetryPolicy, alert_id: str, **changes: Any) -> Op[Alert]:
    """Change `name`, `thresholds`, `filter` or `notify_on_resolve`."""
    return ops.update_alert(policy, alert_id, ops.alert_changes(**changes))


# -- the org's API keys (issue 16)


def _create_key(
    policy: RetryPolicy,
    scopes: Sequence[str],
    *,
    expires_at: datetime | None = None,
    expires_in: timedelta | float | None = None,
    name: str | None = None,
) -> Op[ApiKey]:
    """Create a key holding `scopes` (some of this client's key's own), expiring at
    `expires_at` or after `expires_in` (seconds or a timedelta; never by default,
    unless this client's key expires itself). Its `secret` is in this answer only."""
    body = ops.key_body(scopes, expires_at=expires_at, expires_in=expires_in, name=name)
    return ops.create_key(policy, body)


# -- customer portal (issue 16)


def _create_portal_token(
    policy: RetryPolicy,
    user_id: str,
    *,
    meter_ids: Sequence[str] | None = None,
    expires_in: timedelta | int | None = None,
) -> Op[PortalToken]:
    """A token with which one end customer reads their own usage (of `meter_ids`, or
    of every active meter) for `expires_in` (seconds or a timedelta; at most 24 h,
    1 h by default): e.g. `/portal#token=...` in an iframe of your site."""
    body = ops.portal_token_body(user_id, meter_ids, expires_in)
    return ops.create_portal_token(policy, body)


# -- usage limits (issue 16)


def _create_limit(
    policy: RetryPolicy,
    meter_id: str,
    limit: int,
    *,
    period: str = "month",
    time_zone: str | None = None,
    user_id: str | None = None,
) -> Op[UsageLimit]:
    """A limit: the meter's default for every user, or `user_id`'s override."""
    body = ops.limit_body(meter_id, limit, period, time_zone, user_id)
    return ops.create_limit(policy, body)


# -- driving a call, as each client does


def _driven(operation: Callable[..., Op[Any]]) -> Callable[..., Any]:
    def method(client: Any, /, *args: Any, **kwargs: Any) -> Any:
        return client._drive(operation(client.retry, *args, **kwargs))

    return method


def _awaited(operation: Callable[..., Op[Any]]) -> Callable[..., Any]:
    async def method(client: Any, /, *args: Any, **kwargs: Any) -> Any:
        return await client._drive(operation(client.retry, *args, **kwargs))

    return method


class ApiCalls:
    """The methods both clients have that are one operation called as it is."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Give the client class a method of its own kind for each `Call` below."""
        super().__init_subclass__(**kwargs)
        for name, value in vars(ApiCalls).items():
            # Only where the class would inherit the Call itself: not over a method it or a
            # client class it derives from has (written out, or made here).
            if isinstance(value, Call) and inspect.getattr_static(cls, name) is value:
                setattr(cls, name, value.method_for(cls))

    # -- events

    send_now = Call.of(_send_now)
    cancel = Call.of(_cancel)

    # -- meters and their usage

    create_meter = Call.of(_create_meter)
    list_meters = Call(
        ops.list_meters, "Every meter of the org, archived ones included (all pages)."
    )
    get_meter = Call(ops.get_meter)
    update_meter = Call.of(_update_meter)
    archive_meter = Call(
        ops.archive_meter, "Archive a meter: it refuses new events and keeps its history."
    )
    summary = Call.of(_summary)

    # -- issue 17, corrections

    cancel_range = Call.of(_cancel_range)
    preview_cancel_range = Call.of(_preview_cancel_range)
    amend = Call.of(_amend)
    corrections = Call.of(_corrections)
    correction = Call(ops.get_correction)

    # -- webhook endpoints and their delivery log

    create_webhook_endpoint = Call.of(_create_webhook_endpoint)
    list_webhook_endpoints = Call(
        ops.list_webhook_endpoints,
        "Every endpoint of the org (all pages); secrets are never listed.",
    )
    get_webhook_endpoint = Call(ops.get_webhook_endpoint)
    update_webhook_endpoint = Call.of(_update_webhook_endpoint)
    delete_webhook_endpoint = Call(
        ops.delete_webhook_endpoint,
        "Delete an endpoint; None when a retry found it deleted by the first attempt.",
    )
    rotate_webhook_secret = Call(
        ops.rotate_webhook_secret,
        """A new secret (in the answer's `secret`) signs from now on; the old one keeps
        signing beside it for 24 hours, while your receivers move to the new one.""",
    )
    list_webhook_messages = Call(
        ops.list_webhook_messages,
        """One page of an endpoint's delivery log, newest first, each message with its
        attempts; `status` `pending`, `delivered` or `failed` narrows it.""",
    )
    retry_webhook_message = Call(
        ops.retry_webhook_message,
        "Send a message again now (same `webhook-id` and body), e.g. a failed one.",
    )
    send_test_webhook = Call(
        ops.send_test_webhook,
        "Queue a `webhook.test` message to the endpoint; see it in the delivery log.",
    )

    # -- alert rules and their triggers

    create_alert = Call.of(_create_alert)
    list_alerts = Call(
        ops.list_alerts, "Every alert rule of the org (all pages); archived ones only when asked."
    )
    get_alert = Call(ops.get_alert)
    update_alert = Call.of(_update_alert)
    archive_alert = Call(
        ops.archive_alert, "Archive a rule: it evaluates no more; its triggers stay readable."
    )
    list_alert_triggers = Call(
        ops.list_alert_triggers, "One page of a rule's triggers and resolutions, newest first."
    )

    # -- the org's API keys (issue 16)

    create_key = Call.of(_create_key)
    list_keys = Call(
        ops.list_keys, "The org's keys, revoked and expired ones included (never their secrets)."
    )
    revoke_key = Call(
        ops.revoke_key,
        """Revoke a key by its prefix (`ApiKey.prefix`); requests with it are refused from
        the next one on. False when a retry found it revoked by the first attempt.""",
    )

    # -- customer portal (issue 16)

    create_portal_token = Call.of(_create_portal_token)
    revoke_portal_tokens = Call(
        ops.revoke_portal_tokens,
        """Refuse every portal token of the org (or of `user_id`) issued until now; every
        instance refuses them within a few seconds (2 by default). Returns the moment.""",
    )
    set_portal_origins = Call(
        ops.set_portal_origins,
        """The exact origins (`https://app.example.com`) whose pages may call the portal
        API from a browser; answers them as stored.""",
    )

    # -- usage limits (issue 16)

    create_limit = Call.of(_create_limit)
    list_limits = Call(ops.list_limits)
    get_limit = Call(ops.get_limit)
    update_limit = Call(ops.update_limit)
    delete_limit = Call(ops.delete_limit)
