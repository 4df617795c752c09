"""The API methods that are one operation called as it is: written once for both clients.

Most of the API is a call of one `operations` generator with the caller's arguments:
`MeteringClient` drives it to its value, `AsyncMeteringClient` awaits the same. Written
out, each such method stood twice, as a function and as a coroutine function of one
line. Here each is one `Call` (the operation, and the method's docstring) in `ApiCalls`,
the base class both clients share.

A client class gets from each `Call` a real method of its own kind when it is defined
(`ApiCalls.__init_subclass__`): a function for the sync client, a coroutine function for
the async one (the kind its `_drive` is), with the operation's parameters and the value
it returns as its signature. So help(), `inspect` and IDEs show the method as if written
out, and mypy types it through `Call.__get__`: `T` on a MeteringClient, an awaitable `T`
on an AsyncMeteringClient. A method that does more than pass its arguments on (building
a body, caching, streaming) is written out in each client.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from metering_client import operations as ops
from metering_client.operations import Op
from metering_client.retry import RetryPolicy

if TYPE_CHECKING:  # only for the types: the clients import this module
    from metering_client.aio import AsyncMeteringClient
    from metering_client.client import MeteringClient

P = ParamSpec("P")
T = TypeVar("T")


class Call(Generic[P, T]):
    """A client method that drives `operation(client.retry, *arguments)`."""

    def __init__(
        self, operation: Callable[Concatenate[RetryPolicy, P], Op[T]], doc: str | None = None
    ) -> None:
        self.operation, self.name = operation, operation.__name__
        #: the method's docstring; on the Call too, so that help() finds no other one
        self.doc = self.__doc__ = doc

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
        driven = _awaited if inspect.iscoroutinefunction(owner._drive) else _driven  # type: ignore[attr-defined]  # a client
        method = driven(self.operation)
        method.__name__, method.__doc__ = self.name, self.doc
        method.__qualname__ = f"{owner.__qualname__}.{self.name}"
        method.__module__ = owner.__module__
        method.__signature__ = self.signature()  # type: ignore[attr-defined]  # for inspect
        method.__annotations__ = {
            **{p.name: p.annotation for p in list(method.__signature__.parameters.values())[1:]},  # type: ignore[attr-defined]
            "return": method.__signature__.return_annotation,  # type: ignore[attr-defined]
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

    # -- meters

    list_meters = Call(
        ops.list_meters, "Every meter of the org, archived ones included (all pages)."
    )
    get_meter = Call(ops.get_meter)
    archive_meter = Call(
        ops.archive_meter, "Archive a meter: it refuses new events and keeps its history."
    )

    # -- issue 17, corrections

    correction = Call(ops.get_correction)

    # -- webhook endpoints and their delivery log

    list_webhook_endpoints = Call(
        ops.list_webhook_endpoints,
        "Every endpoint of the org (all pages); secrets are never listed.",
    )
    get_webhook_endpoint = Call(ops.get_webhook_endpoint)
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

    list_alerts = Call(
        ops.list_alerts, "Every alert rule of the org (all pages); archived ones only when asked."
    )
    get_alert = Call(ops.get_alert)
    archive_alert = Call(
        ops.archive_alert, "Archive a rule: it evaluates no more; its triggers stay readable."
    )
    list_alert_triggers = Call(
        ops.list_alert_triggers, "One page of a rule's triggers and resolutions, newest first."
    )

    # -- the org's API keys (issue 16)

    list_keys = Call(
        ops.list_keys, "The org's keys, revoked and expired ones included (never their secrets)."
    )
    revoke_key = Call(
        ops.revoke_key,
        """Revoke a key by its prefix (`ApiKey.prefix`); requests with it are refused from
        the next one on. False when a retry found it revoked by the first attempt.""",
    )

    # -- customer portal (issue 16)

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

    list_limits = Call(ops.list_limits)
    get_limit = Call(ops.get_limit)
    update_limit = Call(ops.update_limit)
    delete_limit = Call(ops.delete_limit)
