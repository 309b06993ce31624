"""The stress battery: before a point is timed, its impl also passes the cases its op's spec declares
(OpSpec.stress_cases): the layouts the model hands it, value regimes that break naive kernels (rows far from zero,
outlier channels, logits at a trained model's scale, large attention scores, GELU at large |x|) and ragged and edge
sizes. Each case is judged by the gate's rule (bench/measure/check.py) against eager on the same inputs.

A case's verdict is kept per (op, impl, config, pass, case) for the life of the process, so a sweep pays each case
once however many shapes share it. Peers' autotuners take one config at the battery's sizes (tunecap.one_config).
A case an impl declines is listed in the row: declining is no way around the
battery, it is a fact about the impl."""
from __future__ import annotations

import dataclasses
import json
import zlib

from bench.measure import check as checking
from bench.measure import tunecap
from kernels import registry
from kernels.spec import gen_for

_verdicts: dict[str, "Verdict"] = {}


@dataclasses.dataclass
class Verdict:
    regime: str
    case: str          # the case's shape label and dtype
    status: str        # ok | declined | wrong | error | oom | compile_error
    message: str = ""

    def text(self) -> str:
        return self.status if self.status == "ok" else f"{self.status}: {self.message}"


def _key(op, impl, cfg, pass_, case, device) -> str:
    return json.dumps([op, impl, cfg, pass_, case.regime, case.shape, case.dtype, device], sort_keys=True, default=str)


def _label(spec, case) -> str:
    try:
        return f"{spec.label(case.shape)} {case.dtype}"
    except (KeyError, ValueError, TypeError):
        return f"{case.shape} {case.dtype}"


def run(spec, name: str, impl, cfg: dict, shape: dict, dtype: str, pass_: str, device: str, seed: int,
        classify, interpreted: bool = False) -> list[Verdict]:
    """The battery for one point: a verdict per case, stopping at the first that is neither ok nor declined.
    classify(exc) -> (status, message) names what a case's exception means (bench/measure/runner.py)."""
    out = []
    for case in spec.stress_cases(shape, dtype):
        key = _key(spec.name, name, cfg, pass_, case, device)
        if key not in _verdicts:
            with tunecap.one_config():
                _verdicts[key] = _run_case(spec, impl, cfg, case, pass_, device, seed, classify, interpreted)
        v = _verdicts[key]
        out.append(v)
        if v.status not in ("ok", "declined"):
            break
    return out


def _run_case(spec, impl, cfg, case, pass_, device, seed, classify, interpreted) -> Verdict:
    label = _label(spec, case)
    why = impl.why_not(case.shape, case.dtype, device, pass_)
    if why:
        return Verdict(case.regime, label, "declined", why)
    gen = gen_for(seed + zlib.crc32(case.regime.encode()), device)
    try:
        inputs = spec.make_inputs(case.shape, case.dtype, device, gen)
        if case.values is not None:
            inputs = case.values(inputs, gen)
        res = checking.check(spec, spec.wrap(impl.fn, case.shape), case.shape, case.dtype, pass_, device, cfg,
                             inputs=inputs, interpreted=interpreted)
    except registry.Unsupported as e:
        return Verdict(case.regime, label, "declined", str(e))
    except Exception as e:  # noqa: BLE001 - a case that raises is the point's failure, classified like any other
        status, msg = classify(e)
        return Verdict(case.regime, label, status, msg)
    return Verdict(case.regime, label, "ok" if res.ok else "wrong", "" if res.ok else res.message)


def into_row(row: dict, verdicts: list[Verdict]) -> Verdict | None:
    """The battery's columns (`stress`: regime -> verdict, `stress_declined`), and the failing verdict if any."""
    row["stress"] = {v.regime: v.text() for v in verdicts}
    row["stress_declined"] = [v.regime for v in verdicts if v.status == "declined"]
    bad = [v for v in verdicts if v.status not in ("ok", "declined")]
    return bad[0] if bad else None


def clear() -> None:
    _verdicts.clear()
