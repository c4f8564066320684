#!/usr/bin/env python3
"""Prints docs/RELIABILITY.md's table from the rows the fault suite leaves in
target/release/reliability/ (run `cargo test --release --test faults` first)."""
import json
import pathlib
import sys

ORDER = ["leader-kill9", "leader-sigstop", "leader-cut", "follower-kill9", "follower-sigstop",
         "follower-cut", "reboot", "crash", "crash-all", "remove-while-leader-cut", "remove-while-one-down",
         "majority-lost", "hook-kill-leave", "hook-kill-upgrade",
         "mistake-tls_certificate_lifetime", "mistake-auto_compaction_retention",
         "mistake-corrupt-config-file"]

def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/release/reliability")
    rows = {p.stem: json.loads(p.read_text()) for p in sorted(root.glob("*.json"))}
    names = [n for n in ORDER if n in rows] + sorted(set(rows) - set(ORDER))
    print("| fault | writes acknowledged | lost | longest write gap | back to all members healthy |")
    print("|---|---:|---:|---:|---:|")
    for n in names:
        r = rows[n]
        print(f"| {r['fault']} | {r['acked']} | {r['lost']} | {r['longest_gap_s']:.1f} s | {r['back_s']:.1f} s |")

if __name__ == "__main__":
    main()
