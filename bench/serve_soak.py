#!/usr/bin/env python3
"""Soak test of `rar serve` at saturation with misbehaving clients mixed in (standard library only).

Starts `rar serve` (or uses --url), then for --minutes runs together:
  - good clients: --good threads sending POST /v1/generate back to back (1-4 images), half of them
    streaming (?stream=1); every request must succeed (200 with its images) or be a 503 "queue is
    full" (counted apart); anything else is a failed good request;
  - /health probes every 0.5 s, each must answer within 100 ms;
  - slowloris: --slow connections trickling header bytes (a byte per second), reopened when cut;
  - header floods: a client streaming header lines without end, again and again;
  - idle connections: --idle sockets that connect and send nothing, reopened when closed;
  - disconnect storms: clients that send a generate request and hang up at once;
  - malformed requests: bad JSON, bad UTF-8, duplicate keys, two Content-Length headers; each must
    be a 400.
Every 5 s it samples the server's RSS and open descriptors (/proc/PID), and prints one line. At
the end: a summary table (RSS and descriptors idle at the start, after --warmup seconds of load
(the engine's buffers per batch size exist by then), at their peak and after the load) and exit
status 1 if a good request failed, /health missed its 100 ms, a malformed request was not a 400,
or RSS / descriptors after the load are not within 64 MiB / 64 of the warm sample.

    bench/serve_soak.py --rar build/rar --generator G --tokenizer T [--device cpu] [--minutes 30]
"""
import argparse
import http.client
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time

stop = threading.Event()
lock = threading.Lock()
stats = {"ok": 0, "busy": 0, "failed": 0, "bad_ok": 0, "bad_wrong": 0, "health_worst": 0.0, "health_miss": 0,
         "health_n": 0, "slow_cut": 0, "floods": 0, "storms": 0}
failures = []


def bump(key, n=1):
    with lock:
        stats[key] += n


def connect(host, port, timeout=10):
    s = socket.create_connection((host, port), timeout=timeout)
    s.settimeout(timeout)
    return s


def good_client(host, port, classes, stream):
    while not stop.is_set():
        body = json.dumps({"classes": [random.randrange(classes) for _ in range(random.randint(1, 4))],
                           "seed": random.randrange(1 << 30)})
        try:
            c = http.client.HTTPConnection(host, port, timeout=300)
            c.request("POST", "/v1/generate" + ("?stream=1" if stream else ""), body,
                      {"Content-Type": "application/json"})
            r = c.getresponse()
            data = r.read()
            c.close()
            if r.status == 503 and b"queue is full" in data:
                bump("busy")
            elif r.status == 200 and (b"event: done" in data if stream else b'"images"' in data):
                bump("ok")
            else:
                bump("failed")
                with lock:
                    failures.append(f"{r.status} {data[:200]!r}")
        except Exception as e:  # noqa: BLE001 - any failure of a good request counts
            bump("failed")
            with lock:
                failures.append(repr(e))


def health_probe(host, port):
    while not stop.is_set():
        t0 = time.monotonic()
        ok = False
        try:
            c = http.client.HTTPConnection(host, port, timeout=5)
            c.request("GET", "/health")
            r = c.getresponse()
            ok = r.status == 200 and r.read() == b"ok\n"
            c.close()
        except Exception:  # noqa: BLE001
            ok = False
        dt = time.monotonic() - t0
        with lock:
            stats["health_n"] += 1
            stats["health_worst"] = max(stats["health_worst"], dt)
            if not ok or dt > 0.1:
                stats["health_miss"] += 1
        time.sleep(0.5)


def slowloris(host, port, n):
    socks = []
    while not stop.is_set():
        while len(socks) < n and not stop.is_set():
            try:
                s = connect(host, port)
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                socks.append(s)
            except OSError:
                time.sleep(0.1)
        alive = []
        for s in socks:
            try:
                s.sendall(b"a")
                alive.append(s)
            except OSError:
                bump("slow_cut")
                s.close()
        socks = alive
        time.sleep(1)
    for s in socks:
        s.close()


def header_flood(host, port):
    line = b"X-Flood: " + b"a" * 1000 + b"\r\n"
    while not stop.is_set():
        try:
            s = connect(host, port)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            for _ in range(4096):  # 4 MB at most: the server must refuse long before
                s.sendall(line)
            s.close()
        except OSError:
            pass
        bump("floods")
        time.sleep(0.2)


def idle(host, port, n):
    socks = []
    while not stop.is_set():
        while len(socks) < n:
            try:
                socks.append(connect(host, port))
            except OSError:
                break
        time.sleep(2)
        alive = []
        for s in socks:
            s.setblocking(False)
            try:
                if s.recv(1) == b"":
                    s.close()
                    continue
            except BlockingIOError:
                pass
            except OSError:
                s.close()
                continue
            alive.append(s)
        socks = alive
    for s in socks:
        s.close()


