#!/usr/bin/env python3
"""Turns the harness's JSON lines into one table (with Tollgate/nginx ratios) and a JSON file."""

import json
import sys


def load(path):
    """Rows by (scenario, target). A phase run several times keeps its median-throughput run."""
    runs = {}
    with open(path) as handle:
        for line in handle:
            row = json.loads(line)
            runs.setdefault((row["scenario"], row["target"]), []).append(row)
    rows = {}
    for key, group in runs.items():
        group.sort(key=lambda r: r.get("result", {}).get("throughput_rps", 0))
        rows[key] = dict(group[(len(group) - 1) // 2], rounds=len(group))
    return rows


def ratio(a, b):
    return f"{a / b:.2f}" if b else "-"


def main(path):
    rows = load(path)
    summary = {"source": path, "scenarios": {}}
    scenarios = sorted({s for s, _ in rows}, key=lambda s: list(dict.fromkeys(k for k, _ in rows)).index(s))
    machine = rows.get(("machine", "-"))
    if machine:
        summary["machine"] = {k: v for k, v in machine.items() if k not in ("scenario", "target", "rounds")}
        print(f"machine: {machine['cores']} cores, {machine['cpu']}, kernel {machine['kernel']}, "
              f"{machine['nginx']}, tollgate {machine['tollgate_commit']}")
    print()
    print(f"{'scenario':<16}{'target':<10}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}{'+p99 ms':>9}{'req/s':>10}{'cpu s/1k':>10}{'errors':>8}  notes")
    for scenario in scenarios:
        if scenario in ("machine", "idle_rss", "peak_rss", "idle_streams"):
            continue
        direct = rows.get((scenario, "direct"), {}).get("result", {})
        stream = "ttft" in direct
        key = "ttft" if stream else "latency"
        entry = {}
        for target in ("direct", "tollgate", "nginx"):
            row = rows.get((scenario, target))
            if not row:
                continue
            result = row["result"]
            lat = result[key]
            added = lat["p99_ms"] - direct[key]["p99_ms"]
            ok = result["requests"] - result["errors"]
            cpu_per_k = row["cpu_seconds"] / ok * 1000 if ok and target != "direct" else None
            notes = ""
            if stream:
                notes = f"ttft; mismatched={result['event_count_mismatches']} coalesced_frames={result['coalesced_frames']}"
            entry[target] = {
                "p50_ms": lat["p50_ms"], "p99_ms": lat["p99_ms"], "p999_ms": lat["p999_ms"],
                "added_p99_ms": added if target != "direct" else 0.0,
                "throughput_rps": result["throughput_rps"], "cpu_s_per_1k": cpu_per_k,
                "errors": result["errors"], "result": result,
            }
            cpu = f"{cpu_per_k:.4f}" if cpu_per_k is not None else "-"
            print(f"{scenario:<16}{target:<10}{lat['p50_ms']:>9.3f}{lat['p99_ms']:>9.3f}{lat['p999_ms']:>10.3f}"
                  f"{added if target != 'direct' else 0:>9.3f}{result['throughput_rps']:>10.0f}{cpu:>10}{result['errors']:>8}  {notes}")
        t, n = entry.get("tollgate"), entry.get("nginx")
        if t and n:
            entry["ratios_tollgate_over_nginx"] = {
                "added_p99": t["added_p99_ms"] / n["added_p99_ms"] if n["added_p99_ms"] > 0 else None,
                "throughput": t["throughput_rps"] / n["throughput_rps"],
                "cpu_per_1k": t["cpu_s_per_1k"] / n["cpu_s_per_1k"] if n["cpu_s_per_1k"] else None,
            }
            print(f"{'':<16}{'T/N':<10}{'':>9}{ratio(t['p99_ms'], n['p99_ms']):>9}{'':>10}"
                  f"{ratio(t['added_p99_ms'], n['added_p99_ms']) if n['added_p99_ms'] > 0 else '-':>9}"
                  f"{ratio(t['throughput_rps'], n['throughput_rps']):>10}"
                  f"{ratio(t['cpu_s_per_1k'], n['cpu_s_per_1k']):>10}")
        summary["scenarios"][scenario] = entry
    print()
    memory = {}
    for target in ("tollgate", "nginx"):
        idle = rows.get(("idle_rss", target), {}).get("rss_kb", 0) / 1024
        held = rows.get(("idle_streams", target), {})
        streams = held.get("result", {})
        peak = rows.get(("peak_rss", target), {}).get("rss_kb", 0) / 1024
        memory[target] = {"idle_rss_mb": idle, "rss_with_streams_mb": held.get("rss_kb", 0) / 1024,
                          "streams_opened": streams.get("opened"), "streams_still_open": streams.get("still_open"),
                          "peak_rss_mb": peak}
        print(f"memory {target:<9} idle {idle:6.1f} MB   with {streams.get('opened')} open streams "
              f"{held.get('rss_kb', 0) / 1024:6.1f} MB (still open after hold: {streams.get('still_open')})   peak {peak:6.1f} MB")
    summary["memory"] = memory
    target_json = path[: -len(".jsonl")] + ".json" if path.endswith(".jsonl") else path + ".json"
    with open(target_json, "w") as handle:
        json.dump(summary, handle, indent=2)
    print(f"\nwritten: {target_json}")


if __name__ == "__main__":
    main(sys.argv[1])
