"""`run_bench.py --doctor`: can this machine run cuTile (and the peers), and if not, what to do about it.

diagnose(device) returns rows {check, status (ok | warn | fail), detail, fix}; main() prints them."""
from __future__ import annotations

import os
import sys
import traceback

import torch

from bench.measure import devinfo


def _row(check, status, detail, fix=""):
    return {"check": check, "status": status, "detail": detail, "fix": fix}


def _gpu_rows(device):
    rows = []
    if not device.startswith("cuda"):
        return [_row("gpu", "warn", "no GPU asked for (device cpu): cuTile kernels can only be compiled here",
                     "run on a CUDA machine to launch kernels; --static compiles for any arch without one")], None
    if not torch.cuda.is_available():
        return [_row("gpu", "fail", f"torch {torch.__version__} sees no CUDA device",
                     "install a CUDA build of torch and check nvidia-smi / CUDA_VISIBLE_DEVICES")], None
    info = devinfo.static_info(device)   # the GPU as every result row describes it
    arch = info["arch"]
    rows.append(_row("gpu", "ok", f"{info['device_name']} ({arch}), torch {torch.__version__}, "
                                  f"CUDA runtime {torch.version.cuda}"))
    driver, why = info.get("driver"), info.get("nvml_error")
    fix = "" if driver else ("pip install nvidia-ml-py to read it" if "not importable" in str(why)
                             else "check the driver with nvidia-smi")
    rows.append(_row("driver", "ok" if driver else "warn", driver or f"unknown: {why}", fix))
    return rows, arch


def _cutile_rows(arch):
    from kernels import cutile_env
    rows = []
    err = cutile_env.import_error()
    if err:
        return [_row("cuda-tile", "fail", err, "pip install 'cuda-tile[tileiras]'")], False
    rows.append(_row("cuda-tile", "ok", f"cuda-tile {devinfo.package_version('cuda-tile')}"))
    path = cutile_env.tileiras_path()
    if not path:
        rows.append(_row("tileiras", "fail", "no tileiras (pip package, PATH or CUDA_HOME/bin)",
                         "pip install 'cuda-tile[tileiras]' (or put a CUDA >= 13.3 bin on PATH)"))
        return rows, False
    ver = cutile_env.tileiras_version(path)
    rows.append(_row("tileiras", "ok" if ver else "warn",
                     f"{path} (from {cutile_env.tileiras_source(path)}), release {ver or '?'}",
                     "" if ver else f"{path} --version failed: reinstall it"))
    archs = [arch] if arch else list(cutile_env.MIN_TILEIRAS)
    bad = {a: cutile_env.arch_unsupported(a, ver) for a in archs}
    if arch:
        why = bad[arch]
        rows.append(_row("tileiras arch", "fail" if why else "ok", why or f"tileiras {ver} targets {arch}",
                         "install tileiras >= 13.3 (pip install -U 'cuda-tile[tileiras]')" if why else ""))
    else:
        ok = [a for a, w in bad.items() if not w]
        rows.append(_row("tileiras arch", "ok" if ok else "fail", f"targets {', '.join(ok) or 'none'}",
                         "" if ok else "install tileiras >= 13.3"))
    fixes = cutile_env.configure()
    if fixes:
        rows.append(_row("CUDA_HOME", "warn", "; ".join(fixes) + " (applied automatically)",
                         "unset CUDA_HOME CUDA_PATH, or point CUDA_HOME at a toolkit >= tileiras"))
    else:
        stale = cutile_env.stale_cuda_home()
        home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
        rows.append(_row("CUDA_HOME", "fail" if stale else "ok",
                         stale or (f"{home} (not passed to this tileiras, or not older)" if home else "unset"),
                         "unset CUDA_HOME CUDA_PATH" if stale else ""))
    rows.append(_row("compile timeout", "ok", f"{cutile_env.compile_timeout_s():g} s "
                                              f"(set {cutile_env.TIMEOUT_ENV}; TileGym uses 5 s)"))
    return rows, True


ct = None   # cuda.tile, imported when the smoke test runs


def _smoke_add(X, Y, Z, TILE):   # decorated with ct.kernel on first use
    i = ct.bid(0)
    x = ct.load(X, index=(i,), shape=(TILE,), padding_mode=ct.PaddingMode.ZERO)
    y = ct.load(Y, index=(i,), shape=(TILE,), padding_mode=ct.PaddingMode.ZERO)
    ct.store(Z, index=(i,), tile=x + y)


_SMOKE = []


def _smoke_kernel():
    global ct
    if not _SMOKE:
        import cuda.tile
        ct = cuda.tile
        _smoke_add.__annotations__["TILE"] = ct.Constant[int]
        _SMOKE.append(ct.kernel(_smoke_add))
    return _SMOKE[0]


