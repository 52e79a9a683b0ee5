"""Runs redis-py, unmodified, against three shoal nodes serving the Redis protocol.

Usage: redis_py_check.py URL_A URL_B URL_C

Three suites run one after the other, each with its own key prefix: the blocking client
`redis.Redis` (RESP2) and the asyncio client `redis.asyncio.Redis` with protocol=2 and
protocol=3. Each writes on one node and reads on the others at once (shoal's reads are
linearizable on every node), and covers SET with EX/PX, GET, MGET, INCR/INCRBY,
EXPIRE/TTL, SCAN through scan_iter(match=...), KEYS, DELETE/EXISTS, a pipeline of many
commands (transaction=False), pub/sub across nodes (SUBSCRIBE on B, PSUBSCRIBE on C,
PUBLISH on A, with the counts PUBLISH answers), CLIENT SETNAME/GETNAME/INFO, PING and
INFO.

Prints one JSON line: {"ok": ..., "suites": {name: {...}}, "failures": [...]}, and exits
with status 1 if any check failed or any call raised (the traceback is in the failures and
on standard error).
"""

import asyncio
import json
import sys
import time
import traceback

import redis
import redis.asyncio

# How long a subscriber waits for a message, and an expired key for its removal.
MESSAGE_DEADLINE_S = 10.0
EXPIRY_DEADLINE_S = 5.0
NUM_PIPELINED = 100
NUM_SCANNED = 25
NUM_ORDERED = 20


class Checks:
    """The checks of one suite: how many ran, which failed, and what they saw."""

    def __init__(self, name, protocol):
        self.name = name
        self.num_checks = 0
        self.failures = []
        self.seen = {"protocol": protocol}

    def equal(self, what, got, expected):
        self.num_checks += 1
        if got != expected:
            self.failures.append(f"{self.name}: {what}: got {got!r}, expected {expected!r}")

    def holds(self, what, condition, got):
        self.num_checks += 1
        if not condition:
            self.failures.append(f"{self.name}: {what}: got {got!r}")

    def attempt(self, what, call):
        """Returns what `call()` returns; if it raises, records a failure with the traceback
        and returns None, so that the suite goes on."""
        try:
            return call()
        except Exception:
            self.num_checks += 1
            self.failures.append(f"{self.name}: {what} raised:\n{traceback.format_exc()}")
            return None

    async def attempt_async(self, what, call):
        """As `attempt`, for a coroutine function."""
        try:
            return await call()
        except Exception:
            self.num_checks += 1
            self.failures.append(f"{self.name}: {what} raised:\n{traceback.format_exc()}")
            return None

    def report(self):
        return {"checks": self.num_checks, "failures": self.failures, **self.seen}



def check_pipeline(checks, results, read_back):
    """Checks a pipeline's SETs, INCRs and GETs, and the values read on another node."""
    checks.equal("pipeline sets", results[:NUM_PIPELINED], [True] * NUM_PIPELINED)
    checks.equal(
        "pipeline incrs",
        results[NUM_PIPELINED : 2 * NUM_PIPELINED],
        list(range(1, NUM_PIPELINED + 1)),
    )
    values = [str(i) for i in range(NUM_PIPELINED)]
    checks.equal("pipeline gets", results[2 * NUM_PIPELINED :], values)
    checks.equal("pipelined writes read on another node", read_back, values)

def next_message(pubsub, kind):
    """Returns the next message of type `kind` on a blocking pubsub, or raises."""
    deadline = time.monotonic() + MESSAGE_DEADLINE_S
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.5)
        if message is not None and message["type"] == kind:
            return message
    raise TimeoutError(f"no {kind} message within {MESSAGE_DEADLINE_S} s")


async def next_message_async(pubsub, kind):
    """Returns the next message of type `kind` on an asyncio pubsub, or raises."""
    deadline = time.monotonic() + MESSAGE_DEADLINE_S
    while time.monotonic() < deadline:
        message = await pubsub.get_message(timeout=0.5)
        if message is not None and message["type"] == kind:
            return message
    raise TimeoutError(f"no {kind} message within {MESSAGE_DEADLINE_S} s")


