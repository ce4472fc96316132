#!/usr/bin/env python3
"""Turns the harness's JSON lines into one table (with Tollgate/nginx ratios) and a JSON file."""

import json
import sys

# Width of the scenario column: fits `closed_64_traced_1pct`.
W = 22


def load(path):
    """Rounds by (scenario, target), in the order they ran."""
    runs = {}
    with open(path) as handle:
        for line in handle:
            row = json.loads(line)
            runs.setdefault((row["scenario"], row["target"]), []).append(row)
    return runs


def median(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def summarize(rounds, direct_rounds, key):
    """Each metric's median over the rounds; added p99 is taken per round against direct's
    p99 of the same round, then the median."""
    def per_round(metric):
        return [metric(row) for row in rounds]

    def cpu_per_1k(row):
        ok = row["result"]["requests"] - row["result"]["errors"]
        return row["cpu_seconds"] / ok * 1000 if ok and row["target"] != "direct" else None

    added = [row["result"][key]["p99_ms"] - d["result"][key]["p99_ms"] for row, d in zip(rounds, direct_rounds)]
    last = rounds[-1]["result"]
    return {
        "rounds": len(rounds),
        "p50_ms": median(per_round(lambda r: r["result"][key]["p50_ms"])),
        "p99_ms": median(per_round(lambda r: r["result"][key]["p99_ms"])),
        "p999_ms": median(per_round(lambda r: r["result"][key]["p999_ms"])),
        "added_p99_ms": median(added) if rounds[0]["target"] != "direct" else 0.0,
        "throughput_rps": median(per_round(lambda r: r["result"]["throughput_rps"])),
        "cpu_s_per_1k": median(per_round(cpu_per_1k)),
        "errors": sum(r["result"]["errors"] for r in rounds),
        "event_count_mismatches": sum(r["result"].get("event_count_mismatches", 0) for r in rounds),
        "coalesced_frames": sum(r["result"].get("coalesced_frames", 0) for r in rounds),
        "last_round": last,
    }


def ratio(a, b):
    return f"{a / b:.2f}" if b else "-"


def main(path):
    runs = load(path)
    rows = {key: group[-1] for key, group in runs.items()}
    summary = {"source": path, "scenarios": {}}
    scenarios = list(dict.fromkeys(s for s, _ in runs))
    machine = rows.get(("machine", "-"))
    if machine:
        summary["machine"] = {k: v for k, v in machine.items() if k not in ("scenario", "target", "rounds")}
        print(f"machine: {machine['cores']} cores, {machine['cpu']}, kernel {machine['kernel']}, "
              f"{machine['nginx']}, tollgate {machine['tollgate_commit']}"
              + (f", OTLP receiver {machine['otlp_receiver']}" if machine.get("otlp_receiver") else ""))
    print()
    print(f"{'scenario':<{W}}{'target':<10}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}{'+p99 ms':>9}{'req/s':>10}{'cpu s/1k':>10}{'errors':>8}  notes")
    for scenario in scenarios:
        if scenario in ("machine", "idle_rss", "peak_rss", "idle_streams"):
            continue
        if scenario.endswith("_routed") or "_traced" in scenario:
            entry = (routed if scenario.endswith("_routed") else traced)(runs, scenario)
            if entry:
                summary["scenarios"][scenario] = entry
            continue
        direct_rounds = runs.get((scenario, "direct"), [])
        if not direct_rounds:
            continue
        stream = "ttft" in direct_rounds[0]["result"]
        key = "ttft" if stream else "latency"
        entry = {}
        for target in ("direct", "tollgate", "nginx"):
            if (scenario, target) not in runs:
                continue
            m = summarize(runs[(scenario, target)], direct_rounds, key)
            notes = f"{m['rounds']} rounds"
            if stream:
                notes += f"; ttft; mismatched={m['event_count_mismatches']} coalesced_frames={m['coalesced_frames']}"
            entry[target] = m
            cpu = f"{m['cpu_s_per_1k']:.4f}" if m["cpu_s_per_1k"] is not None else "-"
            print(f"{scenario:<{W}}{target:<10}{m['p50_ms']:>9.3f}{m['p99_ms']:>9.3f}{m['p999_ms']:>10.3f}"
                  f"{m['added_p99_ms']:>9.3f}{m['throughput_rps']:>10.0f}{cpu:>10}{m['errors']:>8}  {notes}")
        t, n = entry.get("tollgate"), entry.get("nginx")
        if t and n:
            entry["ratios_tollgate_over_nginx"] = {
                "added_p99": t["added_p99_ms"] / n["added_p99_ms"] if n["added_p99_ms"] > 0 else None,
                "throughput": t["throughput_rps"] / n["throughput_rps"],
                "cpu_per_1k": t["cpu_s_per_1k"] / n["cpu_s_per_1k"] if n["cpu_s_per_1k"] else None,
            }
            print(f"{'':<{W}}{'T/N':<10}{'':>9}{ratio(t['p99_ms'], n['p99_ms']):>9}{'':>10}"
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
    return summary


def routed(runs, scenario):
    """A Tollgate-only scenario, compared with Tollgate on its single-upstream twin (the
    scenario name without `_routed`) in the same run."""
    base = scenario[: -len("_routed")]
    if (scenario, "tollgate") not in runs or (base, "tollgate") not in runs:
        return None
    direct = runs.get((base, "direct"), [])
    m = summarize(runs[(scenario, "tollgate")], direct, "latency")
    single = summarize(runs[(base, "tollgate")], direct, "latency")
    cpu = f"{m['cpu_s_per_1k']:.4f}" if m["cpu_s_per_1k"] is not None else "-"
    print(f"{scenario:<{W}}{'tollgate':<10}{m['p50_ms']:>9.3f}{m['p99_ms']:>9.3f}{m['p999_ms']:>10.3f}"
          f"{m['added_p99_ms']:>9.3f}{m['throughput_rps']:>10.0f}{cpu:>10}{m['errors']:>8}  "
          f"{m['rounds']} rounds; 3 versions, 4 endpoints")
    print(f"{'':<{W}}{'R/S':<10}{'':>9}{ratio(m['p99_ms'], single['p99_ms']):>9}{'':>10}{'':>9}"
          f"{ratio(m['throughput_rps'], single['throughput_rps']):>10}"
          f"{ratio(m['cpu_s_per_1k'], single['cpu_s_per_1k']):>10}")
    return {"tollgate": m, "ratios_routed_over_single": {
        "throughput": m["throughput_rps"] / single["throughput_rps"],
        "cpu_per_1k": m["cpu_s_per_1k"] / single["cpu_s_per_1k"] if single["cpu_s_per_1k"] else None,
    }}


def traced(runs, scenario):
    """Tollgate with tracing on, compared with untraced Tollgate on its twin (the scenario
    name up to `_traced`) of the same round: per-round ratios, then their median. Also the
    spans each phase exported and dropped, and the receiver's CPU."""
    base = scenario[: scenario.index("_traced")]
    if (scenario, "tollgate") not in runs or (base, "tollgate") not in runs:
        return None
    rounds = runs[(scenario, "tollgate")]
    plain = runs[(base, "tollgate")]
    direct = runs.get((base, "direct"), [])
    m = summarize(rounds, direct, "latency")
    sampling = rounds[0]["sampling_ratio"]

    def ok(row):
        return row["result"]["requests"] - row["result"]["errors"]

    def cpu_per_1k(row):
        return row["cpu_seconds"] / ok(row) * 1000 if ok(row) else None

    def per_round(metric):
        values = [metric(t) / metric(u) if metric(t) is not None and metric(u) else None for t, u in zip(rounds, plain)]
        return median(values), values

    p99, p99_rounds = per_round(lambda r: r["result"]["latency"]["p99_ms"])
    throughput, throughput_rounds = per_round(lambda r: r["result"]["throughput_rps"])
    cpu, cpu_rounds = per_round(cpu_per_1k)
    spans = [r["spans"] for r in rounds]
    exported = sum(s["exported"] for s in spans)
    queue_full = sum(s["dropped_queue_full"] for s in spans)
    export_failed = sum(s["dropped_export_failed"] for s in spans)
    dropped = queue_full + export_failed
    # Every sampled request makes 4 spans (SERVER, 2 INTERNAL, CLIENT).
    expected = 4 * sampling * sum(r["result"]["requests"] for r in rounds)
    receiver = median([r["receiver_cpu_seconds"] / ok(r) * 1000 if ok(r) else None for r in rounds])

    cpu_text = f"{m['cpu_s_per_1k']:.4f}" if m["cpu_s_per_1k"] is not None else "-"
    print(f"{scenario:<{W}}{'tollgate':<10}{m['p50_ms']:>9.3f}{m['p99_ms']:>9.3f}{m['p999_ms']:>10.3f}"
          f"{m['added_p99_ms']:>9.3f}{m['throughput_rps']:>10.0f}{cpu_text:>10}{m['errors']:>8}  "
          f"{m['rounds']} rounds; tracing, sampling ratio {sampling:g}")
    print(f"{'':<{W}}{'T/U':<10}{'':>9}{ratio(p99, 1) if p99 else '-':>9}{'':>10}{'':>9}"
          f"{ratio(throughput, 1) if throughput else '-':>10}{ratio(cpu, 1) if cpu else '-':>10}"
          f"{'':>8}  traced/untraced {base}, per round")
    if exported == 0:
        verdict = "NO SPANS EXPORTED: the receiver was not reached"
    elif dropped == 0:
        verdict = "the receiver kept up"
    else:
        share = dropped / (exported + dropped)
        verdict = (f"{share:.3%} DROPPED: " + ("a few" if share < 0.001 else "the export did NOT keep up")
                   + "; their export work is missing from the CPU figure")
    print(f"{'':<{W}}{'spans':<10}exported {exported:,} of {'' if sampling == 1 else '~'}{expected:,.0f} expected, "
          f"dropped {dropped:,} (queue full {queue_full:,}, export failed {export_failed:,}): {verdict}")
    per_phase = ", ".join(f"{s['exported']:,}/{s['dropped_queue_full'] + s['dropped_export_failed']:,}" for s in spans)
    receiver_text = f"{receiver:.4f}" if receiver is not None else "-"
    print(f"{'':<{W}}{'':<10}per round exported/dropped {per_phase}; receiver (rotel, core 1) {receiver_text} cpu s/1k")
    return {
        "tollgate": m,
        "sampling_ratio": sampling,
        "ratios_traced_over_untraced": {
            "p99": p99, "throughput": throughput, "cpu_per_1k": cpu,
            "per_round": {"p99": p99_rounds, "throughput": throughput_rounds, "cpu_per_1k": cpu_rounds},
        },
        "spans": {"exported": exported, "expected": expected, "dropped_queue_full": queue_full,
                  "dropped_export_failed": export_failed, "per_round": spans},
        "receiver_cpu_s_per_1k": receiver,
    }


def problems(summary, expected_streams):
    """What makes a run unusable: a missing target, failed requests, lost or extra events,
    streams that were not all held open, a traced phase whose spans all went missing."""
    found = []
    scenarios = summary["scenarios"]
    for scenario, entry in scenarios.items():
        if scenario.endswith("_routed") or "_traced" in scenario:
            targets = ("tollgate",)
        elif f"{scenario}_traced" in scenarios:
            # A fixed-rate baseline for the traced phases: Tollgate and the mock only.
            targets = ("direct", "tollgate")
        else:
            targets = ("direct", "tollgate", "nginx")
        if "spans" in entry and not entry["spans"]["exported"]:
            found.append(f"{scenario}: no span reached the OTLP receiver")
        for target in targets:
            m = entry.get(target)
            if m is None:
                found.append(f"{scenario}: no result for {target}")
                continue
            if m["errors"]:
                found.append(f"{scenario}/{target}: {m['errors']} errors")
            if m.get("event_count_mismatches"):
                found.append(f"{scenario}/{target}: {m['event_count_mismatches']} streams with the wrong event count")
    for target, memory in summary["memory"].items():
        if memory["streams_still_open"] != expected_streams:
            found.append(f"idle_streams/{target}: {memory['streams_still_open']} of {expected_streams} streams held")
    return found


if __name__ == "__main__":
    summary = main(sys.argv[1])
    # `--check N`: exit non-zero unless the run is complete and clean with N held streams.
    if len(sys.argv) > 3 and sys.argv[2] == "--check":
        issues = problems(summary, int(sys.argv[3]))
        for issue in issues:
            print(f"check failed: {issue}", file=sys.stderr)
        sys.exit(1 if issues else 0)
