"""run_bench.py: run sweeps, list what exists, build reports, compile for other GPUs, diagnose the machine."""
from __future__ import annotations

import argparse
import datetime
import math
import os
import re
import sys
import time

from bench.usage import EXIT_USAGE, did_you_mean, die  # noqa: F401 - EXIT_USAGE: what a usage error exits with
from kernels.rows import failed, read_rows, result_files

from kernels.rows import results_root


def reports_root() -> str:
    return os.path.abspath("reports")     # beside results/, under the working directory


EXAMPLES = """modes (one at a time): --sweep, --list, --report, --compare, --table, --history, --history-add,
--record-defaults, --static, --doctor, --collect

examples:
  run_bench.py --sweep fmha                          the first look: every fmha impl, checked, timed, reported
  run_bench.py --sweep fmha --quick --impl triton --impl cutile
  run_bench.py --list                                sweeps, ops, impls and why an impl cannot run here
  run_bench.py --sweep layer_norm --resume           continue a killed run
  run_bench.py --compare results/a results/b --fail-above 5%
  run_bench.py --report results/a results/b          one report from several runs (GPUs, shards)
  run_bench.py --table targets results/final         a CLI table over finished results
  run_bench.py --history-add results/a && run_bench.py --history --op fmha
  run_bench.py --static --arch sm_90,sm_100          compile every kernel for other GPUs, no GPU needed
  run_bench.py --sweep gemm_triton_fwd --out results/t && run_bench.py --record-defaults results/t
                                                     this GPU's best tile configs become its defaults
"""


