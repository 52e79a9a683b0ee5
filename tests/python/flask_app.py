"""A Flask app that keeps its sessions in Redis through Flask-Session, as its docs show.

Usage: REDIS_URL=redis://host:port/0 flask_app.py PORT

Routes:
- GET /health: 200, without touching the session store.
- GET /login?user=NAME: starts a session with that user and a counter at 0.
- GET /me: the session's user and its counter, incremented by this request (401 without
  a session). Flask-Session reads the session (GET session:{sid}) before the view and
  writes it back (SET session:{sid} ... EX) after it, before the answer goes out: an
  answer of 200 means the write was acknowledged.

Nothing here knows about shoal: REDIS_URL points at a load balancer in front of it.
"""

import os
import sys

import redis
from flask import Flask, jsonify, request, session
from flask_session import Session
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError
from redis.retry import Retry


def redis_client(url):
    """Returns the client of a Redis behind a TCP proxy that moves clients off a dead node.

    When the node behind a connection dies, the proxy closes the connection: the next
    command on it fails with ConnectionError, and a new connection reaches a live node.
    So the client retries connection errors and timeouts with a short backoff (about 3 s
    in all), and pings a connection idle for more than a second before using it, which
    finds one closed while idle. Retrying is safe for what Flask-Session sends: GET, and
    SET of the whole session (sending it twice stores the same value).
    """
    return redis.Redis.from_url(
        url,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=10),
        retry_on_error=[ConnectionError, TimeoutError],
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=1,
    )


app = Flask(__name__)
app.config.update(
    SECRET_KEY="resp-clients-test",
    SESSION_TYPE="redis",
    SESSION_REDIS=redis_client(os.environ["REDIS_URL"]),
)
Session(app)


@app.get("/health")
def health():
    return "ok"


@app.get("/login")
def login():
    session["user"] = request.args["user"]
    session["count"] = 0
    return jsonify(user=session["user"], count=session["count"])


@app.get("/me")
def me():
    if "user" not in session:
        return jsonify(error="no session"), 401
    session["count"] = session.get("count", 0) + 1
    return jsonify(user=session["user"], count=session["count"])


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]), threaded=False)