def _smoke(device, arch):
    """Compile (and on a GPU launch and verify) one small kernel."""
    from kernels import cutile_aot as aot
    k = _smoke_kernel()
    if arch is None:
        r = aot.compile_kernel(k, "smoke_add", [aot.array("fp32", 1)] * 3 + [256], "sm_90")
        if r["status"] == "ok":
            return _row("smoke test", "ok", f"compiled for sm_90 with no GPU in {r['compile_s']} s "
                                            f"({r['cubin_bytes']} B cubin)")
        return _row("smoke test", "fail", f"compile for sm_90: {r['message']}", _fix_for(r["message"]))
    try:
        x = torch.arange(1000, dtype=torch.float32, device=device)
        y = torch.ones_like(x)
        z = torch.full_like(x, float("nan"))
        aot.launch(k, (aot.cdiv(1000, 256),), (x, y, z, 256))
        torch.cuda.synchronize()
        if torch.equal(z, x + 1):
            return _row("smoke test", "ok", f"compiled for {arch}, launched, result exact")
        return _row("smoke test", "fail", "kernel ran but the result is wrong",
                    "report it with `CUDA_TILE_LOGS=CUTILEIR` output")
    except Exception as e:
        msg = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]
        return _row("smoke test", "fail", msg, _fix_for(msg))


def _fix_for(msg: str) -> str:
    if "failed to compile Tile IR" in msg or "libnvvm" in msg:
        return "tileiras loaded another toolkit's libnvvm: unset CUDA_HOME CUDA_PATH (or use the pip tileiras)"
    if "Timeout" in msg or "timeout" in msg:
        return "raise TILEBENCH_CUTILE_COMPILE_TIMEOUT_S"
    if "not found" in msg:
        return "pip install 'cuda-tile[tileiras]'"
    return "rerun with CUDA_TILE_LOGS=TILEIR for the compiler's output"


def _import_failure(module: str) -> str | None:
    """Why `module` does not import, naming the innermost module where it failed."""
    try:
        __import__(module)
        return None
    except Exception as e:
        where = None
        for fr in reversed(traceback.extract_tb(e.__traceback__)):
            f = fr.filename.replace(os.sep, "/")
            if "/site-packages/" in f or module in f:
                where = f.split("/site-packages/")[-1].removesuffix(".py").replace("/", ".")
                where = f"{where}:{fr.lineno}"
                break
        name = getattr(e, "name", None)
        return (f"{type(e).__name__}: {e}" + (f" (missing module {name!r})" if name else "")
                + (f" at {where}" if where else ""))[:400]


def _peer_rows(device):
    from kernels import backends, peers_env
    rows = []
    tv = devinfo.package_version("triton")
    why = backends.probe("triton", device)
    fix = "" if not why else "pip install triton" if not tv else \
        "needs a CUDA device (or TRITON_INTERPRET=1 for small CPU runs)"
    rows.append(_row("triton", "ok" if not why else ("warn" if tv else "fail"),
                     f"triton {tv}" + (f": {why}" if why else ""), fix))
    peers_env.tilegym_import_error()      # puts TILEBENCH_TILEGYM_PATH on sys.path
    tg = _import_failure("tilegym")
    src = os.environ.get(peers_env.TILEGYM_PATH_ENV)
    if tg:
        rows.append(_row("tilegym", "warn", f"not importable{' from ' + src if src else ''}: {tg}",
                         f"pip install tilegym (--no-deps works), or set {peers_env.TILEGYM_PATH_ENV}=<TileGym>/src"))
    else:
        import tilegym
        rows.append(_row("tilegym", "ok", f"tilegym {getattr(tilegym, '__version__', '?')} from "
                                          f"{os.path.dirname(tilegym.__file__)}"))
    lv = devinfo.package_version("liger-kernel") or devinfo.package_version("liger_kernel")
    lg = _import_failure("liger_kernel")
    rows.append(_row("liger", "ok" if not lg else "warn", f"liger-kernel {lv}" if not lg else f"not importable: {lg}",
                     "" if not lg else "pip install liger-kernel"))
    return rows


def diagnose(device: str | None = None) -> list[dict]:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    rows, arch = _gpu_rows(device)
    try:
        crows, ok = _cutile_rows(arch)
        rows += crows
        if ok:
            rows.append(_smoke(device, arch))
    except Exception as e:   # the doctor itself must not crash
        rows.append(_row("cuda-tile", "fail", f"doctor error: {type(e).__name__}: {e}", "report this"))
    try:
        rows += _peer_rows(device)
    except Exception as e:
        rows.append(_row("peers", "fail", f"doctor error: {type(e).__name__}: {e}", "report this"))
    return rows


def main(argv=None) -> int:
    """argv: a device string ("cuda", "cpu", None for the default) or command-line arguments."""
    import argparse
    if argv is None or isinstance(argv, str):
        device = argv
    else:
        ap = argparse.ArgumentParser(prog="run_bench.py --doctor")
        ap.add_argument("--device", default=None)
        device = ap.parse_args(argv).device
    rows = diagnose(device)
    w = max(len(r["check"]) for r in rows)
    for r in rows:
        print(f"{r['status']:4}  {r['check']:{w}}  {r['detail']}")
        if r["fix"] and r["status"] != "ok":
            print(f"{'':4}  {'':{w}}  fix: {r['fix']}")
    fails = sum(r["status"] == "fail" for r in rows)
    print(f"doctor: {len(rows)} checks, {fails} failed, {sum(r['status'] == 'warn' for r in rows)} warnings")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