def modes_of(args) -> list[tuple[str, object]]:
    """(flag, value) of every mode: one may be given at a time."""
    return [("--sweep", args.sweep), ("--list", args.list), ("--report", args.report), ("--compare", args.compare),
            ("--table", args.table is not None), ("--history", args.history), ("--history-add", args.history_add),
            ("--record-defaults", args.record_defaults), ("--static", args.static), ("--doctor", args.doctor), ("--collect", args.collect)]


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="run_bench.py", description="tilebench: is my cuTile kernel faster than "
                                "Triton, than PyTorch, than cuDNN, on this GPU and the next?", epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweep", action="append", default=[], metavar="NAME", help="sweep to run (repeatable)")
    p.add_argument("--sweeps-file", default=None, metavar="PATH",
                   help="read the sweeps of this file alone (default: sweeps.yaml and tuning/*.yaml)")
    p.add_argument("--list", action="store_true", help="list sweeps, ops and impls with availability")
    p.add_argument("--impl", action="append", default=[], metavar="NAME", help="only these impls (repeatable)")
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda if present)")
    p.add_argument("--quick", action="store_true", help="a few points per sweep")
    p.add_argument("--out", default=None, metavar="DIR", help="results folder (default results/<sweeps>_<device>)")
    p.add_argument("--resume", action="store_true", help="skip points already in the results file (a line cut off by a kill goes to <file>.cut)")
    p.add_argument("--report", nargs="+", metavar="RESULTS", help="build/merge a report from result files (.jsonl), training logs (.json) or folders")
    p.add_argument("--report-dir", default=None, metavar="DIR", help="where the report goes (default reports/<name>)")
    p.add_argument("--static", action="store_true",
                   help="compile every cuTile/Triton kernel ahead of time in its default config per arch, no GPU")
    p.add_argument("--arch", default="sm_80,sm_89,sm_90,sm_100,sm_120", help="archs for --static")
    p.add_argument("--preset", action="append", default=[], metavar="NAME",
                   help="with --static: also this preset or tuning config, for each impl that has it (repeatable; "
                        "all: every preset)")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="with --static: compile in N worker processes (default: one per CPU)")
    p.add_argument("--doctor", action="store_true", help="diagnose the GPU, cuTile, tileiras, Triton, peers")
    p.add_argument("--cuda-graph", action="store_true", help="time CUDA-graph replays instead of launches")
    p.add_argument("--budget", type=float, default=None, metavar="S",
                   help="timing budget per point, seconds > 0 (checked whatever else is asked)")
    p.add_argument("--compile-timeout", type=float, default=None, metavar="S",
                   help="cuTile compiler timeout, seconds > 0 (checked whatever else is asked)")
    p.add_argument("--gpus", default=None, metavar="all|0,1",
                   help="one worker process per GPU of this host, points spread over them")
    p.add_argument("--replicate", action="store_true", help="with --gpus: run every point on every GPU")
    p.add_argument("--shard", default=None, metavar="I/N", help="run the I-th of N deterministic slices")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strict", action="store_true", help="exit 1 if any point is wrong, failed or ran out of memory")
    p.add_argument("--no-report", action="store_true")
    p.add_argument("--compare", nargs=2, metavar=("BASE", "NEW"),
                   help="compare two runs (results files or folders) point by point; writes a compare page")
    p.add_argument("--fail-above", default=None, metavar="PCT",
                   help="with --compare: exit 1 if a point is slower than this (e.g. 5%%) with 95%% confidence")
    p.add_argument("--compare-time", choices=("kernel", "host"), default="kernel",
                   help="with --compare: kernel time (default) or host-inclusive time")
    from bench.report.tables import TABLES
    p.add_argument("--table", nargs="*", metavar=("NAME", "RESULTS"),
                   help="print a table of finished results (files or run folders), no sweep; NAME: "
                        + "; ".join(f"{name} ({t.about})" for name, t in TABLES.items()))
    p.add_argument("--peer", default=None, metavar="IMPL",
                   help="with --table configs: the impl whose time the ratios divide (default: each point's fastest)")
    p.add_argument("--profile", action="store_true",
                   help="torch.profiler per point after timing: kernel table in the row and report, Chrome trace "
                        "in <out>/profiles/")
    p.add_argument("--no-stress", action="store_true",
                   help="skip the stress battery (layouts, hard values, ragged sizes) before timing; rows say "
                        "stress: off. For measuring what the battery costs, not for results you trust")
    p.add_argument("--fresh-verdicts", action="store_true",
                   help="judge every stress case again instead of taking the verdicts an earlier run of the same "
                        "code, toolchain and GPU kept (TILEBENCH_VERDICTS: their folder, or off)")
    p.add_argument("--autotune-cap", type=float, default=10.0, metavar="S",
                   help="seconds per point for peers' autotuners (TileGym); 0: no cap (default 10)")
    g = p.add_argument_group("per-GPU defaults (kernels/gpu_defaults.py)")
    g.add_argument("--record-defaults", nargs="+", metavar="RESULTS",
                   help="record the fastest tile config per op/impl in these results as their GPU's default")
    g.add_argument("--defaults-file", default=None, metavar="PATH",
                   help="with --record-defaults: the record to write (default ./tilebench-gpu-defaults.json, or "
                        "$TILEBENCH_GPU_DEFAULTS; tuning/gpu_defaults.json is the shipped one)")
    from bench.scale import cluster
    cluster.add_arguments(p)
    from bench import history
    history.add_arguments(p)
    return p.parse_args(argv)


def pick_device(arg: str | None) -> str:
    import torch
    if arg:
        return arg
    return "cuda" if torch.cuda.is_available() else "cpu"


def cmd_list(sweeps, device: str) -> int:
    from bench import sweeps as sw
    from kernels import registry
    print(f"device: {device}")
    width = max([14, *map(len, sweeps)])
    opw = max([14, *(len(s.op) for s in sweeps.values() if s.op)])

    def line(name, s, where=""):
        what = f"op={s.op:{opw}s} {len(sw.points(s, device)):5d} points here" if s.op else \
            f"includes {', '.join(s.include)}"
        print(f"  {name:{width}s} {where}{what}" + (f"  - {s.description}" if s.description else ""))
    tuning = {name: s for name, s in sweeps.items() if s.tuning}
    if len(tuning) < len(sweeps) or not sweeps:
        print("\nsweeps:")
    for name, s in sweeps.items():
        if not s.tuning:
            line(name, s)
    if tuning:
        print("\ntuning sweeps (the experiments behind the defaults; each file's header says what they found):")
        files = max(len(sw.shown(s.source)) for s in tuning.values())
        for name, s in tuning.items():
            line(name, s, f"{sw.shown(s.source):{files}s} ")
    print("\nops and impls:")
    for r in registry.table(device):
        state = "available" if r["status"] == "available" else f"unavailable: {r['reason']}"
        print(f"  {r['op']:14s} {r['impl']:15s} {r['kind']:9s} {state}")
        if r["params"]:
            print(f"  {'':14s} {'':15s} tile params: {r['params']}")
    return 0


