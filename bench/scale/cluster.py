"""Sweeps as job arrays through submitit: one shard per task, one results file per shard, merged at the end.

    run_bench.py --sweep all --submit slurm --shards 8 --slurm-partition gpu   # array of 8, waits, reports
    run_bench.py --sweep all --submit slurm --shards 8 --no-wait               # returns at once
    run_bench.py --collect results/all_slurm-8shards                           # merge and report later
    run_bench.py --sweep fmha --quick --submit local --shards 3                # the same on this machine

Layout of a run folder: shard-I-of-N/results.jsonl and state.json per shard, submitit/ (job pickles, logs).
Preemption and time limits are handled inside the job (bench.scale.shard_task: checkpoint, requeue, resume); a
task that fails outright is resubmitted here, up to --retries times, when the command waits."""
from __future__ import annotations

import argparse
import glob
import os
import re
import sys
import time

from bench import SOURCE_ROOT
from kernels.rows import results_root
from bench.usage import die
from bench.scale.shard_task import STATE, ShardTask, read_state, shard_dir

SLURM_TIME_MIN, SLURM_GPUS_PER_TASK = 120, 1


def add_arguments(p) -> None:
    g = p.add_argument_group("cluster (submitit)")
    g.add_argument("--submit", choices=("slurm", "local"), default=None,
                   help="run the sweep as a job array: on Slurm, or on this machine (local)")
    g.add_argument("--shards", type=int, default=None, metavar="N", help="with --submit: tasks in the array")
    g.add_argument("--no-wait", action="store_true", help="with --submit: return once submitted (see --collect)")
    g.add_argument("--collect", default=None, metavar="RUN_DIR", help="merge a submitted run's shards and report")
    g.add_argument("--retries", type=int, default=2, metavar="N",
                   help="with --submit: resubmit a failed task up to N times; requeue up to N times on timeout")
    g.add_argument("--slurm-partition", default=None, metavar="P")
    g.add_argument("--slurm-account", default=None, metavar="A")
    g.add_argument("--slurm-gpus-per-task", type=int, default=None, metavar="G",
                   help=f"GPUs per task (default {SLURM_GPUS_PER_TASK})")
    g.add_argument("--slurm-time", type=int, default=None, metavar="MIN",
                   help=f"time limit per task, minutes (default {SLURM_TIME_MIN})")
    g.add_argument("--slurm-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sbatch option, e.g. qos=high or cpus-per-task=8 (repeatable)")


def flag_defaults() -> dict:
    """Every cluster flag at its default: what a shard's own run_bench.py sees (it must not submit again)."""
    p = argparse.ArgumentParser(add_help=False)
    add_arguments(p)
    return vars(p.parse_args([]))


def _slurm_flags(args) -> list[str]:
    given = [f"--slurm-{k.replace('_', '-')}" for k in ("partition", "account", "gpus_per_task", "time")
             if getattr(args, f"slurm_{k}") is not None]
    return given + (["--slurm-opt"] if args.slurm_opt else [])


def requested(args) -> bool:
    """Whether any flag of a submitted run was given (--collect is apart: it needs no sweep)."""
    return bool(args.submit or args.shards is not None or args.no_wait or _slurm_flags(args))


def _submitit():
    try:
        import submitit
    except ImportError:
        return None
    return submitit


def default_run_dir(args) -> str:
    name = "+".join(args.sweep) + ("-quick" if args.quick else "") + f"_{args.submit}-{args.shards}shards"
    return os.path.join(results_root(), name)


def _slurm_opts(pairs: list[str]) -> dict:
    out = {}
    for kv in pairs:
        key, eq, value = kv.partition("=")
        if not eq or not re.fullmatch(r"[a-z][a-z0-9-]*", key.strip()):
            raise ValueError(f"--slurm-opt {kv!r}: expected KEY=VALUE with an sbatch option name, e.g. qos=high")
        out[key.strip()] = value.strip()
    return out


def usage_error(args) -> str | None:
    """Why these cluster flags cannot run, or None."""
    if not args.submit:
        return "--shards, --no-wait and --slurm-* need --submit slurm|local"
    if args.shard:
        return "--submit splits the sweep itself (--shards N); drop --shard"
    if args.shards is not None and args.shards < 1:
        return f"--shards {args.shards}: need at least 1"
    if args.retries < 0:
        return f"--retries {args.retries}: need 0 or more"
    if args.submit == "local" and _slurm_flags(args):
        return f"{_slurm_flags(args)[0]} applies to --submit slurm, not local"
    if (args.slurm_time is not None and args.slurm_time < 1) or (args.slurm_gpus_per_task or 0) < 0:
        return "--slurm-time needs at least 1 minute and --slurm-gpus-per-task 0 or more"
    try:
        _slurm_opts(args.slurm_opt)
    except ValueError as e:
        return str(e)
    return None


