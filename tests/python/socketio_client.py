"""A python-socketio client that waits for `news` events.

Usage: socketio_client.py SERVER_URL COUNT DEADLINE_S

Connects to the Socket.IO server at SERVER_URL over WebSocket and prints one JSON line
when connected ({"connected": sid}) and one for each `news` event ({"news": data}).
After COUNT events it disconnects, prints {"received": [data, ...]} and exits 0; if
they have not all arrived within DEADLINE_S seconds of connecting it prints
{"timeout": [data, ...]} and exits 1.
"""

import asyncio
import json
import sys

import socketio


async def main(url, count, deadline_s):
    client = socketio.AsyncClient()
    received = []
    all_arrived = asyncio.Event()

    @client.on("news")
    async def news(data):
        received.append(data)
        print(json.dumps({"news": data}), flush=True)
        if len(received) >= count:
            all_arrived.set()

    await client.connect(url, transports=["websocket"], wait_timeout=10)
    print(json.dumps({"connected": client.sid}), flush=True)
    try:
        await asyncio.wait_for(all_arrived.wait(), deadline_s)
    except asyncio.TimeoutError:
        print(json.dumps({"timeout": received}), flush=True)
        await client.disconnect()
        return 1
    await client.disconnect()
    print(json.dumps({"received": received}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))))
