#!/usr/bin/env python3
"""Regenerates every table of paper/README.md from result files (standard library only).

  scripts/paper_tables.py --collect   copy the latest runs into paper/results/ first:
                                      bench-results/<suite>.{csv,summary} (scripts/run_suites.sh)
                                      and the criterion medians under target/criterion
                                      (cargo bench --bench crown / scan / smoothing / foundation)
  scripts/paper_tables.py --check     exit 1 when the tables differ from what the files give
  scripts/paper_tables.py             rewrite the tables between the markers
                                      <!-- BEGIN table:NAME --> ... <!-- END table:NAME -->
                                      from paper/results/ and the suites' published results
                                      (../shared/benchmarks/<suite>/tool_summary.csv)

Every figure in a generated table comes from those files; a table whose inputs are missing
says so instead of keeping old numbers.
"""

import csv
import json
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "paper" / "results"
PAPER = ROOT / "paper" / "README.md"
SHARED = ROOT.parent / "shared" / "benchmarks"
SUITES = ["test", "digits", "acasxu", "mnistfc", "collins_rul_cnn", "rl_benchmarks",
          "reach_prob_density", "oval21", "cifar10_resnet"]


def collect():
    RESULTS.mkdir(parents=True, exist_ok=True)
    src = ROOT / "bench-results"
    for s in SUITES:
        for ext in ("csv", "summary"):
            f = src / f"{s}.{ext}"
            if f.exists():
                shutil.copy(f, RESULTS / f.name)
    crit = ROOT / "target" / "criterion"
    medians = {}
    for est in sorted(crit.glob("**/new/estimates.json")):
        bench = "/".join(est.relative_to(crit).parts[:-2])
        medians[bench] = json.loads(est.read_text())["median"]["point_estimate"] / 1e9
    if medians:
        (RESULTS / "criterion_medians.json").write_text(json.dumps(medians, indent=1, sort_keys=True) + "\n")


def summary(suite):
    f = RESULTS / f"{suite}.summary"
    if not f.exists():
        return None
    t = f.read_text()
    m = re.search(r"correct (\d+), wrong (\d+), unsolved (\d+)", t)
    w = re.search(r"wall time: (\d+) s \(timeout scale ([0-9.]+)\)", t)
    n = re.search(r"instances: (\d+)", t)
    if not (m and w and n):
        return None
    return dict(correct=int(m[1]), wrong=int(m[2]), unsolved=int(m[3]), wall=int(w[1]),
                scale=w[2], instances=int(n[1]))


def best_tool(suite):
    f = SHARED / suite / "tool_summary.csv"
    if not f.exists():
        return None
    rows = list(csv.DictReader(f.open()))
    if not rows:
        return None
    best = max(rows, key=lambda r: (int(r.get("solved") or 0), -float(r.get("total_time_solved_s") or 0)))
    return f"{best['tool']} {best['solved']} / {best['instances']} ({best.get('year', '')})"


def table_suites():
    out = ["| suite | timeout scale | solved / instances | wrong | unsolved | wall time (s) | strongest published result (VNN-COMP, full limits) |",
           "|---|---|---|---|---|---|---|"]
    for s in SUITES:
        r = summary(s)
        if r is None:
            out.append(f"| {s} | | no result file (run `scripts/run_suites.sh {s}`) | | | | |")
            continue
        out.append(f"| {s} | {r['scale']} | {r['correct']} / {r['instances']} | {r['wrong']} | "
                   f"{r['unsolved']} | {r['wall']} | {best_tool(s) or '-'} |")
    return out


def medians():
    f = RESULTS / "criterion_medians.json"
    return json.loads(f.read_text()) if f.exists() else {}


def fmt_s(v):
    return f"{v * 1e3:.2f} ms" if v < 1 else f"{v:.2f} s"


def table_bounds():
    m = medians()
    nets = sorted({k.split("/")[0] for k in m if k.endswith("/crown")})
    if not nets:
        return ["(no criterion results: run `cargo bench --bench crown`, then `scripts/paper_tables.py --collect`)"]
    out = ["| network (first region of its spec) | CROWN | alpha-CROWN (20 iterations) | `bounds` command, in process (every output, both sides) |",
           "|---|---|---|---|"]
    for n in nets:
        c, a, k = m.get(f"{n}/crown"), m.get(f"{n}/alpha-crown"), m.get(f"{n}/command_crown")
        out.append(f"| {n} | {fmt_s(c) if c else '-'} | {fmt_s(a) if a else '-'} | {fmt_s(k) if k else '-'} |")
    return out


def table_group(prefix, what):
    m = medians()
    rows = sorted(k for k in m if k.startswith(prefix + "/"))
    if not rows:
        return [f"(no criterion results for `{prefix}`: run `cargo bench --bench {what}`, then `scripts/paper_tables.py --collect`)"]
    out = ["| benchmark | median |", "|---|---|"]
    out += [f"| {k.split('/', 1)[1]} | {fmt_s(m[k])} |" for k in rows]
    return out


def table_lirpa():
    f = RESULTS / "lirpa_bench.csv"
    if not f.exists():
        return ["(no result file: run ../shared/tools/lirpa_bench.py --out paper/results/lirpa_bench.csv)"]
    out = ["| network | auto_LiRPA CROWN (ms) | ferrocert `bounds` real (ms) | ferrocert deployed (ms) | of which load + IBP (ms) | auto_LiRPA / ferrocert | bounds equal |",
           "|---|---|---|---|---|---|---|"]
    for r in csv.DictReader(f.open()):
        out.append(f"| {r['net']} | {float(r['lirpa_ms']):.2f} | {float(r['ferrocert_real_ms']):.2f} | "
                   f"{float(r['ferrocert_deployed_ms']):.2f} | {float(r['ferro_ibp_ms']):.2f} | "
                   f"{float(r['ratio(lirpa/ferrocert_deployed)']):.2f} | {r['match']} (max diff {float(r['max_bound_diff']):.1e}) |")
    return out


