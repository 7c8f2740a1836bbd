"""Every Jacobian-regularizer estimator on LeNet', DDNet and ResNet-18: time, value variance, gradient noise.

For each network, at initialisation and after some training with JR (lambda 0.01, ``method="auto"``),
on one fixed training batch of real digits (mnist-5k; resized and repeated to 3x32x32 for DDNet and
3x224x224 for ResNet-18):

* step time: forward + backward of ``CE + 0.01 R`` for each estimator, interleaved round-robin with a
  plain step (CE only) and Algorithm 1 written plainly (``autograd.grad(logits, z, v, create_graph=True)``
  as the official code does); median over rounds and its ratio to the plain step;
* value relative variance: ``Var(R_est) / R^2`` over projection draws (R exact, from ``jacobian_norms``);
* gradient noise: trace of the covariance of the parameter gradient of ``0.01 R`` over projection draws
  (model in eval mode, so dropout adds nothing), next to the trace of the covariance of the CE
  gradient over random training minibatches of the same size (the noise SGD has anyway);
* variance x time: gradient noise x step time (in plain steps), the cost of a given gradient
  precision (lower is better), relative to Algorithm 1 (``vjp``).

    python benchmarks/jr_estimators.py [--models lenet,ddnet,resnet18] [--threads 1] [--json out.json]

The README's table comes from this script; it says on which machine it ran.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from jacreg.architectures import MNIST_MEAN, MNIST_STD, create, split_normalization  # noqa: E402
from jacreg.data import load_dataset  # noqa: E402
from jacreg.regularizer import jacobian_norms, jacobian_penalty, resolve_method  # noqa: E402

LAMBDA_JR = 0.01


@dataclass(frozen=True)
class Setting:
    """One network: its input size, batch, training length and learning rate."""

    arch: str
    size: int
    channels: int
    batch: int
    train_steps: int
    lr: float
    draws: int
    rounds: int
    exact: bool = True


SETTINGS = {
    "lenet": Setting("lenet", 28, 1, 100, 120, 0.1, 32, 15),  # 120 steps = 3 epochs of mnist-5k
    "ddnet": Setting("ddnet", 32, 3, 100, 150, 0.01, 16, 7),
    "resnet18": Setting("resnet18", 224, 3, 8, 30, 0.01, 8, 3, exact=False),
}


def images(setting: Setting, x: Tensor) -> Tensor:
    """mnist-5k digits as the network's input: resized (bilinear) and repeated over the channels."""
    if setting.size != x.shape[-1]:
        x = F.interpolate(x, size=(setting.size, setting.size), mode="bilinear", align_corners=False)
    return x.repeat(1, setting.channels, 1, 1).clamp(0, 1) if setting.channels != x.shape[1] else x


