"""Drives shoal's built-in web console in headless Chromium, through nginx in front of
three shoal nodes, and kills the node serving the console's event stream on the way.

Usage:
    console_browser.py --url http://127.0.0.1:PORT --screenshots DIR \
        --access-log PATH --node HOST:PORT=PID [--node ...] [--deadline SECONDS]

`--url` is nginx; its access log must have lines `$upstream_addr $request_method
$request_uri $status`; each `--node` maps an upstream address (the node's HTTP address)
to the pid of that shoal process. The steps, each bounded in time:

1. the page at 1280x900 lists every member with one leader (cluster.png);
2. a search of three UFs starts from the form and its bars move;
3. the node serving the card's event stream is found and SIGKILLed;
4. the card ends `completed` with every UF at 100 % and a download link, and the link
   answers 200 with an xlsx (a ZIP: `PK`) (search.png);
5. the cluster view shows the killed node dead or gone (cluster-node-down.png);
6. at 375x800 nothing overflows sideways (narrow.png);
7. Tab from the top reaches the skip link, then the UF pickers, the form's fields and
   its submit button, with a visible focus outline;
8. the browser's console has no error or warning but the expected network errors of
   the killed node's requests.

Uses the system's Chromium (/usr/bin/chromium) and chromedriver (/usr/bin/chromedriver)
only: Selenium Manager is kept offline and never downloads a browser or a driver.
Prints "console browser test: ok" and exits 0, or prints what it saw and exits 1.
"""

import argparse
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

# Before Selenium is imported: its manager must never go online.
os.environ["SE_OFFLINE"] = "true"

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
UFS = ["SP", "RJ", "MG"]
EVENTS_ROUTE = "/api/searches/{id}/events"
# The series of shoal's /metrics that counts answered event-stream requests (labelled
# with the router's path template, whose braces are why lines are not parsed by a regex).
EVENTS_SERIES = "shoal_http_requests_total{"
EVENTS_LABELS = ('route="/api/searches/{id}/events"', 'method="GET"')


class Failure(Exception):
    """A step failed; the message says what was expected and what was seen."""


class Deadline:
    """The whole run's deadline; every wait is bounded by its own limit and by this."""

    def __init__(self, seconds):
        self.end = time.monotonic() + seconds

    def left(self):
        return self.end - time.monotonic()

    def bound(self, seconds):
        return max(0.0, min(seconds, self.left()))


def log(text):
    print(f"[console] {text}", flush=True)


def wait_for(what, seconds, check, interval=0.2):
    """Calls `check()` (returning (done, seen)) until done or `seconds` pass; returns the
    last `seen`, or raises Failure naming `what` with the last `seen`."""
    end = time.monotonic() + seconds
    seen = None
    while True:
        try:
            done, seen = check()
        except WebDriverException as error:
            done, seen = False, f"webdriver error: {error.msg or error}"
        if done:
            return seen
        if time.monotonic() >= end:
            raise Failure(f"timed out after {seconds:.0f} s waiting for {what}; last seen: {seen}")
        time.sleep(interval)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="base URL of nginx in front of the nodes")
    parser.add_argument("--screenshots", required=True, help="directory for the PNG screenshots")
    parser.add_argument("--access-log", required=True, help="nginx access log ($upstream_addr $request_method $request_uri $status)")
    parser.add_argument("--node", action="append", default=[], metavar="ADDR=PID",
                        help="upstream address (host:port) of a shoal node and its pid; repeat per node")
    parser.add_argument("--deadline", type=float, default=180.0, help="seconds for the whole run")
    parser.add_argument("--date-from", default="2025-01-01",
                        help="first day searched (a long span gives the sample source many pages)")
    parser.add_argument("--date-to", default="2025-12-31", help="last day searched")
    args = parser.parse_args(argv)
    nodes = {}
    for item in args.node:
        addr, sep, pid = item.rpartition("=")
        if not sep or not addr or not pid.isdigit():
            parser.error(f"--node {item!r}: expected HOST:PORT=PID")
        nodes[addr] = int(pid)
    if not nodes:
        parser.error("give every node with --node HOST:PORT=PID")
    args.nodes = nodes
    args.url = args.url.rstrip("/")
    return args


