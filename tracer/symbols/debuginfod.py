"""A small debuginfod client: separate debug files fetched by build-id.

The protocol is one GET per file: ``<server>/buildid/<hex>/debuginfo``.
Servers come from ``DEBUGINFOD_URLS`` (space separated, as elfutils reads
it); unset or empty: no client, nothing leaves the host. Each server is
asked in turn until one has the file, all within one time limit per fetch
(``DEBUGINFOD_TIMEOUT`` seconds, else 10): the socket timeout is cut to
what is left before every read, so a slow server cannot stretch it.

Files land in the elfutils cache layout, ``<cache>/<build-id>/debuginfo``,
in ``DEBUGINFOD_CACHE_PATH`` (else ``$XDG_CACHE_HOME/debuginfod_client``,
else ``~/.cache/debuginfod_client``), so gdb and the tracer share what
either fetched. The debuginfo files there are kept under a size bound
(``TRACER_DEBUGINFOD_CACHE_MB``, else 1024): the oldest fetched go first. A
file larger than ``DEBUGINFOD_MAXSIZE`` bytes or than the bound is not
fetched. A build-id no server has is asked once per process.

http.client rather than urllib: its socket is reachable (public
``conn.sock``), which the per-read time cut needs; rather than
libdebuginfod through ctypes: its cache has an age bound, not a size
bound, and libcurl's threads and calls are outside what the agent's
seccomp list was measured with. No proxy is used; a host name's DNS lookup
is not under the time limit (a numeric address or /etc/hosts is). The
cache is written with openat, rename and unlink only (no utime, chmod or
rmdir: outside the agent's seccomp list, which kills on them).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import threading
import time
from urllib.parse import urljoin, urlsplit

# The HTTP client (with ssl: about 5 MB resident) only when servers are set.
# Imported with this module, not on first use: `run` imports tracer.symbols
# before it drops privileges, and after the drop the interpreter's own files
# may be out of reach (tracer/cli.py); getaddrinfo encodes host names with idna.
if os.environ.get("DEBUGINFOD_URLS", "").split():
    import encodings.idna  # noqa: F401
    import http.client  # noqa: F401

log = logging.getLogger("tracer.symbols")

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_CACHE_MB = 1024
CHUNK = 1 << 16
MAX_REDIRECTS = 3
MAX_NEGATIVE = 4096  # build-ids remembered as missing on every server
_BUILD_ID = re.compile(r"^[0-9a-f]{2,128}$")
COUNTERS = ("debuginfod_fetched", "debuginfod_cache_hits", "debuginfod_not_found",
            "debuginfod_errors", "debuginfod_timeouts", "debuginfod_too_large",
            "debuginfod_evicted")


class _Stop(Exception):
    """This server cannot give the file (reason in the counter named)."""

    def __init__(self, counter: str, detail: str):
        super().__init__(detail)
        self.counter = counter


class DebuginfodClient:
    def __init__(self, urls: list[str], cache_dir: str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 max_cache_bytes: int = DEFAULT_CACHE_MB << 20,
                 max_file_bytes: int | None = None):
        self.urls = [u for u in urls if urlsplit(u).scheme in ("http", "https")]
        self.cache_dir = cache_dir
        self.timeout_s = timeout_s
        self.max_cache_bytes = max_cache_bytes
        self.max_file_bytes = min(max_file_bytes or max_cache_bytes, max_cache_bytes)
        self.counters = dict.fromkeys(COUNTERS, 0)
        self._missing: set[str] = set()
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, env=None) -> DebuginfodClient | None:
        """The client DEBUGINFOD_URLS asks for; None when it is unset or empty."""
        env = os.environ if env is None else env
        urls = env.get("DEBUGINFOD_URLS", "").split()
        if not urls:
            return None
        cache = env.get("DEBUGINFOD_CACHE_PATH") or os.path.join(
            env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
            "debuginfod_client")
        return cls(urls, cache, timeout_s=_number(env.get("DEBUGINFOD_TIMEOUT"),
                                                  DEFAULT_TIMEOUT_S),
                   max_cache_bytes=int(_number(env.get("TRACER_DEBUGINFOD_CACHE_MB"),
                                               DEFAULT_CACHE_MB)) << 20,
                   max_file_bytes=int(_number(env.get("DEBUGINFOD_MAXSIZE"), 0)) or None)

    def describe(self) -> str:
        return f"debuginfod: {' '.join(self.urls) or 'no http(s) server in DEBUGINFOD_URLS'}"

    # -- the cache ------------------------------------------------------------

    def _path(self, build_id: str) -> str:
        return os.path.join(self.cache_dir, build_id, "debuginfo")

    def cached(self, build_id: str) -> str | None:
        if not _BUILD_ID.match(build_id):
            return None
        path = self._path(build_id)
        return path if os.path.isfile(path) else None

    def discard(self, build_id: str) -> None:
        """Drop a cached file found wrong (its build-id differs)."""
        if _BUILD_ID.match(build_id):
            with contextlib.suppress(OSError):
                os.unlink(self._path(build_id))
            self._missing.add(build_id)

    def cache_entries(self) -> list[tuple[float, int, str]]:
        """(mtime, size, path) of every debuginfo file in the cache, oldest first."""
        out = []
        try:
            it = os.scandir(self.cache_dir)
        except OSError:
            return out
        with it:
            for d in it:
                if not _BUILD_ID.match(d.name):
                    continue
                path = os.path.join(d.path, "debuginfo")
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                out.append((st.st_mtime, st.st_size, path))
        out.sort()
        return out

    def trim(self, keep: str | None = None) -> None:
        """Remove the oldest debuginfo files until the cache fits its bound
        (the file just fetched, `keep`, stays). Files only: utime and rmdir
        are outside the agent's seccomp list, and an empty directory is small."""
        entries = self.cache_entries()
        total = sum(size for _, size, _ in entries)
        for _, size, path in entries:
            if total <= self.max_cache_bytes:
                break
            if path == keep:
                continue
            try:
                os.unlink(path)
            except OSError:
                continue
            total -= size
            self.counters["debuginfod_evicted"] += 1

    # -- fetching ---------------------------------------------------------------

    def fetch(self, build_id: str) -> str | None:
        """The cached debug file of build_id, fetched first if needed; None
        when no server has it in time (counted)."""
        build_id = build_id.lower()
        if not _BUILD_ID.match(build_id):
            return None
        with self._lock:
            hit = self.cached(build_id)
            if hit is not None:
                self.counters["debuginfod_cache_hits"] += 1
                return hit
            if build_id in self._missing or not self.urls:
                return None
            deadline = time.monotonic() + self.timeout_s
            for url in self.urls:
                try:
                    path = self._get(url.rstrip("/") + f"/buildid/{build_id}/debuginfo",
                                     build_id, deadline)
                except _Stop as e:
                    self.counters[e.counter] += 1
                    log.debug("debuginfod %s: %s: %s", url, build_id, e)
                    if e.counter == "debuginfod_too_large":
                        break  # the same file on every server
                    continue
                self.counters["debuginfod_fetched"] += 1
                self.trim(keep=path)
                return path
            if len(self._missing) >= MAX_NEGATIVE:
                self._missing.clear()
            self._missing.add(build_id)
            return None

    def _get(self, url: str, build_id: str, deadline: float) -> str:
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Stop("debuginfod_timeouts", f"no time left for {url}")
            import http.client  # loaded at import when DEBUGINFOD_URLS was set

            cls = (http.client.HTTPSConnection if parts.scheme == "https"
                   else http.client.HTTPConnection)
            try:
                conn = cls(parts.hostname or "", parts.port, timeout=left)
            except (ValueError, http.client.HTTPException) as e:  # a bad port
                raise _Stop("debuginfod_errors", str(e)) from None
            try:
                return self._exchange(conn, parts, build_id, deadline)
            except _Redirect as r:
                url = urljoin(url, r.location)
                if urlsplit(url).scheme not in ("http", "https"):
                    raise _Stop("debuginfod_errors", f"redirect to {url}") from None
            except TimeoutError:
                raise _Stop("debuginfod_timeouts", f"over {self.timeout_s:g} s") from None
            except (OSError, http.client.HTTPException) as e:
                raise _Stop("debuginfod_errors", str(e) or type(e).__name__) from None
            finally:
                conn.close()
        raise _Stop("debuginfod_errors", "too many redirects")

    def _exchange(self, conn, parts, build_id: str, deadline: float) -> str:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request("GET", path, headers={"User-Agent": "tracer-debuginfod",
                                           "Accept-Encoding": "identity"})
        sock = conn.sock  # kept: getresponse() drops it when the server closes

        def cut() -> None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)

        cut()
        resp = conn.getresponse()
        if resp.status in (301, 302, 303, 307, 308) and resp.getheader("Location"):
            raise _Redirect(resp.getheader("Location"))
        if resp.status == 404:
            raise _Stop("debuginfod_not_found", "404")
        if resp.status != 200:
            raise _Stop("debuginfod_errors", f"HTTP {resp.status}")
        length = resp.getheader("Content-Length")
        if length and length.isdigit() and int(length) > self.max_file_bytes:
            raise _Stop("debuginfod_too_large", f"{length} bytes")
        final = self._path(build_id)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(final), prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                total = 0
                while not resp.isclosed():  # closed (socket too) once the body is read
                    cut()
                    chunk = resp.read1(CHUNK)  # one recv: the deadline is checked between
                    if not chunk:
                        break
                    total += len(chunk)
                    if total > self.max_file_bytes:
                        raise _Stop("debuginfod_too_large", f"over {self.max_file_bytes} bytes")
                    f.write(chunk)
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return final


class _Redirect(Exception):
    def __init__(self, location: str):
        super().__init__(location)
        self.location = location


def _number(text: str | None, default: float) -> float:
    try:
        v = float(text) if text else default
    except ValueError:
        return default
    return v if v > 0 else default
