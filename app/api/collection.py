"""The views of one kind of an org's things that are served the same way: create, a
paged list, and get, change and delete of one by its id (alert rules, limits, webhook
endpoints).

Each view of those kinds was the same stack of six declarations (route, scope, section,
body or query, answer, errors) differing only in the schemas, the answer's description
and the scope. A `Collection` holds what a kind's views share and gives one decorator
per view standing for that stack:

    views = Collection(blueprint, tenant, one=Alert, id_name="alert_id",
                       read="meters:read", write="meters:write")

    @views.gets("The alert rule.")
    def get_alert(alert_id):
        # its docstring, "Get one alert rule.", is the operation's summary
        return rules.get_rule(alert_id)

The view keeps its name (the operationId), its docstring (the summary) and its call of
the service, so the OpenAPI document and the answers are those of the stack written out.
A route of its own kind (a secret's rotation, the limit check) keeps its stack written
out in its module.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from flask import Blueprint, current_app

from app.api.declare import arguments, body, other_responses, response, scope


def page_size(args: dict) -> int:
    """The page size a list asked for (`limit`), else the configured default."""
    return args.get("limit", current_app.config["METERING"].default_page_size)


def paged(items: str) -> Callable:
    """Answer a view's `(page, next_cursor)` as the list envelope of every paged list:
    `{items: [...], "count": n, "nextCursor": ...}`."""

    def decorate(view):
        @functools.wraps(view)
        def as_page(*args, **kwargs):
            page, next_cursor = view(*args, **kwargs)
            return {items: page, "count": len(page), "nextCursor": next_cursor}

        return as_page

    return decorate


@dataclass(frozen=True)
class Collection:
    """One kind's routes below `path` of `blueprint`, declared in the document's section
    by `tenant` (`declare.operation`): `one` is the schema of one thing, `id_name` the
    path argument naming it, `read` and `write` the API key scopes of reading and of
    changing."""

    blueprint: Blueprint
    tenant: Callable
    one: type
    id_name: str
    read: str
    write: str
    path: str = ""

    @property
    def item(self) -> str:
        """The route of one thing: `path/<id_name>`."""
        return f"{self.path}/<{self.id_name}>"

    def _declare(self, method: str, rule: str, needs: str, *stack: Callable) -> Callable:
        """Route, scope and section, then `stack` (outermost first) around the view."""

        def decorate(view):
            for declaration in reversed((self.tenant, *stack)):
                view = declaration(view)
            return self.blueprint.route(rule, methods=[method])(scope(needs)(view))

        return decorate

    def creates(
        self,
        shape: type,
        description: str,
        *,
        answer: type | None = None,
        errors: tuple[int, ...] = (400,),
    ) -> Callable:
        """POST `path`: a body of `shape`, answered 201 with the new thing (`answer`, by
        default `one`)."""
        return self._declare(
            "POST",
            self.path,
            self.write,
            body(shape),
            response(answer or self.one, 201, description),
            other_responses(*errors),
        )

    def lists(
        self, query: type, page: type, description: str, *, items: str, of_one: str | None = None
    ) -> Callable:
        """GET `path` (or, `of_one` naming them, `path/<id_name>/of_one`: one thing's
        own list, 404 without it): the query string of `query`, answered with a page of
        `page` whose list is `items`. The view answers `(page, next_cursor)`."""
        rule, errors = (
            (self.path, (400,)) if of_one is None else (f"{self.item}/{of_one}", (400, 404))
        )
        return self._declare(
            "GET",
            rule,
            self.read,
            arguments(query),
            response(page, 200, description),
            other_responses(*errors),
            paged(items),
        )

    def gets(self, description: str) -> Callable:
        """GET `path/<id_name>`: one thing, 404 without it."""
        return self._declare(
            "GET", self.item, self.read, response(self.one, 200, description), other_responses(404)
        )

    def changes(self, shape: type, description: str) -> Callable:
        """PATCH `path/<id_name>`: a body of `shape`, answered with the changed thing."""
        return self._declare(
            "PATCH",
            self.item,
            self.write,
            body(shape),
            response(self.one, 200, description),
            other_responses(400, 404),
        )

    def deletes(self, description: str) -> Callable:
        """DELETE `path/<id_name>`: answered with the thing as it was deleted (or
        archived)."""
        return self._declare(
            "DELETE",
            self.item,
            self.write,
            response(self.one, 200, description),
            other_responses(404),
        )
