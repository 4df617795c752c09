"""Gunicorn settings of app.yaml's entrypoint (`gunicorn -c gunicorn.conf.py ...`).

Gunicorn's own messages go through the same JSON formatter as the service's, so
every line on stderr is one JSON object Cloud Logging can parse. The service
writes its own access line per request (with the trace and without the query
string, which carries user ids), so gunicorn's (on whenever logconfig_dict is set)
is silenced.
"""

workers = 2
threads = 8
worker_class = "gthread"
timeout = 60
accesslog = None
# Gunicorn 27's control socket is one path per user; App Engine needs none.
control_socket_disable = True
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "app.logs.JsonFormatter"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json",
                            "stream": "ext://sys.stderr"}},
    "root": {"level": "INFO", "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
        "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
    },
}
