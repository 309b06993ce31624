"""Run the wrong-kernel zoo through the harness as a user would (run_bench.py with plugins) and say which
members were caught. CPU: the test suite calls `run_zoo`. GPU: `python -m tests.zoo.run --device cuda --out DIR`
prints the table and exits 1 if any member escaped."""
from __future__ import annotations

import argparse
import contextlib
import os
import sys

import yaml

from tests.zoo.members import MEMBERS, plugins_env


def sweeps_doc(where: str) -> dict:
    """One sweep per member (its op, dtypes, passes, shapes), and `zoo` including them all."""
    sweeps = {}
    for name, (_, op, _why, dtypes, passes, shapes) in MEMBERS.items():
        sweeps[name] = {"op": op, "impls": [name], "dtypes": dtypes, "passes": passes, "shapes": shapes[where],
                        "cpu_shapes": shapes["cpu"]}
    sweeps["zoo"] = {"include": list(MEMBERS)}
    return {"sweeps": sweeps}


@contextlib.contextmanager
def registered():
    """TILEBENCH_PLUGINS set for the members, registry caches cleared before and after."""
    from kernels import registry
    saved = os.environ.get(registry.PLUGINS_ENV)
    os.environ[registry.PLUGINS_ENV] = plugins_env()
    _clear(registry)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(registry.PLUGINS_ENV, None)
        else:
            os.environ[registry.PLUGINS_ENV] = saved
        for name, (_, op, *_r) in MEMBERS.items():
            registry.op_package(op).IMPLS.pop(name, None)
        _clear(registry)


def _clear(registry):
    for f in (registry.op_package, registry.resolve, registry._import_impl):
        f.cache_clear()


def run_zoo(device: str, out_dir: str, budget: float = 0.05) -> dict[str, list[dict]]:
    """Member name -> its result rows, from one `run_bench.py --sweep zoo` run."""
    from bench import cli
    from bench.measure.store import read_rows
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "zoo_sweeps.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(sweeps_doc("cpu" if device == "cpu" else "gpu"), f)
    with registered():
        rc = cli.main(["--sweep", "zoo", "--sweeps-file", path, "--device", device, "--out", out_dir,
                       "--budget", str(budget), "--no-report", "--fresh-verdicts"])   # every member judged now
    if rc not in (0, 1):
        raise RuntimeError(f"run_bench.py exited {rc}")
    rows = read_rows(os.path.join(out_dir, "results.jsonl"))
    return {name: [r for r in rows if r["impl"] == name] for name in MEMBERS}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", default="results/zoo")
    args = p.parse_args(argv)
    by_member = run_zoo(args.device, args.out)
    escaped = 0
    print(f"{'member':28s} {'op':15s} {'what is wrong':42s} verdict")
    for name, rows in by_member.items():
        statuses = sorted({r["status"] for r in rows})
        caught = bool(rows) and statuses == ["wrong"]
        escaped += not caught
        msg = rows[0]["message"][:110] if rows else "no rows"
        print(f"{name:28s} {MEMBERS[name][1]:15s} {MEMBERS[name][2]:42s} "
              f"{'caught' if caught else 'ESCAPED ' + ','.join(statuses)}  {msg}")
    print(f"zoo: {len(by_member) - escaped} of {len(by_member)} members caught on {args.device}")
    return 1 if escaped else 0


if __name__ == "__main__":
    sys.exit(main())
