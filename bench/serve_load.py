#!/usr/bin/env python3
"""Load generator for `rar serve` (standard library only): K concurrent clients, each sending
POST /v1/generate requests of 1-8 images (random classes, guidance on) back to back for a while;
prints one markdown row: throughput (images/s), request latency p50/p99, and the GPU batch fill
read from the server's /metrics (rows per batch).

    bench/serve_load.py --url http://127.0.0.1:8080 --clients 32 --seconds 60 [--min-images 1 --max-images 8]

`--clients 1 --min-images 1 --max-images 1` measures one-request-at-a-time serving (and, on an idle
server, single-image latency).
"""
import argparse
import json
import random
import re
import statistics
import threading
import time
import urllib.request


def metric(text, name):
    m = re.search(r"^" + re.escape(name) + r" ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=60)
    # each client stops after this many requests (0: none): the same seeded request sizes every run,
    # so rows of one client compare across runs whatever their length
    ap.add_argument("--requests", type=int, default=0)
    ap.add_argument("--min-images", type=int, default=1)
    ap.add_argument("--max-images", type=int, default=8)
    ap.add_argument("--cfg", type=float, default=4.0)
    ap.add_argument("--label", default="")
    a = ap.parse_args()

    info = json.load(urllib.request.urlopen(a.url + "/v1/info"))
    classes = info["classes"]
    before = urllib.request.urlopen(a.url + "/metrics").read().decode()
    lat, images, errors = [], [0], [0]
    lock = threading.Lock()
    stop_at = time.time() + a.seconds

    def client(k):
        rng = random.Random(k)
        sent = 0
        while time.time() < stop_at and (a.requests == 0 or sent < a.requests):
            sent += 1
            n = rng.randint(a.min_images, a.max_images)
            body = json.dumps({"class": rng.randrange(classes), "n": n, "cfg": a.cfg, "seed": rng.randrange(1 << 30)})
            req = urllib.request.Request(a.url + "/v1/generate", body.encode(), {"Content-Type": "application/json"})
            t0 = time.time()
            try:
                with urllib.request.urlopen(req, timeout=600) as r:
                    got = len(json.load(r)["images"])
                with lock:
                    lat.append(time.time() - t0)
                    images[0] += got
            except Exception:
                with lock:
                    errors[0] += 1
                time.sleep(0.1)

    t0 = time.time()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - t0
    after = urllib.request.urlopen(a.url + "/metrics").read().decode()
    rows = metric(after, "rar_batch_rows_sum") - metric(before, "rar_batch_rows_sum")
    batches = metric(after, "rar_batch_rows_count") - metric(before, "rar_batch_rows_count")
    lat.sort()
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")
    print("| label | clients | images/request | requests | images/s | p50 s | p99 s | rows/batch | errors |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {a.label} | {a.clients} | {a.min_images}-{a.max_images} | {len(lat)} | {images[0] / wall:.1f} | "
          f"{p(0.5):.3f} | {p(0.99):.3f} | {rows / max(batches, 1):.1f} | {errors[0]} |")


if __name__ == "__main__":
    main()