def build(setting: Setting, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    c = setting.channels
    return create(setting.arch, num_classes=10, input_shape=(c, setting.size, setting.size),
                  mean=MNIST_MEAN * c, std=MNIST_STD * c)


def algorithm1_plain(model: nn.Module, x: Tensor, n_proj: int) -> tuple[Tensor, Tensor]:
    """Algorithm 1 as the official code writes it, on the normalised input (n_proj=0: the C-loop)."""
    normalize, body = split_normalization(model)
    z = normalize(x).requires_grad_(True)
    logits = body(z)
    b, c = logits.shape
    num = c if n_proj == 0 else n_proj
    j2 = torch.zeros((), dtype=z.dtype)
    for i in range(num):
        if n_proj == 0:
            v = torch.zeros(b, c, dtype=z.dtype)
            v[:, i] = 1
        else:
            v = torch.randn(b, c, dtype=z.dtype)
            v = v / v.norm(dim=1, keepdim=True)
        (jv,) = torch.autograd.grad(logits, z, v, retain_graph=True, create_graph=True)
        j2 = j2 + c * jv.pow(2).sum() / (num * b)
    return logits, 0.5 * j2


def train(model: nn.Module, setting: Setting, x_all: Tensor, y_all: Tensor,
          log: Callable[[str], None]) -> None:
    """``setting.train_steps`` SGD steps of CE + 0.01 R (method "auto"), momentum 0.9, L2 5e-4."""
    opt = torch.optim.SGD(model.parameters(), lr=setting.lr, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(1)
    model.train()
    t0 = time.perf_counter()
    for step in range(setting.train_steps):
        idx = torch.randint(0, len(x_all), (setting.batch,), generator=gen)
        logits, r = jacobian_penalty(model, images(setting, x_all[idx]), n_proj=1)
        loss = F.cross_entropy(logits, y_all[idx]) + LAMBDA_JR * r
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % max(1, setting.train_steps // 5) == 0:
            log(f"  step {step + 1}/{setting.train_steps}: loss {float(loss):.3f}, R {float(r):.3f} "
                f"({time.perf_counter() - t0:.0f} s)")


def _flat_grad(model: nn.Module, loss: Tensor) -> Tensor:
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)
    return torch.cat([g.reshape(-1) for g in grads]).double()


def _trace_cov(vectors: list[Tensor]) -> float:
    stack = torch.stack(vectors)
    return float((stack - stack.mean(0)).pow(2).sum() / (len(vectors) - 1))


def noise(model: nn.Module, setting: Setting, x: Tensor, method: str,
          draws: int) -> tuple[float, float, float]:
    """(mean R, relative variance of R, trace of the covariance of grad 0.01 R) over projection draws."""
    gen = torch.Generator().manual_seed(7)
    values, grads = [], []
    model.eval()
    for _ in range(draws):
        _, r = jacobian_penalty(model, x, n_proj=1, method=method, generator=gen)
        values.append(float(r))
        grads.append(_flat_grad(model, LAMBDA_JR * r))
    model.train()
    mean = statistics.fmean(values)
    return mean, statistics.variance(values) / mean**2, _trace_cov(grads)


def ce_noise(model: nn.Module, setting: Setting, x_all: Tensor, y_all: Tensor, batches: int) -> float:
    """Trace of the covariance of the CE gradient over random minibatches (eval mode)."""
    gen = torch.Generator().manual_seed(11)
    grads = []
    model.eval()
    for _ in range(batches):
        idx = torch.randint(0, len(x_all), (setting.batch,), generator=gen)
        grads.append(_flat_grad(model, F.cross_entropy(model(images(setting, x_all[idx])), y_all[idx])))
    model.train()
    return _trace_cov(grads)


def step_times(model: nn.Module, setting: Setting, x: Tensor, y: Tensor, methods: list[str],
               rounds: int) -> tuple[dict[str, float], dict[str, float]]:
    """Forward + backward of CE + 0.01 R per variant, interleaved round-robin: median seconds, and the
    median over rounds of the ratio to the plain step of the same round (what drifting load affects
    least)."""
    nets = {m: copy.deepcopy(model).train() for m in ["plain", "alg1-plain", *methods]}

    def run(name: str) -> None:
        net = nets[name]
        net.zero_grad(set_to_none=True)
        if name == "plain":
            loss = F.cross_entropy(net(x), y)
        else:
            if name == "alg1-plain":
                logits, r = algorithm1_plain(net, x, 1)
            elif name == "exact":
                logits, r = jacobian_penalty(net, x, n_proj=0)
            else:
                logits, r = jacobian_penalty(net, x, n_proj=1, method=name)
            loss = F.cross_entropy(logits, y) + LAMBDA_JR * r
        loss.backward()

    times: dict[str, list[float]] = {name: [] for name in nets}
    burst = 3 if setting.arch == "lenet" else 1
    for rnd in range(rounds + 1):
        for name in nets:
            best = math.inf
            for _ in range(burst):
                t0 = time.perf_counter()
                run(name)
                best = min(best, time.perf_counter() - t0)
            if rnd > 0:  # the first round warms up (and tunes kernels)
                times[name].append(best)
    paired = {name: statistics.median(a / b for a, b in zip(t, times["plain"], strict=True))
              for name, t in times.items()}
    return {name: statistics.median(t) for name, t in times.items()}, paired


def measure(setting: Setting, state: str, model: nn.Module, x_all: Tensor, y_all: Tensor,
            log: Callable[[str], None]) -> dict:
    x, y = images(setting, x_all[: setting.batch]), y_all[: setting.batch]
    choice = resolve_method(model, x, 1)
    methods = ["vjp", "jvp"] + (["exact"] if setting.exact else [])
    times, vs_plain = step_times(model, setting, x, y, methods + ["auto"], setting.rounds)
    model.eval()
    exact_r = float(0.5 * jacobian_norms(model, x, normalized=True).pow(2).mean())
    model.train()
    ce = ce_noise(model, setting, x_all, y_all, batches=max(8, setting.draws))
    rows = {}
    for m in ["vjp", "jvp"]:
        mean, rel_var, gvar = noise(model, setting, x, m, setting.draws)
        rows[m] = {"seconds": times[m], "rel_value_variance": rel_var, "grad_variance": gvar,
                   "mean_R": mean}
        log(f"  {m}: {times[m] * 1e3:.1f} ms, value rel. var. {rel_var:.3f}, grad var {gvar:.3g}")
    if setting.exact:
        rows["exact"] = {"seconds": times["exact"], "rel_value_variance": 0.0, "grad_variance": 0.0,
                         "mean_R": exact_r}
    rows["auto"] = dict(rows[choice.method], seconds=times["auto"])
    for name, row in rows.items():
        row["step_vs_plain"] = vs_plain[name]
        row["variance_x_time"] = row["grad_variance"] * row["step_vs_plain"]
        row["vs_vjp"] = row["variance_x_time"] / rows["vjp"]["variance_x_time"]
    return {"arch": setting.arch, "state": state, "batch": setting.batch,
            "input": [setting.channels, setting.size, setting.size], "draws": setting.draws,
            "rounds": setting.rounds, "R_exact": exact_r, "ce_grad_variance": ce,
            "plain_seconds": times["plain"], "alg1_plain_vs_plain": vs_plain["alg1-plain"],
            "auto": choice.to_dict(), "estimators": rows}


def table(results: list[dict]) -> str:
    lines = ["| network, state | estimator | step / plain | value rel. var. | grad. variance (0.01 R) | "
             "CE minibatch noise | variance x time vs vjp |", "|---|---|---:|---:|---:|---:|---:|"]
    for res in results:
        label = f"{res['arch']} ({'x'.join(map(str, res['input']))}, batch {res['batch']}), {res['state']}"
        alg1 = res["alg1_plain_vs_plain"]
        lines.append(f"| {label} | Algorithm 1 written plainly | {alg1:.2f}x | | | | |")
        for name, row in res["estimators"].items():
            shown = f"auto (= {res['auto']['method']})" if name == "auto" else name
            var = "0 (exact)" if name == "exact" else f"{row['grad_variance']:.2g}"
            rel = "0" if name == "exact" else f"{row['rel_value_variance']:.2g}"
            vs = "-" if name == "exact" else f"{row['vs_vjp']:.2f}x"
            lines.append(f"| {label} | {shown} | {row['step_vs_plain']:.2f}x | {rel} | {var} | "
                         f"{res['ce_grad_variance']:.2g} | {vs} |")
    return "\n".join(lines)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lenet,ddnet,resnet18")
    parser.add_argument("--states", default="init,trained")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--quick", action="store_true", help="fewer draws, rounds and training steps")
    parser.add_argument("--rounds", type=int, default=None, help="timing rounds (default: per network)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    x_all, y_all = load_dataset("mnist-5k", split="train")
    results = []
    load = [os.getloadavg()[0]]
    for name in args.models.split(","):
        setting = SETTINGS[name.strip()]
        if args.quick:
            setting = Setting(setting.arch, setting.size, setting.channels, setting.batch,
                              max(2, setting.train_steps // 10), setting.lr, max(4, setting.draws // 4),
                              max(2, setting.rounds // 3), setting.exact)
        if args.rounds:
            setting = Setting(setting.arch, setting.size, setting.channels, setting.batch,
                              setting.train_steps, setting.lr, setting.draws, args.rounds, setting.exact)
        model = build(setting)
        for state in args.states.split(","):
            if state == "trained":
                log(f"{name}: training {setting.train_steps} steps")
                train(model, setting, x_all, y_all, log)
            log(f"{name}, {state}: measuring")
            results.append(measure(setting, state, model, x_all, y_all, log))
            load.append(os.getloadavg()[0])
            if args.json:
                record = {"machine": machine(args.threads, load), "results": results}
                Path(args.json).write_text(json.dumps(record, indent=1))
    print(f"{machine(args.threads, load)}\n")
    print(table(results))
    return 0


def machine(threads: int, load: list[float]) -> str:
    return (f"CPU {cpu_name()} ({os.cpu_count()} logical cores), torch {torch.__version__}, "
            f"{threads} thread(s), load average {min(load):.1f}-{max(load):.1f} during the run")


if __name__ == "__main__":
    raise SystemExit(main())
