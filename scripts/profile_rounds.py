#!/usr/bin/env python3
"""CPU per message of each variant of a profiled bench run, by where it went.

    scripts/profile_rounds.py PROFILE_OUT

Reads what `scripts/profile` left in PROFILE_OUT: `progress.txt` (the bench's progress
lines, one per finished round, each stamped with seconds since the bench started) and
`perf.data`. Each round's window runs from the previous progress line to its own; every
sample in the window (the bench's threads and the private redis-server alike) is charged
to that round's variant. A flat profile mixes the variants, because they run in the same
process in alternating rounds; this separates them.

Prints one table per case: for each variant, the messages its rounds handled, the CPU
milliseconds sampled in them, and the microseconds of CPU per message, split into the
redis-server process, the kernel (on the bench's threads), the hub (`pubsub_hub`),
redis-rs (`redis`, `combine`), fred (`fred`, `redis_protocol`), tokio, the allocator
and libc, and everything else; then, for each of the hub's variants, the hub functions
that took the most. Messages are subscribers x messages published (what the
clients received from Redis, including what a consumer later dropped to lag) for fan-out
rounds, publishes for publish rounds; other scenarios are skipped.

The round windows include each round's set-up (subscribing, warming up), which is small
next to a full-size round. The bench's clock starts well after its process does (most of a
second later), and its first act is starting the private redis-server, so t = 0 is taken
as the first sample of a `redis-*` thread; samples before it are not counted.
"""

import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

# "[  13.5s] fanout: 1 subscriber(s) x 1000000 messages, hub (dedicated) (round 1): ..."
FANOUT = re.compile(
    r"^\[\s*([0-9.]+)s\] fanout: (\d+) subscriber\(s\) x (\d+) messages, (.+?) \(round \d+\):"
)
# "[   6.1s] publish: 1 in flight, hub (dedicated) (round 1): 8,334 msg/s (25004 in 3.00s)"
PUBLISH = re.compile(
    r"^\[\s*([0-9.]+)s\] publish: (\d+) in flight, (.+?) \(round \d+\): .*\((\d+) in [0-9.]+s\)"
)
OTHER = re.compile(r"^\[\s*([0-9.]+)s\] ")

PARTS = ["redis-server", "kernel", "hub", "redis-rs", "fred", "tokio", "alloc+libc", "other"]


def rounds(progress):
    """(start, end, case, variant, messages) per round; None for other progress lines."""
    out, last = [], 0.0
    for line in progress.read_text().splitlines():
        m = FANOUT.match(line)
        if m:
            t, subs, msgs, variant = float(m[1]), int(m[2]), int(m[3]), m[4]
            out.append((last, t, f"fanout {subs} subscriber(s)", variant, subs * msgs))
            last = t
            continue
        m = PUBLISH.match(line)
        if m:
            t, inflight, variant, msgs = float(m[1]), int(m[2]), m[3], int(m[4])
            out.append((last, t, f"publish {inflight} in flight", variant, msgs))
            last = t
            continue
        m = OTHER.match(line)
        if m:
            last = float(m[1])
    return out


def part(comm, sym, dso):
    if comm.startswith("redis-"):
        return "redis-server"
    if dso.startswith("[kernel"):
        return "kernel"
    # The first crate named that is not the standard library's: `core::ptr::drop_in_place<
    # redis::…>` is redis-rs's work.
    crates = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)::", sym)
    crate = next((c for c in crates if c not in ("core", "alloc", "std")), crates[0] if crates else None)
    name = crate or ""
    if name == "pubsub_hub":
        return "hub"
    if name in ("redis", "combine"):
        return "redis-rs"
    if name in ("fred", "redis_protocol"):
        return "fred"
    if name in ("tokio", "tokio_util", "mio"):
        return "tokio"
    if name in ("alloc", "core", "std") or not crate:
        return "alloc+libc"
    return "other"


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "target/profile")
    windows = rounds(out / "progress.txt")
    if not windows:
        sys.exit(f"{out}/progress.txt has no fan-out or publish rounds")
    script = subprocess.run(
        ["perf", "script", "-i", str(out / "perf.data"), "-F", "comm,time,ip,sym,dso"],
        capture_output=True, text=True, check=True,
    ).stdout
    # "tokio-rt-worker  1234.567890:  5644f423dff6 pubsub_hub::...  (/path/to/bin)"
    sample = re.compile(r"^\s*(\S.*?)\s+([0-9]+\.[0-9]+):\s+[0-9a-f]+\s+(.*?)\s+\(([^()]*)\)\s*$")
    cpu = defaultdict(lambda: defaultdict(int))
    hub_functions = defaultdict(lambda: defaultdict(int))
    start, total = None, 0
    index = 0
    for line in script.splitlines():
        m = sample.match(line)
        if not m:
            continue
        comm, t, sym, dso = m[1], float(m[2]), m[3], m[4]
        if start is None:
            if not comm.startswith("redis-"):
                continue
            start = t
        t -= start
        while index < len(windows) and t > windows[index][1]:
            index += 1
        if index == len(windows):
            break
        if t > windows[index][0]:
            where = part(comm, sym, dso)
            cpu[index][where] += 1
            if where == "hub":
                hub_functions[index][sym] += 1
            total += 1

    freq = 999
    for line in (out / "meta.txt").read_text().splitlines():
        m = re.search(r"perf record -F (\d+)", line)
        if m:
            freq = int(m[1])
    per_sample_us = 1e6 / freq

    cases = defaultdict(lambda: defaultdict(lambda: [0, defaultdict(int), defaultdict(int)]))
    for i, (_, _, case, variant, messages) in enumerate(windows):
        entry = cases[case][variant]
        entry[0] += messages
        for p, n in cpu[i].items():
            entry[1][p] += n
        for f, n in hub_functions[i].items():
            entry[2][f] += n
    print(f"# CPU per message by variant ({out}, {total} samples in rounds, {freq} Hz)")
    for case, variants in cases.items():
        print(f"\n{case}\n")
        print("| variant | messages | CPU ms | us/msg | " + " | ".join(PARTS) + " |")
        print("| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in PARTS) + " |")
        for variant, (messages, parts, _) in variants.items():
            samples = sum(parts.values())
            us = lambda n: n * per_sample_us / messages
            cells = " | ".join(f"{us(parts[p]):.3f}" for p in PARTS)
            print(
                f"| {variant} | {messages:,} | {samples * per_sample_us / 1000:,.0f} | "
                f"{us(samples):.3f} | {cells} |"
            )
        for variant, (messages, _, functions) in variants.items():
            if not variant.startswith("hub") or not functions:
                continue  # a peer's window holds only strays from a window's edge
            top = sorted(functions.items(), key=lambda kv: -kv[1])[:6]
            listed = ", ".join(f"`{f}` {n * per_sample_us / messages:.3f}" for f, n in top)
            print(f"\n{variant}, the hub's functions (us/msg): {listed}")


if __name__ == "__main__":
    main()
