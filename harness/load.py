"""Locust load generator, run as its own process inside the client namespace:

    ip netns exec <client-ns> python -m harness.load --scenario http-chain --host URL ...

Locust runs as a library (``Environment(...).create_local_runner()``) at a fixed
offered rate (``constant_throughput``). Each request carries a unique
``x-request-id`` and a fresh W3C ``traceparent``; the raw latency of every
request, taken from the ``events.request`` hook, goes to a CSV file, because
Locust's own percentiles are rounded to two significant digits.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import random
import secrets
import time

LATENCY_FIELDS = ["request_id", "trace_id", "span_id", "method", "path", "status", "ok",
                  "start_unix_ns", "latency_us"]
SCENARIOS = ("http-chain", "stress", "grpc", "mixed", "http-chain-tls", "overload", "soak",
             "go-chain")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m harness.load", description=__doc__)
    ap.add_argument("--scenario", choices=SCENARIOS, required=True)
    ap.add_argument("--host", required=True, help="http://ADDR:PORT, or ADDR:PORT for grpc")
    ap.add_argument("--rps", type=float, required=True, help="offered requests per second")
    ap.add_argument("--users", type=int, default=0, help="0: derived from --rps")
    ap.add_argument("--duration", type=float, required=True)
    ap.add_argument("--requests", type=int, default=0,
                    help="stop after exactly this many requests (0: run for --duration)")
    ap.add_argument("--tag", required=True, help="prefix of every x-request-id")
    ap.add_argument("--latencies", required=True, help="CSV of raw per-request latencies")
    ap.add_argument("--summary", required=True, help="JSON summary of the load run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reconnect-every", type=int, default=0, metavar="N",
                    help="stress users open a new connection every N requests (0: keep-alive)")
    return ap.parse_args(argv)


def users_for(rps: float, scenario: str) -> int:
    # Enough users that each stays well below its own latency-bound ceiling,
    # few enough that gevent scheduling overhead stays small.
    per_user = 400.0 if scenario in ("stress", "overload", "soak") else 25.0
    return max(2, min(200, math.ceil(rps / per_user)))


def main(argv=None) -> int:
    args = parse_args(argv)
    # Imported here: locust monkey-patches the standard library with gevent on import.
    import gevent
    from locust import FastHttpUser, User, constant_throughput, task
    from locust.env import Environment
    from locust.exception import StopUser

    logging.basicConfig(level=logging.WARNING, format="load: %(levelname)s %(message)s")
    rng = random.Random(args.seed)
    users = args.users or users_for(args.rps, args.scenario)
    per_user_rate = args.rps / users
    state = {"issued": 0, "completed": 0, "failures": 0}
    rows: list[tuple] = []

    def next_request() -> tuple[str, str, str]:
        if state.get("draining") or (args.requests and state["issued"] >= args.requests):
            raise StopUser()
        state["issued"] += 1
        rid = f"{args.tag}-{state['issued']:07d}"
        return rid, secrets.token_hex(16), secrets.token_hex(8)

    def headers_for(rid: str, trace_id: str, span_id: str) -> dict[str, str]:
        return {"x-request-id": rid, "traceparent": f"00-{trace_id}-{span_id}-01"}

    class ChainUser(FastHttpUser):
        """http-chain and mixed: item lookups (some 404) and order inserts."""

        wait_time = constant_throughput(per_user_rate)
        host = args.host

        @task
        def one(self) -> None:
            rid, trace_id, span_id = next_request()
            ctx = {"rid": rid, "trace_id": trace_id, "span_id": span_id}
            hdrs = headers_for(rid, trace_id, span_id)
            if rng.random() < 0.8:
                item = rng.randint(1, 110)  # ids > 100 do not exist: 404
                ctx.update(method="GET", path=f"/api/items/{item}")
                with self.client.get(ctx["path"], headers=hdrs, name="/api/items/:id",
                                     context=ctx, catch_response=True) as resp:
                    if resp.status_code in (200, 404):
                        resp.success()
            else:
                ctx.update(method="POST", path="/api/orders")
                self.client.post(ctx["path"], headers=hdrs, context=ctx,
                                 json={"item_id": rng.randint(1, 100), "qty": 1})

    class StressUser(FastHttpUser):
        wait_time = constant_throughput(per_user_rate)
        host = args.host

        @task
        def one(self) -> None:
            rid, trace_id, span_id = next_request()
            ctx = {"rid": rid, "trace_id": trace_id, "span_id": span_id,
                   "method": "GET", "path": "/ping"}
            self.client.get("/ping", headers=headers_for(rid, trace_id, span_id), context=ctx)
            self.sent = getattr(self, "sent", 0) + 1
            if args.reconnect_every and self.sent % args.reconnect_every == 0:
                self.client.client.clientpool.close()  # the next request connects anew

    user_cls: type[User]
    if args.scenario == "grpc":
        from harness.grpc_user import make_grpc_user

        user_cls = make_grpc_user(args.host, per_user_rate, rng, next_request)
    elif args.scenario in ("stress", "overload", "soak"):
        user_cls = StressUser
    else:
        user_cls = ChainUser

    env = Environment(user_classes=[user_cls], host=args.host, stop_timeout=3)

    @env.events.request.add_listener
    def on_request(request_type, name, response_time, response_length, response=None,
                   context=None, exception=None, start_time=None, **_kw) -> None:
        ctx = context or {}
        status = getattr(response, "status_code", None)
        if status is None:
            status = ctx.get("status")
        ok = exception is None
        state["completed"] += 1
        state["failures"] += 0 if ok else 1
        start_ns = int(start_time * 1e9) if start_time else time.time_ns()
        rows.append((ctx.get("rid"), ctx.get("trace_id"), ctx.get("span_id"),
                     ctx.get("method", request_type), ctx.get("path", name), status,
                     int(ok), start_ns, round(response_time * 1000.0, 1)))

    runner = env.create_local_runner()
    t0 = time.time()

    def watchdog() -> None:
        # Stop on the exact request count (all answered) or on the duration;
        # a generous cap keeps a count-limited run bounded if requests hang.
        cap = args.duration if not args.requests else max(args.duration, 30.0)
        while True:
            gevent.sleep(0.02)
            elapsed = time.time() - t0
            if args.requests and state["completed"] >= args.requests:
                break
            if elapsed >= cap:
                break
        # Issue nothing new, let requests in flight finish, so the load file and
        # the servers' ground truth describe the same requests.
        state["draining"] = True
        drain_until = time.time() + 3.0
        while state["completed"] < state["issued"] and time.time() < drain_until:
            gevent.sleep(0.01)
        state["end"] = time.time()
        runner.quit()

    runner.start(users, spawn_rate=min(max(users * 20, 20), 100))
    gevent.spawn(watchdog)
    runner.greenlet.join()
    t1 = state.get("end", time.time())

    with open(args.latencies, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(LATENCY_FIELDS)
        w.writerows(rows)
    summary = {
        "scenario": args.scenario, "users": users, "offered_rps": args.rps,
        "requests": state["completed"], "issued": state["issued"],
        "failures": state["failures"], "start_unix": t0, "end_unix": t1,
        "duration_s": t1 - t0, "cpu_warning": bool(getattr(runner, "cpu_warning_emitted", False)),
    }
    with open(args.summary, "w") as fh:
        json.dump(summary, fh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