def start_browser(profile_dir):
    options = Options()
    options.binary_location = CHROMIUM
    for argument in [
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        f"--user-data-dir={profile_dir}",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--metrics-recording-only",
    ]:
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER)
    return webdriver.Chrome(service=service, options=options)


def screenshot(driver, directory, name):
    """Saves a full-page PNG (through the DevTools protocol), or the viewport if that fails."""
    path = os.path.join(directory, name)
    try:
        metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        })
        import base64

        with open(path, "wb") as file:
            file.write(base64.b64decode(shot["data"]))
    except Exception:  # noqa: BLE001 - the viewport is a fine fallback
        driver.save_screenshot(path)
    log(f"screenshot {path}")


def members(driver):
    return driver.execute_script(
        """
        return [...document.querySelectorAll('#cluster-members tr[data-node-id]')].map(row => ({
          node_id: row.dataset.nodeId, addr: row.dataset.addr, instance: row.dataset.instanceId,
          role: row.dataset.role, gossip: row.dataset.gossip,
          leader_badge: !!row.querySelector('.badge.leader'),
        }));
        """
    )


def card_state(driver, search_id):
    return driver.execute_script(
        """
        const card = document.querySelector(`.search-card[data-search-id="${arguments[0]}"]`);
        if (!card) return null;
        const link = card.querySelector('a.download');
        return {
          status: card.dataset.status,
          status_text: card.querySelector('.status-text').textContent,
          conn: card.dataset.conn || null,
          note: card.querySelector('.card-note').textContent,
          bars: Object.fromEntries([...card.querySelectorAll('.part-bar[data-uf]')].map(
            bar => [bar.dataset.uf, Number(bar.getAttribute('aria-valuenow'))])),
          download: link && !link.hidden ? link.getAttribute('href') : null,
        };
        """,
        search_id,
    )


def stream_requests_by_node(nodes):
    """Per node, how many requests of the event-stream route it has answered (from its
    own /metrics: counted when the answer's head is sent, so an open stream counts)."""
    counts = {}
    for addr in nodes:
        try:
            with urllib.request.urlopen(f"http://{addr}/metrics", timeout=2) as response:
                text = response.read().decode("utf-8", "replace")
        except (OSError, urllib.error.URLError):
            counts[addr] = None
            continue
        total = 0.0
        for line in text.splitlines():
            if line.startswith(EVENTS_SERIES) and all(label in line for label in EVENTS_LABELS):
                try:
                    total += float(line.rsplit(None, 1)[-1])
                except ValueError:
                    pass
        counts[addr] = int(total)
    return counts


def access_log_lines(path, uri_part):
    """(upstream addr, method, uri, status) of the access log's lines whose URI contains
    `uri_part`; the addr is the last one tried when nginx retried on another node."""
    lines = []
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            for line in file:
                parts = line.split()
                if len(parts) < 4 or uri_part not in line:
                    continue
                status, uri, method = parts[-1], parts[-2], parts[-3]
                upstream = " ".join(parts[:-3]).split(",")[-1].strip()
                lines.append((upstream, method, uri, status))
    except FileNotFoundError:
        pass
    return lines


def search_owner(base_url, search_id, rows):
    """The address of the node running the search (its `owner`), from the API."""
    try:
        status, body, _ = fetch(f"{base_url}/api/searches/{search_id}", timeout=3)
        owner = json.loads(body).get("owner") if status == 200 else None
    except (OSError, ValueError):
        return None
    return next((row["addr"] for row in rows if row["node_id"] == str(owner)), None)