def _results_files(paths):
    """Files named, and per folder: its run's result files (as --compare reads a folder: not the backups of older
    runs beside them) and the training logs under it (.json from model.train --log-json)."""
    files = []
    for p in paths:
        if os.path.isdir(p):
            files += result_files(p)
            files += [os.path.join(root, n) for root, _, names in os.walk(p) for n in names if n.endswith(".json")]
        elif os.path.exists(p):
            files.append(p)
        else:
            raise FileNotFoundError(p)
    return sorted(files)


def cmd_compare(args) -> int:
    from bench import history
    from bench.report import compare, compare_page, history_page
    base, new = args.compare
    # two commit names (or a commit and `latest`), neither an existing path: from the results history
    by_commit = not any(os.path.exists(p) for p in (base, new)) and all(map(history.looks_like_commit, (base, new)))
    try:
        threshold = compare.parse_threshold(args.fail_above) if args.fail_above is not None else None
        c = history_page.compare_commits(args) if by_commit else compare.compare(base, new, time=args.compare_time)
    except (compare.CompareError, history.HistoryError) as e:
        return die(str(e))
    print(compare.text(c, threshold))

    def name(p):
        p = os.path.abspath(p)
        return os.path.basename(os.path.dirname(p) if os.path.isfile(p) else p)
    out = args.report_dir or os.path.join(reports_root(), f"compare_{name(base)}_vs_{name(new)}")
    print(f"compare page: {compare_page.write(c, out, threshold)}")
    if threshold is not None and (len(c.over(threshold)) or len(c.newly_broken())):
        return 1
    return 0


def cmd_report(paths, report_dir) -> int:
    from bench.report import pages
    try:
        files = _results_files(paths)
    except FileNotFoundError as e:
        return die(f"no such results file or folder: {e}")
    if not files:
        return die(f"no .jsonl result files or .json training logs in {' '.join(paths)}")
    # build from what is good and say what is not, once per file; nothing good at all is a usage error
    good, notes = [], []
    for f in files:
        rows, why = pages.read_input(f)
        if rows:
            good.append(f)
        elif f not in paths and f.endswith(".json"):   # a folder's other .json files (meta.json) are no inputs
            continue
        if why:
            notes.append(f"{f}: {why}" + ("" if rows else " (skipped)"))
    if not good:
        return die("; ".join(n.removesuffix(" (skipped)") for n in notes) if notes else
                   f"no result rows or training logs in {' '.join(paths)}")
    for n in notes:
        print(f"warning: {n}", file=sys.stderr)
    files = good
    name = "merged-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S") if len(files) > 1 else \
        os.path.basename(os.path.dirname(os.path.abspath(files[0])))
    out = report_dir or os.path.join(reports_root(), name)
    path = pages.build(files, out)
    print(f"report: {path}")
    return 0


def cmd_table(args) -> int:
    from bench.report import tables
    name, *paths = args.table or [""]
    try:
        table = tables.lookup(name)
    except tables.UnknownTable as e:
        return die(str(e))
    if args.peer is not None and "peer" not in table.options:
        return die(f"--peer goes with --table configs, not --table {name}")
    if not paths:
        return die(f"--table {name} RESULTS...: name result files or run folders")
    try:
        rows = read_rows(*paths)
    except FileNotFoundError as e:
        return die(f"no such results file or folder: {e}")
    if not rows:
        return die(f"no result rows in {' '.join(paths)}")
    try:
        text = table.render(rows, **({"peer": args.peer} if args.peer is not None else {}))
    except tables.NoRows as e:
        return die(f"{' '.join(paths)}: {e}")
    print(text)
    return 0