def _executor(submitit, kind: str, folder: str, args):
    if kind == "local":
        ex = submitit.LocalExecutor(folder=folder, max_num_timeout=args.retries)
        ex.update_parameters(timeout_min=24 * 60)     # no time limit worth the name on this machine: a day
        return ex
    ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=args.retries)   # raises without srun
    gpus = SLURM_GPUS_PER_TASK if args.slurm_gpus_per_task is None else args.slurm_gpus_per_task
    opts = {"partition": args.slurm_partition, "account": args.slurm_account, "gpus_per_task": gpus or None}
    ex.update_parameters(job_name="tilebench", time=args.slurm_time or SLURM_TIME_MIN, nodes=1, ntasks_per_node=1,
                         array_parallelism=args.shards, additional_parameters=_slurm_opts(args.slurm_opt),
                         **{k: v for k, v in opts.items() if v is not None})
    return ex


def _local_gpus() -> int:
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _submit_one(ex, kind: str, task: ShardTask):
    n_gpu = _local_gpus() if kind == "local" else 0
    if n_gpu:              # local: one GPU per task, dealt round-robin (Slurm gives each task its own)
        ex.update_parameters(gpus_per_node=1, visible_gpus=(task.shard % n_gpu,))
    return ex.submit(task)


def _submit_tasks(ex, kind: str, tasks: list[ShardTask]) -> list:
    if kind == "local":    # one process each
        return [_submit_one(ex, kind, t) for t in tasks]
    with ex.batch():       # one sbatch job array; the jobs are filled in when the block ends
        jobs = [ex.submit(t) for t in tasks]
    return jobs


def _one_line(job, exc: BaseException) -> str:
    """Why a job failed, in one line: the error its traceback ends with, or that it left no result."""
    if type(exc).__name__ == "UncompletedJobError":
        return f"died without a result (killed or crashed; its log: {job.paths.stderr})"
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    errs = [ln for ln in lines if re.match(r"^[A-Za-z_.]+(Error|Exception|Interrupt)\b", ln)]
    return (errs[-1] if errs else lines[0] if lines else type(exc).__name__)[:300]


def submit(args, run) -> int:
    why = usage_error(args)
    if why:
        return die(why)
    submitit = _submitit()
    if submitit is None:
        return die("--submit needs submitit: pip install 'tilebench[cluster]' (or pip install submitit)")
    args.shards = args.shards or 1
    if args.sweeps_file:
        args.sweeps_file = os.path.abspath(args.sweeps_file)     # the task may start in another folder
    run_dir = os.path.abspath(args.out or default_run_dir(args))
    from bench.measure.store import fresh_results_file
    for i in range(args.shards):
        folder = shard_dir(run_dir, i, args.shards)
        fresh_results_file(folder, args.resume)     # old results kept aside unless resuming
        if os.path.exists(os.path.join(folder, STATE)):
            os.remove(os.path.join(folder, STATE))   # the last run's state: this one has not started
    # the job unpickles bench.scale.shard_task before any of our code runs: the repo must be importable there
    path = os.environ.get("PYTHONPATH", "")
    if SOURCE_ROOT not in path.split(os.pathsep):
        os.environ["PYTHONPATH"] = SOURCE_ROOT + (os.pathsep + path if path else "")
    try:
        ex = _executor(submitit, args.submit, os.path.join(run_dir, "submitit"), args)
    except RuntimeError as e:      # submitit: no srun here
        return die(f"--submit {args.submit}: {e}")
    defaults = flag_defaults()
    tasks = [ShardTask(args, i, args.shards, run_dir, run=run, defaults=defaults) for i in range(args.shards)]
    jobs = _submit_tasks(ex, args.submit, tasks)
    ids = [j.job_id for j in jobs]
    print(f"submitted {len(ids)} task(s) ({args.submit}): job {', '.join(ids) if len(ids) < 5 else ids[0] + ' ... ' + ids[-1]}"
          f"; run folder {run_dir}", file=sys.stderr)
    if args.no_wait:
        print(f"merge and report when they finish: python run_bench.py --collect {run_dir}")
        return 0
    try:
        failed = wait(ex, dict(enumerate(jobs)), tasks, args.retries, args.submit)
    except KeyboardInterrupt:
        later = f"they go on; later: python run_bench.py --collect {run_dir}" if args.submit == "slurm" else \
            "local tasks stop too; rerun with --resume to finish (finished points are kept)"
        print(f"\nstopped waiting for the tasks: {later}", file=sys.stderr)
        return 130
    code = collect(run_dir, args.report_dir, args.strict, no_report=args.no_report)
    return 1 if failed and code == 0 else code


