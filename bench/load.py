"""Serving capacity at the protocol level (issue #18): sessions that speak Streamlit's own websocket
protocol, as a browser tab does, with no browser on the machine.

What a tab does when it opens a URL, read from Streamlit 1.67 (the frontend's connection manager and
``sendRerunBackMsg``; the server's ``web/server/starlette/starlette_websocket.py``):

1. it loads the page's HTML (behind nginx this response sets the ``loupe_route`` cookie that pins the
   tab to one app process; deploy/nginx/loupe.conf);
2. it opens the websocket ``<base>/_stcore/stream`` with the subprotocols ``streamlit`` and an XSRF
   token (``PLACEHOLDER_AUTH_TOKEN`` when it has none; a third entry, its last session id, only when
   it reconnects); the server creates a session and waits;
3. it sends one ``BackMsg.rerun_script`` whose ClientState holds the URL's query string (without
   "?"), ``page_name`` (the URL path under the app's base: st.navigation picks the page whose
   url_path it is, as ``page_script_hash`` is empty), no widget states and ``context_info``;
4. the server answers with ForwardMsgs: ``new_session`` at the start of each script run, then the
   run's deltas, then ``script_finished`` (``FINISHED_EARLY_FOR_RERUN`` when the script moved to
   another page, e.g. ``st.switch_page``; the next run follows).

A session's *server time* is from before the websocket connect to the last ``script_finished``.
After that, each session fetches its maps from ``/media/`` (with its cookie, so from the process that
rendered them) and compares them byte for byte with the cards drawn from the stored result itself
(``views.figures.overlay_card_png``): every session is checked for its own result, its run key and
model id, and for the absence of exceptions and error messages.

Run ``python -m bench.load`` (defaults: one app process; 20 sequential sessions for one render, a
burst of 20, 50 arrivals over 10 s; a share link and the Explain page with a full selection in its
URL). It stores the runs it opens in a temporary LOUPE_HOME (computed once on the embedded Dask
cluster, which is shut down before any timing), starts the app as it is deployed (no file watcher),
and prints p50/p95 per case with the load average beside each. ``--processes 2`` starts two app
processes behind nginx (deploy/nginx/loupe.conf; needs nginx). tests/test_serving.py drives two
app processes behind nginx with the same client.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SUBPROTOCOLS = ("streamlit", "PLACEHOLDER_AUTH_TOKEN")
"""What the frontend offers when it has no XSRF cookie; the server selects the first."""
ROUTE_COOKIE = "loupe_route"
"""The cookie deploy/nginx/loupe.conf pins a tab to one app process with."""
APP_FLAGS = ("--server.headless", "true", "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false")
"""How an app process runs when it serves a lab (Dockerfile, deploy/compose.yaml): no file watcher,
which would poll every module of the app for changes."""
FINISHED_EARLY_FOR_RERUN = 2
TIMEOUT_S = 180.0


# -- the protocol client ----------------------------------------------------------------------------
@dataclass
class Page:
    """What one script run sent: the text of its markdown, headings, captions and HTML, the media
    URLs of its images in page order, its widgets by user key (the element protos), the Arrow bytes
    of its tables, and every exception or error message."""

    seconds: float = 0.0
    texts: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    widgets: dict[str, Any] = field(default_factory=dict)
    tables: list[bytes] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.texts)

    def table(self, i: int = 0) -> Any:
        """The ``i``-th table or dataframe as a pyarrow Table."""
        import pyarrow as pa

        return pa.ipc.open_stream(self.tables[i]).read_all()


def _add(page: Page, element: Any) -> None:
    """Record one element of a delta in ``page``."""
    kind = element.WhichOneof("type")
    proto = getattr(element, kind)
    if kind in ("markdown", "heading", "html"):
        page.texts.append(proto.body)
    elif kind == "imgs":
        page.images.extend(img.url for img in proto.imgs)
    elif kind == "exception":
        page.errors.append(f"{proto.type}: {proto.message}")
    elif kind == "alert" and proto.format == type(proto).ERROR:
        page.errors.append(proto.body)
    elif kind in ("dataframe", "table") and proto.arrow_data.data:
        page.tables.append(proto.arrow_data.data)
    if getattr(proto, "id", "").startswith("$$ID-"):
        page.widgets[proto.id.split("-", 2)[2]] = proto  # "$$ID-<hash>-<user key>"
        if kind in ("selectbox", "multiselect"):
            page.texts.extend(_chosen(proto))


def _chosen(proto: Any) -> list[str]:
    """The options a selectbox or multiselect shows as chosen."""
    if hasattr(proto, "raw_values"):
        return list(proto.raw_values) if proto.set_value else [proto.options[i] for i in proto.default]
    if proto.set_value and proto.HasField("raw_value"):
        return [proto.raw_value]
    return [proto.options[proto.default]] if proto.HasField("default") and proto.options else []


def widget_state(proto: Any, value: Any) -> Any:
    """A WidgetState that sets the widget ``proto`` to ``value`` as the frontend sends it: text and
    select boxes by their (formatted) string, multiselects by a list of option strings, a button
    press by ``True``."""
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    state = WidgetState(id=proto.id)
    if isinstance(value, bool):
        state.trigger_value = value
    elif isinstance(value, str):
        state.string_value = value
    else:
        state.string_array_value.data.extend(value)
    return state


class Session:
    """One browser tab's conversation with Loupe: ``open`` a URL (page path and query), ``rerun``
    with widget values, ``media`` fetches what the page shows. ``cookie`` pins the tab to one app
    process behind nginx; without one, the first page load takes the cookie the proxy sets."""

    def __init__(self, base: str, cookie: str | None = None) -> None:
        self.base = base.rstrip("/")
        self.cookie = cookie
        self._socket: Any = None
        self._query = ""
        self._page = ""
        self._states: dict[str, Any] = {}

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._socket is not None:
            await self._socket.close()

    def _headers(self) -> dict[str, str]:
        return {"Cookie": f"{ROUTE_COOKIE}={self.cookie}"} if self.cookie else {}

    async def _get(self, path: str) -> tuple[int, bytes, str | None]:
        """GET ``path`` of the app (through the proxy with this tab's cookie): status, body and the
        route cookie the response sets, if any."""
        def fetch() -> tuple[int, bytes, str | None]:
            request = urllib.request.Request(f"{self.base}{path}", headers=self._headers())
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    return response.status, response.read(), _route_cookie(response.headers.get_all("Set-Cookie"))
            except urllib.error.HTTPError as err:
                return err.code, b"", None
        return await asyncio.to_thread(fetch)

    async def open(self, page: str, query: str | Mapping[str, str] = "") -> Page:
        """Load ``/<page>?<query>`` as a new tab does; the Page's seconds run from the websocket
        connect to the end of the script run."""
        import websockets

        self._page = page
        self._query = query if isinstance(query, str) else urlencode(query)
        status, _, cookie = await self._get(f"/{page}?{self._query}")
        if status != 200:
            raise ConnectionError(f"GET /{page} answered {status}")
        self.cookie = self.cookie or cookie
        started = time.perf_counter()
        self._socket = await websockets.connect(
            f"{self.base.replace('http', 'ws', 1)}/_stcore/stream", subprotocols=list(SUBPROTOCOLS),
            additional_headers=self._headers(), max_size=None, open_timeout=TIMEOUT_S)
        return await self._run(started)

    async def rerun(self, values: Mapping[str, Any], page: Page) -> Page:
        """Set the widgets named by user key in ``values`` (``page``: the run that showed them) and
        rerun, as the frontend does after an interaction; a ``True`` presses a button once."""
        states = {key: widget_state(page.widgets[key], value) for key, value in values.items()}
        self._states.update({k: s for k, s in states.items() if not s.HasField("trigger_value")})  # values stay
        triggers = [s for s in states.values() if s.HasField("trigger_value")]  # a press counts once
        return await self._run(time.perf_counter(), [*self._states.values(), *triggers])

    async def _run(self, started: float, states: Sequence[Any] = ()) -> Page:
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        message = BackMsg()
        client = message.rerun_script
        client.query_string = self._query
        client.page_name = self._page
        client.widget_states.widgets.extend(states)
        client.context_info.timezone = "UTC"
        client.context_info.locale = "en-US"
        client.context_info.url = f"{self.base}/{self._page}?{self._query}"
        await self._socket.send(message.SerializeToString())
        page = Page()
        while True:
            msg = ForwardMsg()
            msg.ParseFromString(await asyncio.wait_for(self._socket.recv(), TIMEOUT_S))
            kind = msg.WhichOneof("type")
            if kind == "new_session":  # a script run starts: what an earlier run sent is replaced
                page = Page()
            elif kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
                _add(page, msg.delta.new_element)
            elif kind == "page_not_found":
                page.errors.append(f"page not found: {msg.page_not_found.page_name}")
            elif kind == "script_finished" and msg.script_finished != FINISHED_EARLY_FOR_RERUN:
                page.seconds = time.perf_counter() - started
                return page

    async def media(self, url: str) -> bytes:
        """The bytes behind a media URL of this session (404: not in the process that serves it)."""
        status, body, _ = await self._get(url if url.startswith("/") else f"/{url}")
        if status != 200:
            raise LookupError(f"{url} answered {status}")
        return body


def _route_cookie(headers: Sequence[str] | None) -> str | None:
    for header in headers or ():
        name, _, rest = header.partition("=")
        if name.strip() == ROUTE_COOKIE:
            return rest.split(";", 1)[0]
    return None


# -- what a session must show ------------------------------------------------------------------------
@dataclass(frozen=True)
class Link:
    """A URL of a stored result and what its page must show: the run's key and model id, and the
    PNG bytes of its maps in page order."""

    name: str
    page: str
    query: str
    key: str
    model: str
    maps: tuple[bytes, ...]


def expected_maps(key: str, shown: int = 6, opacity: float = 0.6) -> tuple[bytes, ...]:
    """The map cards a page draws for the first ``shown`` samples of the stored run ``key``, drawn
    here from the store by the same function the page uses."""
    import loupe
    from views.figures import overlay_card_png

    res = loupe.run(key)
    data = loupe.dataset(res.provenance["dataset_id"])
    ids = [int(i) for i in res.sample_ids[:shown]]
    images = data.inputs(ids).numpy()
    return tuple(overlay_card_png(images[i], res.attributions[i], opacity) for i in range(len(ids)))


def share_link(key: str) -> Link:
    """The share link of the stored run ``key`` (``/explain?run=<key>``)."""
    import loupe

    res = loupe.run(key)
    return Link("share link", "explain", urlencode({"run": key}), key, res.provenance["model_id"], expected_maps(key))


def explain_link(key: str) -> Link:
    """The Explain page with the stored run's whole selection in its URL (model, dataset, samples,
    explainer): the page builds its widgets and cost preview and shows the stored results."""
    import loupe

    prov = loupe.run(key).provenance
    query = {"model": prov["model_id"], "dataset": prov["dataset_id"],
             "samples": ",".join(str(int(i)) for i in prov["sample_ids"]), "explainers": prov["explainer_id"]}
    return Link("explain page, full selection", "explain", urlencode(query), key, prov["model_id"], expected_maps(key))


@dataclass
class Outcome:
    """One session: its server time and what was wrong with what it received (empty: all right)."""

    link: Link
    seconds: float
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


async def visit(base: str, link: Link, cookie: str | None = None) -> Outcome:
    """Open ``link`` in a new session and check that it received its own result."""
    from websockets.exceptions import WebSocketException

    try:
        async with Session(base, cookie) as session:
            page = await session.open(link.page, link.query)
            problems = [f"error on the page: {e}" for e in page.errors]
            if link.key not in page.text:
                problems.append(f"the run key {link.key[:12]}… is not on the page")
            if link.model not in page.text:
                problems.append(f"the model id {link.model} is not on the page")
            maps = [await session.media(url) for url in page.images]
            if tuple(maps) != link.maps:
                problems.append(f"maps: {len(maps)} received, {sum(a == b for a, b in zip(maps, link.maps))} of "
                                f"the stored result's {len(link.maps)} among them")
            return Outcome(link, page.seconds, problems)
    except (OSError, LookupError, asyncio.TimeoutError, WebSocketException) as err:
        return Outcome(link, float("nan"), [f"{type(err).__name__}: {err}"])


async def burst(base: str, links: Sequence[Link], n: int) -> list[Outcome]:
    """``n`` sessions at once, cycling through ``links``."""
    return list(await asyncio.gather(*(visit(base, links[i % len(links)]) for i in range(n))))


async def spread(base: str, links: Sequence[Link], n: int, seconds: float) -> list[Outcome]:
    """``n`` sessions arriving evenly over ``seconds`` (one every seconds / n), cycling through ``links``."""
    async def arrive(i: int) -> Outcome:
        await asyncio.sleep(i * seconds / n)
        return await visit(base, links[i % len(links)])
    return list(await asyncio.gather(*(arrive(i) for i in range(n))))


async def one_by_one(base: str, links: Sequence[Link], n: int) -> list[Outcome]:
    """``n`` sessions, each after the previous one ended: the server time of one render."""
    return [await visit(base, links[i % len(links)]) for i in range(n)]


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (a value that was measured)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


# -- the processes ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, timeout: float = 120) -> None:
    """Wait for ``url``'s /_stcore/health to answer "ok"."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not become healthy within {timeout:.0f} s")


