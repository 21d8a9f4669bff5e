#!/usr/bin/env python3
"""Deterministic event stream for the "funnel" benchmark workload (docs/workload.md).

    python3 gen_events.py --contacts 100000 --seed 7 > events.jsonl

Every contact walks the welcome flow and, for most, the cart-recovery flow; a few opt out.
Contacts start staggered, so their events interleave in the stream, which is sorted by time.
"""
import argparse
import heapq
import json
import random
import sys
from datetime import datetime, timedelta, timezone

BASE = datetime(2026, 11, 24, 8, 0, 0, tzinfo=timezone.utc)
NAMES = ["Ana", "Mihai", "Ioana", "Andrei", "Elena", "Radu", "Maria", "Vlad", "Sofia", "Luca"]
CHANNELS = ["instagram", "whatsapp", "messenger"]
PRODUCTS = ["Trail Runner 2", "Storm Jacket", "City Sneaker", "Down Parka"]


def contact_events(i, rng):
    """Yield (seconds_from_base, event_without_id) for contact i."""
    c = f"c{i}"
    ch = rng.choice(CHANNELS)
    t = i * 0.05  # a new contact every 50 ms of simulated time
    out = []

    def at(dt, ev):
        nonlocal t
        t += dt
        ev.setdefault("contact", c)
        out.append((t, ev))

    if rng.random() < 0.8:
        at(0, {"channel": ch, "type": "consent", "purpose": "marketing", "granted": True,
               "source": "signup-form", "wording": "Send me offers in DMs"})
    at(1, {"channel": ch, "type": "message", "text": "hi", "profile": {"first_name": rng.choice(NAMES)}})
    stop_early = rng.random() < 0.02
    if stop_early:
        at(20, {"channel": ch, "type": "message", "text": "STOP"})
    r = rng.random()
    if r < 0.5:
        at(15, {"channel": ch, "type": "message", "text": "1"})
        if rng.random() < 0.1:
            at(10, {"channel": ch, "type": "message", "text": "shoes?"})
        at(12, {"channel": ch, "type": "message", "text": rng.choice(["A", "b", "a."])})
        at(30, {"channel": ch, "type": "message", "text": rng.choice(["under 100", "about 150 lei", "cheap"])})
    elif r < 0.8:
        at(15, {"channel": ch, "type": "message", "text": "2"})
        at(25, {"channel": ch, "type": "message", "text": str(rng.randint(10000, 9999999))})
        at(600, {"type": "agent", "action": "released", "agent": "a1"})
    if rng.random() < 0.6:
        at(300, {"type": "event", "name": "cart.abandoned",
                 "data": {"product_name": rng.choice(PRODUCTS), "cart_url": f"https://acme.example/c/{i}"}})
        r2 = rng.random()
        if r2 < 0.1:
            at(1800, {"type": "event", "name": "order.placed",
                      "data": {"order_id": str(rng.randint(10000, 99999)), "total": rng.randint(50, 500)}})
        elif r2 < 0.15:
            at(4000, {"channel": ch, "type": "message", "text": "agent"})
    if not stop_early and rng.random() < 0.01:
        at(5000, {"channel": ch, "type": "message", "text": "stop"})
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--contacts", type=int, default=10000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--tick", type=int, default=300, help="seconds between tick events")
    a = p.parse_args()
    rng = random.Random(a.seed)
    streams = [contact_events(i, rng) for i in range(a.contacts)]
    merged = heapq.merge(*streams, key=lambda te: te[0])
    w = sys.stdout.write
    n = 0
    next_tick = a.tick
    last = 0.0
    for t, ev in merged:
        while next_tick <= t:
            n += 1
            w(json.dumps({"id": f"e{n}", "at": iso(next_tick), "type": "tick"}, separators=(",", ":")) + "\n")
            next_tick += a.tick
        n += 1
        w(json.dumps({"id": f"e{n}", "at": iso(t), **ev}, separators=(",", ":")) + "\n")
        last = t
    # let every timer of the workload (24h at most) come due
    end = last + 25 * 3600
    while next_tick <= end:
        n += 1
        w(json.dumps({"id": f"e{n}", "at": iso(next_tick), "type": "tick"}, separators=(",", ":")) + "\n")
        next_tick += max(a.tick, 3600)


def iso(seconds):
    ts = BASE + timedelta(seconds=seconds)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


if __name__ == "__main__":
    main()