def sync_suite(urls):
    """The blocking client over RESP2."""
    checks = Checks("sync-resp2", 2)
    a, b, c = (
        redis.Redis.from_url(url, protocol=2, decode_responses=True, socket_timeout=10)
        for url in urls
    )
    p = "sync:"
    try:
        # What an earlier run against the same cluster left.
        for key in list(a.scan_iter(match=p + "*")):
            a.delete(key)
        checks.equal("ping", a.ping(), True)
        checks.equal("client_setname", a.client_setname("shoal-check-sync"), True)
        checks.equal("client_getname", a.client_getname(), "shoal-check-sync")
        # CLIENT INFO, which redis-py parses into a dict with Redis 7's integer fields.
        info = checks.attempt("client_info()", a.client_info)
        if info is not None:
            checks.equal("client_info() name", info.get("name"), "shoal-check-sync")
        version = b.info().get("redis_version")
        checks.holds("info() has redis_version", isinstance(version, str) and version[:1].isdigit(), version)
        checks.seen["redis_version"] = version
        checks.holds("info('server') has redis_mode", "redis_mode" in c.info("server"), c.info("server"))

        checks.equal("set ex", a.set(p + "k", "v1", ex=100), True)
        checks.equal("get on another node", b.get(p + "k"), "v1")
        ttl = c.ttl(p + "k")
        checks.holds("ttl after set ex=100", 0 < ttl <= 100, ttl)
        checks.equal("set nx on an existing key", b.set(p + "k", "v2", nx=True), None)
        checks.equal("set xx", c.set(p + "k", "v3", xx=True, keepttl=True), True)
        checks.equal("get after xx", a.get(p + "k"), "v3")
        checks.equal("get of a missing key", a.get(p + "missing"), None)

        a.set(p + "m1", "1")
        a.set(p + "m2", "2")
        checks.equal("mget on another node", c.mget([p + "m1", p + "m2", p + "missing"]), ["1", "2", None])

        checks.equal("incr of a new key", a.incr(p + "n"), 1)
        checks.equal("incr on another node", b.incr(p + "n"), 2)
        checks.equal("incr by 5 on a third node", c.incr(p + "n", 5), 7)
        checks.equal("get of the counter", a.get(p + "n"), "7")

        a.set(p + "e", "x")
        checks.equal("ttl without expiry", b.ttl(p + "e"), -1)
        checks.equal("expire", c.expire(p + "e", 50), True)
        ttl = a.ttl(p + "e")
        checks.holds("ttl after expire 50", 45 <= ttl <= 50, ttl)
        checks.equal("expire of a missing key", b.expire(p + "missing", 10), False)
        checks.equal("ttl of a missing key", c.ttl(p + "missing"), -2)
        checks.equal("set px", a.set(p + "short", "x", px=300), True)
        deadline = time.monotonic() + EXPIRY_DEADLINE_S
        while b.get(p + "short") is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        checks.equal("a key set with px=300 is gone", b.get(p + "short"), None)

        scanned = {f"{p}scan:{i}" for i in range(NUM_SCANNED)}
        for key in scanned:
            a.set(key, "s")
        checks.equal("scan_iter(match=...)", set(b.scan_iter(match=p + "scan:*", count=7)), scanned)
        checks.equal("keys(pattern)", set(c.keys(p + "scan:*")), scanned)

        checks.equal("delete", a.delete(p + "m1", p + "m2", p + "missing"), 2)
        checks.equal("exists after delete", b.exists(p + "m1", p + "m2"), 0)

        pipe = a.pipeline(transaction=False)
        for i in range(NUM_PIPELINED):
            pipe.set(f"{p}pipe:{i}", i)
        for _ in range(NUM_PIPELINED):
            pipe.incr(p + "pipe:counter")
        for i in range(NUM_PIPELINED):
            pipe.get(f"{p}pipe:{i}")
        results = pipe.execute()
        check_pipeline(checks, results, c.mget([f"{p}pipe:{i}" for i in range(NUM_PIPELINED)]))

        by_channel = b.pubsub()
        by_channel.subscribe(p + "news")
        next_message(by_channel, "subscribe")
        by_pattern = c.pubsub()
        by_pattern.psubscribe(p + "*")
        next_message(by_pattern, "psubscribe")
        counts = [a.publish(p + "news", "hello"), a.publish(p + "other", "only the pattern")]
        checks.seen["publish_counts"] = counts
        checks.equal("publish counts (news: B and C; other: C)", counts, [2, 1])
        message = next_message(by_channel, "message")
        checks.equal("message on B", (message["channel"], message["data"]), (p + "news", "hello"))
        message = next_message(by_pattern, "pmessage")
        checks.equal(
            "pmessage on C",
            (message["pattern"], message["channel"], message["data"]),
            (p + "*", p + "news", "hello"),
        )
        message = next_message(by_pattern, "pmessage")
        checks.equal("second pmessage on C", (message["channel"], message["data"]), (p + "other", "only the pattern"))
        for i in range(NUM_ORDERED):
            a.publish(p + "news", str(i))
        got = [next_message(by_channel, "message")["data"] for _ in range(NUM_ORDERED)]
        checks.equal("messages arrive in the order published", got, [str(i) for i in range(NUM_ORDERED)])
        by_channel.close()
        by_pattern.close()
    finally:
        for client in (a, b, c):
            client.close()
    return checks


