"""Gunicorn settings of app.yaml's entrypoint (`gunicorn -c gunicorn.conf.py ...`).

Gunicorn's own messages go through the same JSON formatter as the service's, so
every line on stderr is one JSON object Cloud Logging can parse. The service
writes its own access line per request (with the trace and without the query
string, which carries user ids), so gunicorn's (on whenever logconfig_dict is set)
is silenced.
"""

from app.logs import GUNICORN_LOGCONFIG

workers = 2
threads = 8
worker_class = "gthread"
# With threaded workers `timeout` only restarts a worker whose main loop stops
# answering; it never stops one slow request. The service bounds its own requests
# (METERING_REQUEST_DEADLINE_SECONDS, app/deadline.py), well under this and under App
# Engine's 60 s, so a slow request ends with a 503 and its thread goes on serving.
timeout = 60
accesslog = None
# Gunicorn 27's control socket is one path per user; App Engine needs none.
control_socket_disable = True
logconfig_dict = GUNICORN_LOGCONFIG


def on_starting(server):
    """Refuse to start in the master, before any worker forks, if the configuration is
    unusable (on App Engine: a missing secret): one JSON line and exit status 1."""
    from app.config import Config

    try:
        Config.from_env()
    except ValueError as exc:
        server.log.error("%s", exc)
        raise SystemExit(1) from None