def cmd_static(args) -> int:
    from bench.machine import static
    from bench.measure.store import ResultStore, fresh_results_file
    archs = [a.strip() for a in args.arch.split(",") if a.strip()]
    bad = [a for a in archs if not re.fullmatch(r"sm_\d+a?", a)]
    if bad:
        return die(f"--arch: {bad[0]!r} is not an arch like sm_90")
    if args.jobs is not None and args.jobs < 1:
        return die(f"--jobs {args.jobs}: expected a number of processes >= 1")
    if args.quick and args.preset:
        return die("--quick compiles the default configs only: leave out --preset")
    if args.resume:     # every compile would run again and its rows be appended twice
        return die("--static has no --resume: it compiles everything it is asked for (a minute or two)")
    unknown = static.unknown_names(args.preset, impls=args.impl or None)
    if unknown:
        return die(f"--preset {unknown[0]!r}: no cuTile/Triton impl has a preset or tuning config of that name")
    jobs = args.jobs or os.cpu_count() or 1
    t0 = time.perf_counter()
    out_dir = args.out or os.path.join(results_root(), "static")
    store = ResultStore(fresh_results_file(out_dir, args.resume))
    try:
        rows = static.run(archs, store, impls=args.impl or None, quick=args.quick, presets=args.preset, jobs=jobs)
        seconds = time.perf_counter() - t0
    except KeyboardInterrupt:
        print(f"\ninterrupted: the kernels compiled so far are in {store.path}", file=sys.stderr)
        return 130
    import pandas as pd
    df = pd.DataFrame(rows)
    if not df.empty:
        index = ["op", "impl"] + (["preset"] if df["preset"].nunique() > 1 else [])
        print(df.pivot_table(index=index, columns="arch", values="status",
                             aggfunc=lambda v: f"{(v == 'ok').sum()}/{len(v)}").to_string())
    print(f"results: {store.path}")
    if not args.no_report:
        cmd_report([store.path], args.report_dir)
    print(static.summary(rows, archs, seconds, jobs))   # the last line: what the run cost
    return 1 if (args.strict and failed(rows)) else 0


