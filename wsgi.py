"""gunicorn entry point: ``gunicorn wsgi:app`` (settings from REGIO_* environment variables).

Each web process also runs the reconciler, which settles runs whose worker died.

The web process shares one pool of Redis connections between its requests. With gevent it serves
up to REGIO_WEB_CONNECTIONS requests at once, live log streams included, and redis-py's default
pool refuses the 101st connection in use ("Too many connections": a failed request, a health
check saying Redis is down). A blocking pool instead makes a request wait, cooperatively, for one
of ``REDIS_CONNECTIONS`` connections, up to ``REDIS_WAIT`` seconds.
"""

import gc

import redis

from app import create_app, reconciler

REDIS_CONNECTIONS = 64
REDIS_WAIT = 10.0

app = create_app()
app.extensions["regio.redis"] = redis.Redis(
    connection_pool=redis.BlockingConnectionPool.from_url(
        app.extensions["regio.settings"]["REDIS_URL"],
        max_connections=REDIS_CONNECTIONS,
        timeout=REDIS_WAIT,
    )
)
reconciler.start_reconciler_thread(app)
# the objects made so far (astropy, the app) live as long as the process: keep them out of the
# collector's full passes, which otherwise cost ~150 ms on whichever request triggers one
gc.freeze()