def start_app(port: int, home: Path, base_url: str, env: Mapping[str, str] | None = None,
              log: Path | None = None, options: Sequence[str] = ()) -> subprocess.Popen:
    """One Loupe app process on 127.0.0.1:``port`` with LOUPE_HOME=``home``, run as it is deployed
    (``options``: more Streamlit command-line options, which win over the deployed ones)."""
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "LOUPE_HOME": str(home), "LOUPE_BASE_URL": base_url,
               **(env or {})}
    with open(log or os.devnull, "ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                                 "--server.address", "127.0.0.1", *APP_FLAGS, *options], cwd=ROOT, env=environ,
                                stdout=out, stderr=subprocess.STDOUT)


def nginx_binary() -> str | None:
    """Debian's nginx (``apt-get install nginx``), also where /usr/sbin is not on PATH."""
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


NGINX_MAIN = """\
daemon off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {folder}/client_body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    log_format routes '$cookie_loupe_route $upstream_addr $status $request_method $uri';
    access_log {folder}/access.log routes;
    include {folder}/loupe.conf;
}}
"""


@dataclass
class Proxy:
    """nginx in front of app processes, configured by the shipped deploy/nginx/loupe.conf (only its
    ``listen`` line and the upstream list differ, written into a folder of its own). Its access log
    records which app process served each request, by route cookie."""

    url: str
    folder: Path
    process: subprocess.Popen

    def served_by(self, cookie: str) -> str:
        """The upstream (host:port) that serves a tab with this route cookie."""
        with urllib.request.urlopen(urllib.request.Request(
                f"{self.url}/_stcore/health", headers={"Cookie": f"{ROUTE_COOKIE}={cookie}"}), timeout=10):
            pass
        deadline = time.monotonic() + 5  # nginx writes the log line after the response has gone
        while time.monotonic() < deadline:
            for line in reversed((self.folder / "access.log").read_text().splitlines()):
                route, upstream, *_ = line.split()
                if route == cookie:
                    return upstream
            time.sleep(0.01)
        raise LookupError(f"nginx logged no request with route {cookie}")

    def cookies(self, upstreams: Sequence[str], tries: int = 64) -> dict[str, str]:
        """A route cookie for each of ``upstreams`` (host:port), found by asking the proxy."""
        found: dict[str, str] = {}
        for i in range(tries):
            found.setdefault(self.served_by(f"route-{i}"), f"route-{i}")
            if all(u in found for u in upstreams):
                return {u: found[u] for u in upstreams}
        raise LookupError(f"no route cookie reached {sorted(set(upstreams) - set(found))} in {tries} tries")