def storm(host, port, classes):
    while not stop.is_set():
        try:
            s = connect(host, port)
            body = json.dumps({"class": random.randrange(classes), "n": 4}).encode()
            s.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
                      + str(len(body)).encode() + b"\r\n\r\n" + body)
            s.close()
        except OSError:
            pass
        bump("storms")
        time.sleep(0.05)


MALFORMED = [
    b'{"class": 1, "seed": "\xff\xfe"}',
    b'{"class": 1, "class": 2}',
    b'{"class": 1',
    b'{"cfg": 1e39, "class": 1}',
]


def malformed(host, port):
    while not stop.is_set():
        body = random.choice(MALFORMED)
        extra = b"Content-Length: 99\r\n" if random.random() < 0.25 else b""
        try:
            s = connect(host, port)
            s.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
                      b"Content-Length: " + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            s.close()
            bump("bad_ok" if data.startswith(b"HTTP/1.1 400") else "bad_wrong")
        except OSError:
            bump("bad_wrong")
        time.sleep(0.2)


def sample(pid):
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rar", default="build/rar")
    ap.add_argument("--generator", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--good", type=int, default=8)
    ap.add_argument("--slow", type=int, default=400)
    ap.add_argument("--idle", type=int, default=500)
    ap.add_argument("--port", type=int, default=18080)
    ap.add_argument("--warmup", type=float, default=60, help="seconds of load before the reference sample")
    ap.add_argument("--serve-args", default="", help="more arguments for rar serve")
    a = ap.parse_args()

    cmd = [a.rar, "serve", "--generator", a.generator, "--tokenizer", a.tokenizer, "--device", a.device,
           "--port", str(a.port)] + a.serve_args.split()
    log = open("serve_soak.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    host, port = "127.0.0.1", a.port
    for _ in range(600):
        try:
            http.client.HTTPConnection(host, port, timeout=1).request("GET", "/health")
            break
        except OSError:
            time.sleep(0.1)
    c = http.client.HTTPConnection(host, port, timeout=10)
    c.request("GET", "/v1/info")
    info = json.loads(c.getresponse().read())
    classes = info["classes"]

    threads = [threading.Thread(target=health_probe, args=(host, port)),
               threading.Thread(target=slowloris, args=(host, port, a.slow)),
               threading.Thread(target=header_flood, args=(host, port)),
               threading.Thread(target=idle, args=(host, port, a.idle)),
               threading.Thread(target=storm, args=(host, port, classes)),
               threading.Thread(target=malformed, args=(host, port))]
    threads += [threading.Thread(target=good_client, args=(host, port, classes, i % 2 == 1)) for i in range(a.good)]
    first = sample(proc.pid)
    samples = [first]
    warm = None
    for t in threads:
        t.daemon = True
        t.start()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 60 * a.minutes:
        time.sleep(5)
        s = sample(proc.pid)
        samples.append(s)
        if warm is None and time.monotonic() - t0 >= a.warmup:
            warm = s
        with lock:
            print(f"[{time.monotonic() - t0:6.0f} s] rss {s[0] / 1024:7.1f} MiB  fds {s[1]:5d}  good ok {stats['ok']} "
                  f"503 {stats['busy']} failed {stats['failed']}  health worst {stats['health_worst'] * 1000:.0f} ms "
                  f"missed {stats['health_miss']}  400s {stats['bad_ok']}/{stats['bad_ok'] + stats['bad_wrong']}  "
                  f"slow cut {stats['slow_cut']}", flush=True)
    stop.set()
    for t in threads:  # in-flight good requests finish
        t.join(timeout=120)
    time.sleep(15)  # misbehaving connections close; the server settles
    end = sample(proc.pid)
    proc.terminate()
    rc = proc.wait(timeout=30)
    warm = warm or samples[-1]
    peak_rss = max(s[0] for s in samples)
    peak_fds = max(s[1] for s in samples)
    print("\n| | idle | warm (after the warm-up) | peak under load | after the load |\n|---|---|---|---|---|")
    print(f"| RSS MiB | {first[0] / 1024:.1f} | {warm[0] / 1024:.1f} | {peak_rss / 1024:.1f} | {end[0] / 1024:.1f} |")
    print(f"| open descriptors | {first[1]} | {warm[1]} | {peak_fds} | {end[1]} |")
    print(f"\ngood requests: {stats['ok']} ok, {stats['busy']} 503 (queue full), {stats['failed']} failed; "
          f"/health: {stats['health_n']} probes, worst {stats['health_worst'] * 1000:.0f} ms, {stats['health_miss']} over "
          f"100 ms or failed; malformed: {stats['bad_ok']} answered 400, {stats['bad_wrong']} otherwise; slow clients "
          f"cut {stats['slow_cut']}; header floods {stats['floods']}; disconnect storms {stats['storms']}; exit {rc}")
    for f in failures[:10]:
        print("failed:", f)
    bad = (stats["failed"] > 0 or stats["health_miss"] > 0 or stats["bad_wrong"] > 0 or end[0] - warm[0] > 64 * 1024
           or end[1] - first[1] > 64 or rc != 0)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