def fetch(url, timeout=10):
    request = urllib.request.Request(url, headers={"Accept": "*/*"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers


def active_element(driver):
    return driver.execute_script(
        """
        const el = document.activeElement;
        if (!el || el === document.body) return {id: 'body', tag: 'BODY'};
        const style = getComputedStyle(el);
        return {id: el.id || '', tag: el.tagName, type: el.type || '', cls: el.className || '',
                outline: style.outlineStyle + ' ' + style.outlineWidth};
        """
    )


def run(args):
    deadline = Deadline(args.deadline)
    os.makedirs(args.screenshots, exist_ok=True)
    expected_members = len(args.nodes)
    profile_dir = tempfile.mkdtemp(prefix="shoal-console-chromium-")
    driver = None
    killed = None
    try:
        driver = start_browser(profile_dir)
        driver.set_window_size(1280, 900)
        driver.set_page_load_timeout(30)

        # 1. The cluster: every member, one leader.
        log(f"1. open {args.url}/ at 1280x900")
        driver.get(args.url + "/")

        def cluster_formed():
            rows = members(driver)
            leaders = [row for row in rows if row["role"] == "leader"]
            ok = (
                len(rows) == expected_members
                and len(leaders) == 1
                and leaders[0]["leader_badge"]
                and all(row["gossip"] == "alive" for row in rows)
            )
            return ok, rows

        rows = wait_for(f"{expected_members} alive members with one leader in #cluster-members",
                        deadline.bound(30), cluster_formed)
        log("   members: " + ", ".join(f"{r['instance']}@{r['addr']} {r['role']}" for r in rows))
        unknown = [row["addr"] for row in rows if row["addr"] not in args.nodes]
        if unknown:
            raise Failure(f"the console lists addresses not given with --node: {unknown}; --node has {sorted(args.nodes)}")
        screenshot(driver, args.screenshots, "cluster.png")

        # 2. A search from the form.
        log(f"2. start a search of {', '.join(UFS)} from {args.date_from} to {args.date_to}")
        for uf in UFS:
            box = driver.find_element(By.CSS_SELECTOR, f'#uf-picker input[data-uf="{uf}"]')
            if not box.is_selected():
                box.click()
        driver.execute_script(
            """
            for (const [id, value] of [['date-from', arguments[0]], ['date-to', arguments[1]]]) {
              const input = document.getElementById(id);
              input.value = value;
              input.dispatchEvent(new Event('input', {bubbles: true}));
              input.dispatchEvent(new Event('change', {bubbles: true}));
            }
            """,
            args.date_from,
            args.date_to,
        )
        keywords = driver.find_element(By.ID, "keywords")
        keywords.clear()
        source = Select(driver.find_element(By.ID, "source"))
        sources = [option.get_attribute("value") for option in source.options]
        if "sample" not in sources:
            raise Failure(f"the source picker has no 'sample': {sources}")
        source.select_by_value("sample")
        before_cards = driver.execute_script(
            "return [...document.querySelectorAll('.search-card[data-search-id]')].map(c => c.dataset.searchId)"
        )
        streams_before = stream_requests_by_node(args.nodes)
        driver.find_element(By.ID, "search-submit").click()

        def new_card():
            ids = driver.execute_script(
                "return [...document.querySelectorAll('.search-card[data-search-id]')].map(c => c.dataset.searchId)"
            )
            fresh = [card_id for card_id in ids if card_id not in before_cards]
            message = driver.find_element(By.ID, "form-message").text
            return bool(fresh), fresh[0] if fresh else f"no new card; form message: {message!r}"

        search_id = wait_for("the new search's card", deadline.bound(15), new_card)
        log(f"   search {search_id}")

        def bars_moving():
            state = card_state(driver, search_id)
            if state and state["status"] in ("failed", "cancelled", "not_found"):
                raise Failure(f"the search ended {state['status']} before the kill: {state}")
            ok = bool(state) and set(UFS) <= set(state["bars"]) and any(v > 0 for v in state["bars"].values())
            return ok, state

        state = wait_for("a UF bar above 0 % (events flowing)", deadline.bound(30), bars_moving, interval=0.05)
        log(f"   events flow: {state['bars']}")

        # 3. The node serving the stream: started there (its /metrics) and not ended
        # (nginx logs a request when it ends, so the open stream has no line yet).
        log("3. find the node serving the card's event stream")
        events_uri = EVENTS_ROUTE.format(id=search_id)

        def serving_node():
            now = stream_requests_by_node(args.nodes)
            ended = access_log_lines(args.access_log, events_uri)
            open_on = {}
            for addr in args.nodes:
                if now.get(addr) is None or streams_before.get(addr) is None:
                    continue
                started = now[addr] - streams_before[addr]
                finished = sum(1 for line in ended if line[0] == addr)
                if started - finished > 0:
                    open_on[addr] = started - finished
            seen = {"metrics_started": now, "before": streams_before, "access_log": ended, "open": open_on}
            if len(open_on) == 1:
                return True, (next(iter(open_on)), seen)
            # No metrics to count with: the access log's last line is all there is.
            if not open_on and ended and all(now.get(addr) is None for addr in args.nodes):
                return True, (ended[-1][0], seen)
            return False, seen

        addr, seen = wait_for(f"one node with an open {events_uri}", deadline.bound(10), serving_node)
        state = card_state(driver, search_id)
        if state["status"] == "completed":
            raise Failure(
                "the search completed before its stream's node could be killed; search a longer "
                f"span or start the nodes with a larger --sample-page-delay-ms; card: {state}"
            )
        access = seen["access_log"]
        log(f"   access log lines for {events_uri}: {access or 'none yet (the stream is open: nginx logs it when it ends)'}")
        log(f"   stream requests answered per node since the submit: "
            f"{ {a: (seen['metrics_started'][a] or 0) - (seen['before'][a] or 0) for a in args.nodes} }")
        owner = search_owner(args.url, search_id, rows)
        log(f"   the search runs on {owner or 'an unknown node'}; the stream is served by {addr}"
            + (" (its owner: the kill makes another node take the search over)" if owner == addr
               else " (the owner keeps running it; another node relays its events)"))
        pid = args.nodes.get(addr)
        if pid is None:
            raise Failure(f"the stream is served by {addr}, which is not among --node {sorted(args.nodes)}")
        log(f"   SIGKILL node {addr} (pid {pid}), which serves the stream; card before: {state['bars']}")
        os.kill(pid, signal.SIGKILL)
        killed = (addr, pid, time.monotonic())

        # 4. The search completes anyway, with its report.
        log("4. wait for the card to show completed, every bar at 100 % and a download link")

        def completed():
            state = card_state(driver, search_id)
            if state and state["status"] in ("failed", "cancelled", "not_found"):
                raise Failure(f"the search ended {state['status']}: {state}")
            ok = (
                bool(state)
                and state["status"] == "completed"
                and state["status_text"] == "completed"
                and all(state["bars"].get(uf) == 100 for uf in UFS)
                and bool(state["download"])
            )
            return ok, state

        state = wait_for("the completed card", deadline.bound(max(5, deadline.left() - 30)), completed)
        log(f"   completed after the kill: {state}")
        href = state["download"]
        download_url = urllib.parse.urljoin(args.url + "/", href)
        status, body, headers = fetch(download_url)
        if status != 200 or not body.startswith(b"PK"):
            raise Failure(f"the download link {download_url} answered {status}, {len(body)} bytes starting {body[:40]!r}")
        log(f"   download: 200, {len(body)} bytes, {headers.get('Content-Type')}, {headers.get('Content-Disposition')}")
        driver.execute_script(
            "document.querySelector(`.search-card[data-search-id=\"${arguments[0]}\"]`).scrollIntoView({block: 'center'})",
            search_id,
        )
        screenshot(driver, args.screenshots, "search.png")

        # 5. The killed node shows dead, or is gone.
        log(f"5. the cluster view shows {addr} dead or gone")

        def node_down():
            rows = members(driver)
            row = next((row for row in rows if row["addr"] == addr), None)
            return row is None or row["gossip"] in ("dead", "unknown"), rows

        rows = wait_for(f"{addr} dead or gone in #cluster-members", deadline.bound(10), node_down)
        log(f"   {time.monotonic() - killed[2]:.1f} s after the kill: "
            + ", ".join(f"{r['instance']}@{r['addr']} {r['role']}/{r['gossip']}" for r in rows))
        driver.execute_script("window.scrollTo(0, 0)")
        screenshot(driver, args.screenshots, "cluster-node-down.png")

        # 6. Narrow.
        log("6. 375x800: no horizontal overflow")
        driver.set_window_size(375, 800)
        inner = driver.execute_script("return window.innerWidth")
        if inner != 375:
            # The window's frame takes some of it: make the viewport itself 375 wide.
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": 375, "height": 800, "deviceScaleFactor": 1, "mobile": False,
            })
        time.sleep(0.5)
        widths = driver.execute_script(
            "return {scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth,"
            " inner: window.innerWidth}"
        )
        screenshot(driver, args.screenshots, "narrow.png")
        if widths["scroll"] > 375 + 1:
            wide = driver.execute_script(
                """
                return [...document.querySelectorAll('body *')].filter(el => el.getBoundingClientRect().right > 376)
                  .slice(0, 8).map(el => el.tagName + (el.id ? '#' + el.id : '') + '.' + el.className
                                    + ' right=' + Math.round(el.getBoundingClientRect().right));
                """
            )
            raise Failure(f"horizontal overflow at 375 px: {widths}; widest elements: {wide}")
        log(f"   widths: {widths}")

        # 7. Keyboard, from the top of a fresh load.
        log("7. keyboard: Tab from the top")
        driver.refresh()
        wait_for("the page after reload", deadline.bound(15),
                 lambda: (driver.execute_script("return document.querySelectorAll('#uf-picker input').length") == 27, None))
        actions = ActionChains(driver)
        actions.send_keys(Keys.TAB).perform()
        first = active_element(driver)
        if first["id"] != "skip-link":
            raise Failure(f"the first Tab focused {first}, not the skip link")
        if first["outline"].startswith("none"):
            raise Failure(f"the focused skip link shows no outline: {first}")
        ActionChains(driver).send_keys(Keys.ENTER).perform()
        after_skip = active_element(driver)
        if after_skip["id"] != "main":
            raise Failure(f"the skip link moved focus to {after_skip}, not #main")
        wanted = ["uf-AC", "date-from", "date-to", "keywords", "source", "search-submit"]
        visited = []
        outlines = {}
        for _ in range(80):
            ActionChains(driver).send_keys(Keys.TAB).perform()
            element = active_element(driver)
            if not visited or visited[-1] != element["id"]:
                visited.append(element["id"])
            outlines[element["id"]] = element["outline"]
            if element["id"] == "search-submit":
                break
        order = [name for name in visited if name in wanted]
        if order != wanted:
            raise Failure(f"Tab did not reach {wanted} in order; focus went through {visited}")
        bare = {name: outlines[name] for name in ("uf-AC", "keywords", "search-submit") if outlines[name].startswith("none")}
        if bare:
            raise Failure(f"no visible focus outline on {bare}")
        log(f"   Tab reached the skip link, then {len(visited)} stops up to the submit button: "
            f"{visited[:4]} … {visited[-4:]}")

        # 8. The console: no errors or warnings but the killed node's network errors.
        log("8. browser console")
        entries = driver.get_log("browser")
        allowed_paths = [events_uri, "/api/cluster", "/api/health"]
        network = re.compile(r"net::ERR_|status of 50[234]|Failed to fetch|network error", re.IGNORECASE)
        bad, tolerated = [], []
        for entry in entries:
            if entry.get("level") not in ("SEVERE", "WARNING"):
                continue
            message = entry.get("message", "")
            if any(path in message for path in allowed_paths) and network.search(message):
                tolerated.append(message)
            else:
                bad.append(f"{entry.get('level')}: {message}")
        for message in tolerated:
            log(f"   tolerated (the killed node): {message}")
        if bad:
            raise Failure("the browser console has errors or warnings:\n  " + "\n  ".join(bad))
        log(f"   {len(entries)} console entries, {len(tolerated)} tolerated, none unexpected")
    finally:
        if driver is not None:
            try:
                driver.quit()
            except Exception:  # noqa: BLE001
                pass
        shutil.rmtree(profile_dir, ignore_errors=True)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            print(f"console browser test: FAILED: {path} is missing (apt-get install chromium chromium-driver)",
                  file=sys.stderr)
            return 1
    try:
        run(args)
    except Failure as failure:
        print(f"console browser test: FAILED: {failure}", file=sys.stderr, flush=True)
        return 1
    except WebDriverException as error:
        print(f"console browser test: FAILED: webdriver: {error}", file=sys.stderr, flush=True)
        return 1
    print("console browser test: ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