def proxy_config(port: int, app_ports: Sequence[int], folder: Path) -> list[str]:
    """Write an nginx configuration into ``folder`` that serves the shipped deploy/nginx/loupe.conf on
    127.0.0.1:``port`` (its one ``listen 80;`` line changed) in front of the app processes on
    ``app_ports`` (in place of loupe-upstreams.inc's compose services), after checking it with
    ``nginx -t``; returns the command that runs it. RuntimeError when nginx is missing or refuses it."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is not installed (Debian: apt-get install nginx)")
    folder.mkdir(parents=True, exist_ok=True)
    shipped = (ROOT / "deploy" / "nginx" / "loupe.conf").read_text()
    if shipped.count("    listen 80;\n") != 1:
        raise RuntimeError("deploy/nginx/loupe.conf must have exactly one `listen 80;` line")
    (folder / "loupe.conf").write_text(shipped.replace("    listen 80;\n", f"    listen 127.0.0.1:{port};\n"))
    (folder / "loupe-upstreams.inc").write_text("".join(f"server 127.0.0.1:{p};\n" for p in app_ports))
    (folder / "nginx.conf").write_text(NGINX_MAIN.format(folder=folder))
    args = [binary, "-p", str(folder), "-c", str(folder / "nginx.conf")]
    checked = subprocess.run([*args, "-t"], capture_output=True, text=True, timeout=30)
    if checked.returncode != 0:
        raise RuntimeError(f"nginx refused the configuration: {checked.stderr.strip()}")
    return args


def start_proxy(port: int, app_ports: Sequence[int], folder: Path) -> Proxy:
    """nginx on 127.0.0.1:``port`` in front of the app processes on ``app_ports`` (:func:`proxy_config`)."""
    process = subprocess.Popen(proxy_config(port, app_ports, folder), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url)
    return Proxy(url, folder, process)


def stop(processes: Sequence[subprocess.Popen]) -> None:
    """Terminate ``processes`` (killed after 30 s)."""
    for proc in processes:
        proc.terminate()
    for proc in processes:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@dataclass(frozen=True)
class Served:
    """Running app processes: the URL a browser opens (nginx's when there are several), each
    process's own URL and its pid."""

    url: str
    apps: tuple[str, ...]
    pids: tuple[int, ...]

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the app processes have used so far, from /proc."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in self.pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        return total / ticks


@contextlib.contextmanager
def serving(home: Path, processes: int, folder: Path, options: Sequence[str] = ()) -> Iterator[Served]:
    """``processes`` app processes on ``home`` (behind nginx when more than one), with Streamlit's
    command-line ``options`` added."""
    ports = [free_port() for _ in range(processes)]
    proxy_port = free_port() if processes > 1 else ports[0]
    base = f"http://127.0.0.1:{proxy_port}"
    apps = [start_app(p, home, base, log=folder / f"app-{p}.log", options=options) for p in ports]
    started = list(apps)
    try:
        for p in ports:
            wait_healthy(f"http://127.0.0.1:{p}")
        if processes > 1:
            started.append(start_proxy(proxy_port, ports, folder / "nginx").process)
        yield Served(base, tuple(f"http://127.0.0.1:{p}" for p in ports), tuple(a.pid for a in apps))
    finally:
        stop(started)


# -- the bench ----------------------------------------------------------------------------------------
def prepare(home: Path, runs: int = 5) -> list[str]:
    """Store ``runs`` saliency runs of 4 shapes images each in ``home`` (on the embedded cluster,
    shut down afterwards so that no worker process competes with the server) and return their keys."""
    os.environ["LOUPE_HOME"] = str(home)
    import loupe
    from worker.cluster import shutdown

    try:
        return [loupe.explain("shapes_cnn", "shapes", f"{s}:{s + 4}", "saliency").key
                for s in range(500, 500 + 4 * runs, 4)]
    finally:
        shutdown()


def load_average() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def report(case: str, pattern: str, outcomes: Sequence[Outcome], cpu: float,
           goal: tuple[str, float] | None = None) -> str:
    """One line: p50/p95/max server time, sessions checked, the app processes' CPU time per session
    (``cpu``: their CPU seconds over the measurement), the goal and whether it held, the load."""
    seconds = [o.seconds for o in outcomes if o.ok]
    bad = [o for o in outcomes if not o.ok]
    line = f"{case:<30} {pattern:<18} {len(outcomes):>3} sessions, {len(outcomes) - len(bad):>3} right"
    if seconds:
        line += (f"  p50 {percentile(seconds, 50) * 1000:5.0f} ms  p95 {percentile(seconds, 95) * 1000:5.0f} ms"
                 f"  max {max(seconds) * 1000:5.0f} ms")
    line += f"  server CPU {cpu / len(outcomes) * 1000:4.0f} ms/session"
    if goal:
        name, limit = goal
        value = percentile(seconds, 50 if name == "p50" else 95) if seconds and not bad else float("inf")
        line += f"  goal {name} ≤ {limit * 1000:.0f} ms: {'holds' if value <= limit else 'MISSED'}"
    line += f"  ({load_average()})"
    for o in bad[:3]:
        line += f"\n    {o.link.name}: {'; '.join(o.problems)}"
    return line


GOALS = {"one": ("p50", 0.080), "burst": ("p95", 2.0), "spread": ("p95", 1.0)}
"""Issue #18's goals for the share link on the 2-core machine: one stored render ≤ 80 ms (the median
of sessions one at a time), a burst of 20 p95 < 2 s, 50 arrivals over 10 s p95 < 1 s."""


async def measure(served: Served, cases: Mapping[str, list[Link]], args: argparse.Namespace) -> None:
    """Each case: a first session per process (not timed against a goal: the first one imports the
    app's libraries), then one at a time, a burst and spread arrivals, with a pause between."""
    async def timed(sessions: Awaitable[list[Outcome]]) -> tuple[list[Outcome], float]:
        cpu = served.cpu_seconds()
        outcomes = await sessions
        return outcomes, served.cpu_seconds() - cpu

    for c, (name, links) in enumerate(cases.items()):
        for app in served.apps:
            first = await visit(app, links[0])
            what = "first after start" if c == 0 else "first of its page"
            print(f"{name:<30} {what:<18}   1 session, {'  1' if first.ok else '  0'} right  "
                  f"{first.seconds * 1000:5.0f} ms  ({load_average()})", flush=True)
        goals = GOALS if name == "share link" else {}
        patterns = {"one": ("one at a time", args.repeat, lambda: one_by_one(served.url, links, args.repeat)),
                    "burst": (f"burst of {args.sessions}", args.sessions, lambda: burst(served.url, links, args.sessions)),
                    "spread": (f"{args.arrivals} over {args.over:g} s", args.arrivals,
                               lambda: spread(served.url, links, args.arrivals, args.over))}
        for key, (pattern, n, sessions) in patterns.items():
            if n > 0:
                outcomes, cpu = await timed(sessions())
                print(report(name, pattern, outcomes, cpu, goals.get(key)), flush=True)
                await asyncio.sleep(args.pause)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=1, help="app processes (more than one: behind nginx)")
    parser.add_argument("--sessions", type=int, default=20, help="sessions in the burst")
    parser.add_argument("--arrivals", type=int, default=50, help="sessions spread over --over seconds")
    parser.add_argument("--over", type=float, default=10.0, help="seconds the arrivals are spread over")
    parser.add_argument("--repeat", type=int, default=20, help="sessions one after another (one render)")
    parser.add_argument("--pause", type=float, default=2.0, help="seconds between measurements")
    parser.add_argument("--cases", default="share,explain", help="share, explain or both")
    parser.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                        help="a Streamlit option for the app processes, e.g. server.fileWatcherType=auto (repeatable)")
    args = parser.parse_args(argv)
    if any("=" not in o for o in args.set):
        parser.error("--set takes OPTION=VALUE, e.g. runner.postScriptGC=true")
    options = [part for o in args.set for part in (f"--{o.split('=', 1)[0]}", o.split("=", 1)[1])]
    with tempfile.TemporaryDirectory(prefix="loupe-load-") as tmp:
        folder = Path(tmp)
        home = folder / "home"
        print(f"storing the runs the sessions open… ({load_average()})", flush=True)
        keys = prepare(home)
        builders = {"share": share_link, "explain": explain_link}
        chosen = [c.strip() for c in args.cases.split(",") if c.strip()]
        unknown = [c for c in chosen if c not in builders]
        if unknown:
            parser.error(f"unknown case(s) {unknown}; choose from {list(builders)}")
        cases = {builders[c](keys[0]).name: [builders[c](k) for k in keys] for c in chosen}
        with serving(home, args.processes, folder, options) as served:
            print(f"{args.processes} app process(es){' behind nginx' if args.processes > 1 else ''} at {served.url}, "
                  f"{os.cpu_count()} cores; server time = websocket connect → script_finished"
                  f"{'; ' + ' '.join(options) if options else ''}", flush=True)
            print(f"uptime: {_uptime()}", flush=True)
            asyncio.run(measure(served, cases, args))
            print(f"uptime: {_uptime()}", flush=True)
    return 0


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip() or load_average()


if __name__ == "__main__":
    sys.exit(main())
