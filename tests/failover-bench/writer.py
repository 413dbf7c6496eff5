#!/usr/bin/env python3
"""The client of the failover benchmark: one writer that keeps writing and follows the leader.

    writer.py rc   TARGETS_FILE OUT   # rc-node: PUT /v1/kv/probe, follows 307 to the leader
    writer.py etcd TARGETS_FILE OUT   # etcd: POST /v3/kv/put through any member

TARGETS_FILE holds `name host:port` lines (re-read every 0.5 s: pod IPs change); a redirect to
`<name>.<service>...:port` (the pod DNS name a follower names, unresolvable outside the cluster)
is followed to that pod's address, as a client inside the cluster would resolve it. Each acknowledged
write appends its completion time (seconds since the Unix epoch) to OUT. Every request has a
0.5 s timeout; after a failure the writer tries the next target, so a dead or hung node costs
at most that. Standard library only. Runs until killed.
"""

import base64
import http.client
import json
import os
import sys
import time

# Per request: a dead or hung node costs the client at most this (WRITER_TIMEOUT_S).
TIMEOUT = float(os.environ.get("WRITER_TIMEOUT_S", "0.25"))


def targets(path):
    """{name: host:port}, in file order."""
    known = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2:
                    known[parts[0]] = parts[1]
    except OSError:
        pass
    return known


def request(addr, method, path, body):
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
    try:
        conn.request(method, path, body=body, headers={"content-type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.getheader("location")
    finally:
        conn.close()


def write_rc(addr, n, known):
    body = json.dumps({"value": str(n)})
    status, location = request(addr, "PUT", "/v1/kv/probe", body)
    if status == 307 and location:
        # http://host:port/v1/kv/probe: the leader, as the follower names it.
        leader = location.split("//", 1)[1].split("/", 1)[0]
        leader = known.get(leader.split(".", 1)[0], leader)
        status, _ = request(leader, "PUT", "/v1/kv/probe", body)
        return status == 200, leader
    return status == 200, addr


def write_etcd(addr, n, _known):
    body = json.dumps(
        {
            "key": base64.b64encode(b"probe").decode(),
            "value": base64.b64encode(str(n).encode()).decode(),
        }
    )
    status, _ = request(addr, "POST", "/v3/kv/put", body)
    return status == 200, addr


def main():
    mode, targets_path, out_path = sys.argv[1], sys.argv[2], sys.argv[3]
    write = write_rc if mode == "rc" else write_etcd
    preferred = None
    known, read_at = {}, 0.0
    n = 0
    with open(out_path, "a", buffering=1) as out:
        while True:
            now = time.time()
            if now - read_at > 0.5:
                known, read_at = targets(targets_path), now
            addresses = list(known.values())
            order = ([preferred] if preferred in addresses else []) + [
                a for a in addresses if a != preferred
            ]
            if not order:
                time.sleep(0.05)
                continue
            for addr in order:
                n += 1
                try:
                    ok, served = write(addr, n, known)
                except (OSError, http.client.HTTPException):
                    ok, served = False, None
                if ok:
                    preferred = served if served in addresses else addr
                    out.write(f"{time.time():.6f}\n")
                    break
            else:
                time.sleep(0.01)


if __name__ == "__main__":
    main()