def table_proofs():
    f = RESULTS / "acasxu_replay.json"
    if not f.exists():
        return ["(no result file: certify paper/results/acasxu_certify.toml, then replay --check-proofs --json)"]
    r = json.loads(f.read_text())
    p = r["proofs"]
    t = sum(x["seconds"] for x in p)
    o = sum(x["original_seconds"] or 0 for x in p)
    out = ["| what | value |", "|---|---|",
           f"| replay agrees | {r['agree']} |",
           f"| proofs checked / valid | {len(p)} / {sum(x['ok'] for x in p)} |",
           f"| tree nodes bounded | {sum(x['nodes'] for x in p):,} |",
           f"| proof check, summed | {t:.1f} s |",
           f"| original search, summed | {o:.1f} s |",
           f"| search / check | {o / t:.2f}x |" if t > 0 else "| search / check | - |",
           f"| other checks re-run / agree | {len(r['verdicts'])} / {sum(v['agree'] for v in r['verdicts'])} |"]
    return out


def table_relu_proofs():
    f = RESULTS / "relu_replay.json"
    if not f.exists():
        return ["(no result file: certify paper/results/relu_certify.toml, then replay --check-proofs --json)"]
    r = json.loads(f.read_text())
    out = ["| model | check | tree nodes | checks | original run (s) | proof check (s) | of which root bounds again (s) | tree alone (s) | bounds optimised again |",
           "|---|---|---|---|---|---|---|---|---|"]
    for x in r["proofs"]:
        spec = x["check"].rsplit("/", 1)[-1]
        orig = x["original_seconds"]
        # The bounds the search started from: alpha-CROWN's, or the LP stage's in proofs of
        # earlier versions (result files from before root_seconds have only the latter).
        root = x["lp_stage_seconds"] + x.get("root_seconds", 0.0)
        out.append(f"| {x['model']} | {spec} | {x['nodes']:,} | {'yes' if x['ok'] else 'NO'} | "
                   f"{orig:.1f} | {x['seconds']:.2f} | {root:.2f} | "
                   f"{x['seconds'] - root:.2f} | {x['reoptimized']} |")
    out.append(f"| replay agrees: {r['agree']} | | | | | | | | |")
    return out


def table_acas_hard():
    f = RESULTS / "acasxu_hard.csv"
    if not f.exists():
        return ["(no result file: scripts/acas_hard.sh)"]
    notes = {r["instance"]: r["note"] for r in csv.DictReader((RESULTS / "acasxu_hard_nnenum.csv").open())}
    out = ["| instance | result | ferrocert (s) | nnenum (s) | nnenum / ferrocert |", "|---|---|---|---|---|"]
    for r in csv.DictReader(f.open()):
        timeout = notes.get(r["instance"], "").startswith("timeout")
        nn = f"timeout ({r['nnenum_s']})" if timeout else r["nnenum_s"]
        ratio = (">= " if timeout else "") + r["speedup"] + "x"
        out.append(f"| {r['instance']} | {r['result']} | {r['ferrocert_s']} | {nn} | {ratio} |")
    return out


def table_input_branching():
    f = RESULTS / "input_branching.csv"
    if not f.exists():
        return ["(no result file: scripts/input_branching.sh)"]
    rows = {}
    for r in csv.DictReader(f.open()):
        rows.setdefault(r["instance"], {})[r["rule"]] = r
    out = ["| instance | lookahead | sb | lookahead tree nodes | sb tree nodes |",
           "|---|---|---|---|---|"]

    def cell(r):
        if r is None:
            return "-"
        if r["result"] in ("sat", "unsat"):
            return f"{r['result']} {r['time_s']} s"
        return f"{r['result']} ({r['time_s']} s)"

    for inst, by in rows.items():
        la, sb = by.get("lookahead"), by.get("sb")
        nodes = [(r or {}).get("tree_nodes") or "-" for r in (la, sb)]
        out.append(f"| {inst} | {cell(la)} | {cell(sb)} | {nodes[0]} | {nodes[1]} |")
    return out


def table_nc():
    f = RESULTS / "scan_vs_nc.md"
    if not f.exists():
        return ["(no result file: scripts/bench_scan.sh > paper/results/scan_vs_nc.md)"]
    return [l for l in f.read_text().splitlines() if l.startswith("|")]


TABLES = {
    "suites": table_suites,
    "bounds": table_bounds,
    "scan": lambda: table_group("scan", "scan"),
    "normals": lambda: table_group("normals", "smoothing"),
    "lirpa": table_lirpa,
    "proofs": table_proofs,
    "relu_proofs": table_relu_proofs,
    "acas_hard": table_acas_hard,
    "input_branching": table_input_branching,
    "nc": table_nc,
}


def main():
    if "--collect" in sys.argv:
        collect()
    text = PAPER.read_text()
    for name, fn in TABLES.items():
        pat = re.compile(rf"(<!-- BEGIN table:{name} -->\n).*?(<!-- END table:{name} -->)", re.S)
        if not pat.search(text):
            sys.exit(f"paper/README.md has no markers for table {name}")
        body = "\n".join(fn()) + "\n"
        text = pat.sub(lambda mt: mt.group(1) + body + mt.group(2), text)
    if "--check" in sys.argv:
        if text != PAPER.read_text():
            sys.exit("paper/README.md's tables are stale: run scripts/paper_tables.py")
        print(f"{len(TABLES)} tables of {PAPER.relative_to(ROOT)} match their result files")
        return
    PAPER.write_text(text)
    print(f"rewrote {len(TABLES)} tables in {PAPER.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
