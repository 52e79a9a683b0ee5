"""A python-socketio server on aiohttp whose servers share events through Redis.

Usage: socketio_server.py NAME REDIS_URL PORT

Several of these, each with its own REDIS_URL, form one Socket.IO service: an emit on
any of them reaches the clients of every other through Redis pub/sub
(`socketio.AsyncRedisManager`, channel `socketio`), as python-socketio's docs show.

Routes besides Socket.IO's own:
- GET /health: {"name": NAME}.
- POST /emit?n=N: emits the event `news` with {"n": N, "from": NAME} to every client of
  every server.

Prints one JSON line for each client that connects.
"""

import json
import sys

import socketio
from aiohttp import web


def main():
    name, redis_url, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=socketio.AsyncRedisManager(redis_url),
    )
    app = web.Application()
    sio.attach(app)

    @sio.event
    async def connect(sid, environ):
        print(json.dumps({"server": name, "connected": sid}), flush=True)

    async def health(request):
        return web.json_response({"name": name})

    async def emit(request):
        data = {"n": int(request.query["n"]), "from": name}
        await sio.emit("news", data)
        return web.json_response({"emitted": data})

    app.router.add_get("/health", health)
    app.router.add_post("/emit", emit)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


if __name__ == "__main__":
    main()