async def async_suite(urls, protocol):
    """The asyncio client over RESP2 or RESP3."""
    checks = Checks(f"asyncio-resp{protocol}", protocol)
    a, b, c = (
        redis.asyncio.Redis.from_url(url, protocol=protocol, decode_responses=True, socket_timeout=10)
        for url in urls
    )
    p = f"async{protocol}:"
    try:
        for key in [key async for key in a.scan_iter(match=p + "*")]:
            await a.delete(key)
        checks.equal("ping", await a.ping(), True)
        checks.equal("client_setname", await a.client_setname(f"shoal-check-{protocol}"), True)
        checks.equal("client_getname", await a.client_getname(), f"shoal-check-{protocol}")
        info = await checks.attempt_async("client_info()", a.client_info)
        if info is not None:
            checks.equal("client_info() name", info.get("name"), f"shoal-check-{protocol}")
        version = (await b.info()).get("redis_version")
        checks.holds("info() has redis_version", isinstance(version, str) and version[:1].isdigit(), version)
        checks.seen["redis_version"] = version

        checks.equal("set ex", await a.set(p + "k", "v1", ex=100), True)
        checks.equal("get on another node", await b.get(p + "k"), "v1")
        ttl = await c.ttl(p + "k")
        checks.holds("ttl after set ex=100", 0 < ttl <= 100, ttl)
        checks.equal("get of a missing key", await c.get(p + "missing"), None)

        await a.set(p + "m1", "1")
        await a.set(p + "m2", "2")
        checks.equal("mget on another node", await c.mget([p + "m1", p + "m2", p + "missing"]), ["1", "2", None])

        checks.equal("incr of a new key", await a.incr(p + "n"), 1)
        checks.equal("incr on another node", await b.incr(p + "n"), 2)
        checks.equal("incr by 5 on a third node", await c.incr(p + "n", 5), 7)

        await a.set(p + "e", "x")
        checks.equal("ttl without expiry", await b.ttl(p + "e"), -1)
        checks.equal("expire", await c.expire(p + "e", 50), True)
        ttl = await a.ttl(p + "e")
        checks.holds("ttl after expire 50", 45 <= ttl <= 50, ttl)
        checks.equal("ttl of a missing key", await c.ttl(p + "missing"), -2)

        scanned = {f"{p}scan:{i}" for i in range(NUM_SCANNED)}
        for key in scanned:
            await a.set(key, "s")
        found = {key async for key in b.scan_iter(match=p + "scan:*", count=7)}
        checks.equal("scan_iter(match=...)", found, scanned)

        checks.equal("delete", await a.delete(p + "m1", p + "m2", p + "missing"), 2)
        checks.equal("exists after delete", await b.exists(p + "m1", p + "m2"), 0)

        async with a.pipeline(transaction=False) as pipe:
            for i in range(NUM_PIPELINED):
                pipe.set(f"{p}pipe:{i}", i)
            for _ in range(NUM_PIPELINED):
                pipe.incr(p + "pipe:counter")
            for i in range(NUM_PIPELINED):
                pipe.get(f"{p}pipe:{i}")
            results = await pipe.execute()
        read_back = await c.mget([f"{p}pipe:{i}" for i in range(NUM_PIPELINED)])
        check_pipeline(checks, results, read_back)

        by_channel = b.pubsub()
        await by_channel.subscribe(p + "news")
        await next_message_async(by_channel, "subscribe")
        by_pattern = c.pubsub()
        await by_pattern.psubscribe(p + "*")
        await next_message_async(by_pattern, "psubscribe")
        counts = [await a.publish(p + "news", "hello"), await a.publish(p + "other", "only the pattern")]
        checks.seen["publish_counts"] = counts
        checks.equal("publish counts (news: B and C; other: C)", counts, [2, 1])
        message = await next_message_async(by_channel, "message")
        checks.equal("message on B", (message["channel"], message["data"]), (p + "news", "hello"))
        message = await next_message_async(by_pattern, "pmessage")
        checks.equal(
            "pmessage on C",
            (message["pattern"], message["channel"], message["data"]),
            (p + "*", p + "news", "hello"),
        )
        message = await next_message_async(by_pattern, "pmessage")
        checks.equal("second pmessage on C", (message["channel"], message["data"]), (p + "other", "only the pattern"))
        for i in range(NUM_ORDERED):
            await a.publish(p + "news", str(i))
        got = [(await next_message_async(by_channel, "message"))["data"] for _ in range(NUM_ORDERED)]
        checks.equal("messages arrive in the order published", got, [str(i) for i in range(NUM_ORDERED)])
        await by_channel.aclose()
        await by_pattern.aclose()
    finally:
        for client in (a, b, c):
            await client.aclose()
    return checks


def run(name, suite):
    """Runs one suite; a call that raised is a failure with its traceback."""
    try:
        return suite().report()
    except Exception:
        trace = traceback.format_exc()
        print(trace, file=sys.stderr)
        return {"checks": 0, "failures": [f"{name}: raised:\n{trace}"]}


def main():
    urls = sys.argv[1:]
    if len(urls) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    suites = {
        "sync-resp2": run("sync-resp2", lambda: sync_suite(urls)),
        "asyncio-resp2": run("asyncio-resp2", lambda: asyncio.run(async_suite(urls, 2))),
        "asyncio-resp3": run("asyncio-resp3", lambda: asyncio.run(async_suite(urls, 3))),
    }
    failures = [failure for suite in suites.values() for failure in suite["failures"]]
    print(json.dumps({"ok": not failures, "redis_py": redis.__version__, "suites": suites, "failures": failures}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