def main(argv=None) -> int:
    args = argv if isinstance(argv, argparse.Namespace) else parse_args(argv)   # a Namespace: a cluster shard
    # first, whatever else is asked: a typo here is a typo anywhere (--budget -1 timed 3 reps of anything)
    for flag, v in (("--budget", args.budget), ("--compile-timeout", args.compile_timeout)):
        if v is not None and not 0 < v < math.inf:
            return die(f"{flag} {v:g}: expected seconds > 0")
    if args.compile_timeout is not None:
        os.environ["TILEBENCH_CUTILE_COMPILE_TIMEOUT_S"] = str(args.compile_timeout)
    given = [flag for flag, on in modes_of(args) if on]
    if len(given) > 1:   # one of them would be silently ignored
        return die(f"{given[0]} and {given[1]} are two modes: give one (run_bench.py --help lists them)")
    if args.table is not None:
        return cmd_table(args)
    if args.peer is not None:
        return die("--peer goes with --table configs")
    if args.doctor:
        from bench.machine import doctor
        return doctor.main(args.device)
    if args.report:
        return cmd_report(args.report, args.report_dir)
    if args.compare:
        return cmd_compare(args)
    if args.history_add or args.history:          # the results history (bench/history.py)
        from bench.report import history_page
        return history_page.cmd_history_add(args) if args.history_add else history_page.cmd_history(args)
    if args.record_defaults:
        from bench import record
        return record.cmd(args.record_defaults, args.defaults_file)
    if args.defaults_file is not None:
        return die("--defaults-file goes with --record-defaults RESULTS")
    if args.fail_above is not None:
        return die("--fail-above goes with --compare BASE NEW")
    if (args.preset or args.jobs is not None) and not args.static:
        return die("--preset and --jobs go with --static")
    if args.static:
        return cmd_static(args)
    if args.collect:
        from bench.scale import cluster
        return cluster.collect(args.collect, args.report_dir, args.strict, no_report=args.no_report)

    from bench import sweeps as sw
    try:
        sweeps = sw.load(args.sweeps_file) if args.sweeps_file else sw.load_default()
    except sw.SweepError as e:
        return die(str(e))
    device = pick_device(args.device)
    if args.gpus and not device.startswith("cuda"):
        return die("--gpus needs CUDA GPUs (none here)")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        return die(f"--device {device!r}: expected cpu, cuda or cuda:N")
    if device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            return die(f"--device {device}: no CUDA device here (torch.cuda.is_available() is False)")
        if ":" in device and int(device.split(":")[1]) >= torch.cuda.device_count():
            return die(f"--device {device}: this host has {torch.cuda.device_count()} CUDA device(s)")
    if args.list:
        return cmd_list(sweeps, device)
    if args.autotune_cap < 0:
        return die(f"--autotune-cap {args.autotune_cap:g}: expected seconds >= 0 (0: no cap)")
    if not args.sweep:
        return die("nothing to do: give --sweep NAME (known: " + ", ".join(sweeps) + "), --list, --report, --table, "
                   "--static or --doctor")
    try:
        chosen = sw.resolve_names(sweeps, args.sweep)
    except sw.SweepError as e:
        return die(str(e))
    from kernels import registry
    known_impls = set(registry.all_impl_names()) | set(sw.E2E_BACKENDS)
    for i in args.impl:
        if i not in known_impls:
            return die(f"unknown impl {i!r}{did_you_mean(i, known_impls)} (known: {', '.join(sorted(known_impls))})")

    def resolver(op, name):
        r = registry.resolve(op, name, device)
        return r.impl
    points = []
    for s in chosen:
        points += sw.points(s, device, quick=args.quick, impl_filter=args.impl or None, resolver=resolver,
                            mode="graph" if args.cuda_graph else "events")
    if not points:
        return die("the selection has no points (check --impl and the sweep's impls)")
    from bench.scale import cluster
    if cluster.requested(args):
        return cluster.submit(args, run=main)
    if args.shard:
        m = re.fullmatch(r"(\d+)/(\d+)", args.shard)
        if not m or not (0 <= int(m.group(1)) < int(m.group(2))):
            return die(f"--shard {args.shard!r}: expected I/N with 0 <= I < N")
        points = sw.shard(points, int(m.group(1)), int(m.group(2)))   # may be empty: nothing to do here

    from bench.report import pages

    from bench.measure import runner, verdict_store
    from bench.measure.store import ResultStore, fresh_results_file
    from kernels import device as devices
    run_name = "+".join(args.sweep) + ("-quick" if args.quick else "") + "_" + devices.slug(device) + \
        (f"_shard{args.shard.replace('/', 'of')}" if args.shard else "")
    out_dir = args.out or os.path.join(results_root(), run_name)
    store = ResultStore(fresh_results_file(out_dir, args.resume))
    if args.resume:
        done = store.done_ids()
        skipped = [p for p in points if p["point_id"] in done]
        points = [p for p in points if p["point_id"] not in done]
        print(f"resume: {len(skipped)} points already done, {len(points)} to run", file=sys.stderr)
    print(f"running {len(points)} points on {device}; results appended to {store.path}", file=sys.stderr)
    from bench.report import live
    report_dir = args.report_dir or os.path.join(reports_root(), run_name)
    live_report = None
    if not args.no_report:
        live_report = live.Rebuilder(store.path, report_dir)
        print(f"report (rebuilt as points finish): {os.path.join(report_dir, 'index.html')}", file=sys.stderr)
    opts = runner.Options(budget_s=args.budget, mode="graph" if args.cuda_graph else "events", seed=args.seed,
                          autotune_cap_s=args.autotune_cap or None,
                          profile_dir=os.path.join(out_dir, "profiles") if args.profile else None,
                          stress=not args.no_stress, verdicts=verdict_store.folder(),
                          fresh_verdicts=args.fresh_verdicts)
    try:
        with live.sigterm_interrupts():
            if args.gpus:
                from bench.scale import multigpu
                try:
                    gpus = multigpu.gpu_indices(args.gpus)
                except ValueError as e:
                    return die(str(e))
                print(f"spreading over GPUs {gpus}" + (" (every point on each)" if args.replicate else ""),
                      file=sys.stderr)
                multigpu.run(points, gpus, store, opts, log_dir=out_dir, replicate=args.replicate, on_row=live_report)
            else:
                runner.run(points, device, store, opts, on_row=live_report)
    except KeyboardInterrupt as e:
        how = "terminated (SIGTERM)" if isinstance(e, live.Terminated) else "interrupted"
        print(f"\n{how}: finished points are in {store.path}; rerun with --resume to continue", file=sys.stderr)
        if live_report:
            print(f"report: {live_report.build()}", file=sys.stderr)
        return 143 if isinstance(e, live.Terminated) else 130
    rows = store.rows()
    print(pages.summary_table(rows))
    print(f"results: {store.path}")
    if live_report:
        print(f"report: {live_report.build()}")
    return 1 if (args.strict and failed(rows)) else 0


if __name__ == "__main__":
    sys.exit(main())