def wait(ex, jobs: dict, tasks: list[ShardTask], retries: int, kind: str) -> list[int]:
    """Wait for every shard; resubmit one that failed (a kill, a crash) up to `retries` times. Returns the
    shards that still failed."""
    poll_s = 30.0 if kind == "slurm" else 1.0   # sacct is queried at most every poll; local is a process poll
    failed = []
    while jobs:
        for i, job in list(jobs.items()):
            if not job.done():
                continue
            del jobs[i]
            err = job.exception()
            if err is None:
                print(f"shard {i}/{len(tasks)} done (job {job.job_id})", file=sys.stderr)
                continue
            t = tasks[i]
            if t.attempt > retries:
                print(f"shard {i}/{len(tasks)} failed after {t.attempt} attempts (job {job.job_id}): "
                      f"{_one_line(job, err)}", file=sys.stderr)
                failed.append(i)
                continue
            tasks[i] = ShardTask(t.args, t.shard, t.shards, os.path.dirname(t.folder), attempt=t.attempt + 1,
                                 run=t.run, defaults=t.defaults)
            jobs[i] = _submit_one(ex, kind, tasks[i])
            print(f"shard {i}/{len(tasks)} failed (job {job.job_id}): {_one_line(job, err)}; resubmitted as job "
                  f"{jobs[i].job_id} (attempt {t.attempt + 1} of {retries + 1}); its finished points are kept",
                  file=sys.stderr)
        if jobs:
            time.sleep(poll_s)
    return failed


def shard_folders(run_dir: str) -> list[str]:
    dirs = [d for d in glob.glob(os.path.join(run_dir, "shard-*-of-*")) if os.path.isdir(d)]
    return sorted(dirs, key=lambda d: tuple(int(x) for x in re.findall(r"\d+", os.path.basename(d))[::-1]))


def collect(run_dir: str, report_dir: str | None = None, strict: bool = False, no_report: bool = False) -> int:
    """Merge the shards' results files into one summary and report; say which shards are not finished."""
    from bench.report import pages
    from kernels.rows import failed, read_file
    folders = shard_folders(run_dir)
    if not folders:
        return die(f"--collect {run_dir}: no shard-*-of-* folders (is it a --submit run folder?)")
    if len({re.sub(r"^shard-\d+-", "", os.path.basename(d)) for d in folders}) > 1:
        print(f"warning: {run_dir} holds shards of different splits; all are merged", file=sys.stderr)
    files, rows, unfinished = [], [], []
    for d in folders:
        path = os.path.join(d, "results.jsonl")
        got = read_file(path)
        state = read_state(d)
        status = state.get("status", "not started")
        if os.path.exists(path):
            files.append(path)
        rows += got
        if status != "done":
            unfinished.append(os.path.basename(d))
        where = (f" on {state['host']}" if state.get("host") else "") + \
            (f" (as of {state['updated']})" if status not in ("done", "not started") else "")
        extra = "".join(f", {n} {k}" for k, n in (("resubmissions", state.get("attempt", 1) - 1),
                                                   ("requeues", state.get("requeues", 0))) if n)
        print(f"{os.path.basename(d)}: {status}{where}, {len(got)} points{extra}", file=sys.stderr)
    if not rows:
        print(f"{run_dir}: no results yet", file=sys.stderr)
        return 1
    print(pages.summary_table(rows))
    print("results: " + " ".join(files))
    if not no_report:
        path = pages.build(files, report_dir or os.path.join(os.path.abspath("reports"), os.path.basename(run_dir.rstrip("/"))))
        print(f"report: {path}")
    if unfinished:
        print(f"not finished: {', '.join(unfinished)} (rerun the submit command with --resume to finish them; "
              f"their measured points are kept)", file=sys.stderr)
    return 1 if strict and (failed(rows) or unfinished) else 0
