"""Time of one SGD step of LeNet' (batch 100) without and with Jacobian regularization.

Every variant runs the same step -- zero_grad, forward, loss, backward, optimizer.step -- on its own
copy of the model (same initial weights), and the variants are interleaved round-robin over the
repetitions so that a machine shared with other work slows them all alike. The table gives the
median wall-clock time per step and its ratio to the plain step, and for the regularized variants the
median over rounds of the ratio to Algorithm 1 written plainly *in the same round* (n_proj = 1 against
"alg1-plain n=1", exact against "alg1-plain exact"), which drifting load affects least.

Variants:
  plain                  cross-entropy only
  alg1-plain             the paper's Algorithm 1 written the straightforward way (as the official
                         code does it): per projection randn, normalise, autograd.grad with
                         create_graph, accumulate C * ||Jv||^2 / (n_proj * B); J w.r.t. the
                         normalised input ("exact", with --extra: a loop over the C one-hot directions)
  jacobian_penalty(...)  this library: vjp / jvp with n_proj 1 and 3, exact, and auto (the default)
  --extra                also JacobianReg (n=1 and n=-1, exact) on the caller's graph, and the jvp
                         estimator through torch.autograd.forward_ad instead of the traced evaluator

    OMP_NUM_THREADS=2 python benchmarks/jr_step.py [--repeats 20] [--burst 3] [--batch-size 100]
        [--device cpu] [--threads N] [--extra]
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from jacreg.architectures import create, split_normalization  # noqa: E402
from jacreg.device import describe, pick  # noqa: E402
from jacreg.regularizer import (  # noqa: E402
    JacobianReg,
    forward_mode,  # noqa: E402
    jacobian_penalty,
)

LAMBDA_JR = 0.01
EXTRA = ("alg1-plain exact", "JacobianReg n=1", "JacobianReg exact", "jvp n=1, torch fwAD")
EXACT = ("alg1-plain exact", "exact", "JacobianReg exact")


def algorithm1_plain(body: nn.Module, z: torch.Tensor, logits: torch.Tensor, n_proj: int) -> torch.Tensor:
    """Algorithm 1 as the official code writes it (a Python loop of backward passes); n_proj=0: exact."""
    b, c = logits.shape
    num = c if n_proj == 0 else n_proj
    j2 = torch.zeros((), device=z.device, dtype=z.dtype)
    for i in range(num):
        if n_proj == 0:
            v = torch.zeros(b, c, device=z.device, dtype=z.dtype)
            v[:, i] = 1
        else:
            v = torch.randn(b, c, device=z.device, dtype=z.dtype)
            v = v / v.norm(dim=1, keepdim=True)
        (jv,) = torch.autograd.grad(logits, z, v, retain_graph=True, create_graph=True)
        j2 = j2 + c * jv.pow(2).sum() / (num * b)
    return 0.5 * j2


Step = Callable[[], None]


def make_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, tuple[str, Step]]:
    """name -> (description, one SGD step) for every variant, each on its own copy of the model."""

    def with_copy(loss_fn: Callable[[nn.Module], torch.Tensor]) -> Callable[[], None]:
        net = copy.deepcopy(model)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            loss_fn(net).backward()
            opt.step()

        return step

    def plain(net: nn.Module) -> torch.Tensor:
        return F.cross_entropy(net(x), y)

    def alg1(n_proj: int) -> Callable[[nn.Module], torch.Tensor]:
        def loss(net: nn.Module) -> torch.Tensor:
            normalize, body = split_normalization(net)
            z = normalize(x).requires_grad_(True)
            logits = body(z)
            return F.cross_entropy(logits, y) + LAMBDA_JR * algorithm1_plain(body, z, logits, n_proj)
        return loss

    def library(n_proj: int, method: str | None) -> Callable[[nn.Module], torch.Tensor]:
        def loss(net: nn.Module) -> torch.Tensor:
            if method is None:
                logits, r = jacobian_penalty(net, x)
            else:
                logits, r = jacobian_penalty(net, x, n_proj=n_proj, method=method)
            return F.cross_entropy(logits, y) + LAMBDA_JR * r
        return loss

    def module(n_proj: int) -> Callable[[nn.Module], torch.Tensor]:
        reg = JacobianReg(n_proj)

        def loss(net: nn.Module) -> torch.Tensor:
            normalize, body = split_normalization(net)
            z = normalize(x).requires_grad_(True)
            logits = body(z)
            return F.cross_entropy(logits, y) + LAMBDA_JR * reg(z, logits)
        return loss

    def torch_forward_ad(net: nn.Module) -> torch.Tensor:
        normalize, body = split_normalization(net)
        z = normalize(x)
        logits, tan = forward_mode.jvp_generic(body, z, torch.randn(1, *z.shape, device=z.device))
        return F.cross_entropy(logits, y) + LAMBDA_JR * 0.5 * tan.pow(2).sum() / z.shape[0]

    return {
        "plain": ("no regularizer", with_copy(plain)),
        "alg1-plain n=1": ("Algorithm 1 written plainly, n_proj=1", with_copy(alg1(1))),
        "alg1-plain exact": ("Algorithm 1 written plainly, loop over the C classes", with_copy(alg1(0))),
        "vjp n=1": ("jacobian_penalty(method='vjp', n_proj=1)", with_copy(library(1, "vjp"))),
        "vjp n=3": ("jacobian_penalty(method='vjp', n_proj=3)", with_copy(library(3, "vjp"))),
        "jvp n=1": ("jacobian_penalty(method='jvp', n_proj=1)", with_copy(library(1, "jvp"))),
        "jvp n=3": ("jacobian_penalty(method='jvp', n_proj=3)", with_copy(library(3, "jvp"))),
        "exact": ("jacobian_penalty(n_proj=0)", with_copy(library(0, "exact"))),
        "auto (default)": ("jacobian_penalty(model, x)", with_copy(library(1, None))),
        "JacobianReg n=1": ("JacobianReg(1)(z, logits): Algorithm 1 on an existing graph",
                            with_copy(module(1))),
        "JacobianReg exact": ("JacobianReg(n=-1)(z, logits): one backward pass per class",
                              with_copy(module(0))),
        "jvp n=1, torch fwAD": ("the jvp estimator through torch.autograd.forward_ad (no traced rules)",
                                with_copy(torch_forward_ad)),
    }


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
    parser.add_argument("--repeats", type=int, default=20, help="timed rounds (each runs every variant)")
    parser.add_argument("--burst", type=int, default=3,
                        help="consecutive steps per variant and round; the round keeps the fastest, which "
                             "filters out preemption by other work on a shared machine (1: no filtering)")
    parser.add_argument("--extra", action="store_true",
                        help="also time Algorithm 1's exact loop, JacobianReg, and jvp through forward_ad")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: as set)")
    parser.add_argument("--dropout", type=float, default=0.0, help="LeNet' dropout (the paper's JR runs: 0)")
    parser.add_argument("--data", choices=("random", "mnist-5k"), default="random",
                        help="random MNIST-shaped images, or the first batch of mnist-5k")
    parser.add_argument("--only", default=None, help="comma-separated variant names to run (plain always)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick(args.device)
    torch.manual_seed(0)
    if args.data == "mnist-5k":
        from jacreg.data import load_dataset

        x, y = load_dataset("mnist-5k", split="train", limit=args.batch_size)
    else:
        x = torch.rand(args.batch_size, 1, 28, 28)
        y = torch.randint(0, 10, (args.batch_size,))
    x, y = x.to(device), y.to(device)
    model = create("lenet", dropout=args.dropout).to(device).train()
    steps = make_steps(model, x, y)
    if not args.extra:
        steps = {k: v for k, v in steps.items() if k not in EXTRA}
    if args.only:
        wanted = {"plain", *(s.strip() for s in args.only.split(","))}
        steps = {k: v for k, v in steps.items() if k in wanted}

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    times: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    for rnd in range(args.warmup + args.repeats):
        for name, (_, step) in steps.items():
            best = (math.inf, math.inf)
            for _ in range(max(1, args.burst)):
                sync()
                t0, c0 = time.perf_counter(), time.process_time()
                step()
                sync()
                best = min(best, (time.perf_counter() - t0, time.process_time() - c0))
            if rnd >= args.warmup:
                times[name].append(best[0])
                cpu[name].append(best[1])
        print(f"\rround {rnd + 1}/{args.warmup + args.repeats}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)

    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    base, base_min = statistics.median(times["plain"]), min(times["plain"])
    base_cpu = statistics.median(cpu["plain"])

    def paired(name: str) -> str:
        ref = "alg1-plain exact" if ("exact" in name and name in EXACT) else "alg1-plain n=1"
        if name in ("plain", ref) or ref not in times or name in ("vjp n=3", "jvp n=3"):
            return ""
        ratios = [a / b for a, b in zip(times[name], times[ref], strict=True)]
        return f"{statistics.median(ratios):.2f}x"

    print(f"LeNet' SGD step, batch {args.batch_size}, dropout {args.dropout}, {args.data} data; "
          f"device {describe(device)}; CPU {cpu_name()} ({os.cpu_count()} logical cores), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads "
          f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}); load average "
          f"{load_before:.1f} before, {load_after:.1f} after; "
          f"{args.repeats} interleaved rounds of {max(1, args.burst)} steps per variant (each round keeps "
          "its fastest step). Wall-clock median over the rounds and its ratio to plain, p25-p75, the fastest "
          "step overall, and the process CPU time (all threads) of the kept steps.\n")
    print("| variant | what runs | median ms | p25-p75 ms | ratio to plain | min ms | ratio of mins "
          "| CPU ms | CPU ratio | vs Alg. 1 plain (paired) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, (what, _) in steps.items():
        t = sorted(times[name])
        med, c = statistics.median(t), statistics.median(cpu[name])
        q1, q3 = t[len(t) // 4], t[(3 * len(t)) // 4]
        print(f"| {name} | {what} | {med * 1e3:.2f} | {q1 * 1e3:.1f}-{q3 * 1e3:.1f} | {med / base:.2f}x "
              f"| {t[0] * 1e3:.2f} | {t[0] / base_min:.2f}x | {c * 1e3:.2f} | {c / base_cpu:.2f}x "
              f"| {paired(name)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
