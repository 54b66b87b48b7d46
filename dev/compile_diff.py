"""Where compiled training departs from eager training, part by part.

Runs training steps (forward in train mode, loss, backward; no optimizer step, so every
step sees the same weights) of one model on one window twice: eager, and with the parts of
``DepthNetHybrid.compile_parts`` compiled as the trainer compiles them (``--compile
True``). Every call of a compiled part is recorded (its inputs, its output) and then run
again by the eager twin of that part on the very same inputs, in the same autocast state:
the difference is the part's own (``local``), whatever happened upstream. Also reported:
the difference of each part's outputs from the eager run's (``carried``: upstream
differences included), each step's loss and every parameter's gradient, and both runs'
distance from an eager float64 step (rounding's scale: a compiled run much farther from it
than the eager one computes something else).

    python -m dev.compile_diff --device cuda --amp fp16 --mode reduce-overhead
    python -m dev.compile_diff --device cpu --resnet 18 --ndepths 8 --height 128 --width 160
    python -m dev.compile_diff --device cuda --backend aot_eager --mode default
    python -m dev.compile_diff --device cuda --camera sideways --parts CostRegNet --mode default

Rounding moves a part's output by about its precision's epsilon (relative, in norm); a
part whose ``local`` difference is far above that computes something else when compiled.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
from typing import Callable, Union

import torch

from dev import training_window
from models import precision
from models.depthnet import COMPILE_MODES, COMPILED_PARTS, DepthNetHybrid, compiled_parts
from utils.io import save_json

BACKENDS = ("inductor", "aot_eager", "eager")


# ------------------------------------------------------------------ nested values
def map_tensors(fn: Callable, value):
    """``value`` with ``fn`` applied to every tensor (in lists, tuples, dicts, dataclasses)."""
    if torch.is_tensor(value):
        return fn(value)
    if isinstance(value, (list, tuple)):
        return type(value)(map_tensors(fn, v) for v in value)
    if isinstance(value, dict):
        return {k: map_tensors(fn, v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return type(value)(**{f.name: map_tensors(fn, getattr(value, f.name))
                              for f in dataclasses.fields(value)})
    return value


def clone_tree(value):
    """``value`` with every tensor detached and copied: a compiled part's outputs may live
    in memory its next call reuses."""
    return map_tensors(lambda t: t.detach().clone(), value)


def to_float64(value):
    """``value`` with every floating tensor in float64."""
    return map_tensors(lambda t: t.double() if t.is_floating_point() else t, value)


def tensor_leaves(value, path: str = "") -> list:
    """``[(path, tensor)]`` of the floating tensors in ``value``, in a fixed order."""
    if torch.is_tensor(value):
        return [(path, value)] if value.is_floating_point() else []
    if isinstance(value, (list, tuple)):
        return [leaf for i, v in enumerate(value) for leaf in tensor_leaves(v, f"{path}[{i}]")]
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in tensor_leaves(v, f"{path}[{k!r}]")]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [leaf for f in dataclasses.fields(value)
                for leaf in tensor_leaves(getattr(value, f.name), f"{path}.{f.name}")]
    return []


def relative_difference(got: torch.Tensor, want: torch.Tensor) -> float:
    """``|got - want| / |want|`` in the Frobenius norm, computed in float64."""
    got, want = got.detach().double(), want.detach().double()
    return float((got - want).norm() / want.norm().clamp_min(torch.finfo(torch.float64).tiny))


def worst_difference(got, want) -> tuple:
    """``(relative difference, path)`` of the leaf of two like values that differ most
    (the first such leaf)."""
    got_leaves, want_leaves = tensor_leaves(got), tensor_leaves(want)
    if [path for path, _ in got_leaves] != [path for path, _ in want_leaves]:
        raise ValueError("the compiled and eager outputs have different structures")
    return max(((relative_difference(a, b), path)
                for (path, a), (_, b) in zip(got_leaves, want_leaves)),
               key=lambda diff_path: diff_path[0], default=(0.0, ""))


# ------------------------------------------------------------------ recording calls
@dataclasses.dataclass
class Call:
    """One call of a part: its inputs, output and the autocast dtype it ran under."""

    part: str
    args: tuple
    kwargs: dict
    autocast: Union[torch.dtype, None]
    output: object = None


def record_calls(model: DepthNetHybrid, parts: tuple, calls: list) -> list:
    """Append a :class:`Call` to ``calls`` for every call of the named parts; the hooks are
    hidden from torch.compile (it compiles the part's forward between them), so that the
    recorded values are what the compiled code received and returned. Returns the hook
    handles."""
    handles = []
    for name in parts:
        module = getattr(model, name)

        @torch.compiler.disable
        def before(_module, args, kwargs, name=name):
            device = next(leaf for _, leaf in tensor_leaves((args, kwargs))).device.type
            calls.append(Call(name, clone_tree(args), clone_tree(kwargs),
                              precision.active_dtype(device)))

        @torch.compiler.disable
        def after(_module, _args, _kwargs, output, name=name):
            if calls[-1].part != name or calls[-1].output is not None:
                raise RuntimeError(f"{name}: calls of the compared parts are nested")
            calls[-1].output = clone_tree(output)

        handles += [module.register_forward_pre_hook(before, with_kwargs=True),
                    module.register_forward_hook(after, with_kwargs=True)]
    return handles


def replay(call: Call, module: torch.nn.Module, device_type: str):
    """The eager ``module`` on a recorded call's inputs, in its autocast state."""
    with torch.no_grad(), precision.autocast(device_type, call.autocast):
        return module(*call.args, **call.kwargs)


# ------------------------------------------------------------------ the comparison
def training_step(model: DepthNetHybrid, window: tuple, dtype) -> torch.Tensor:
    """Forward in train mode, loss, backward (gradients in ``.grad``); returns the loss."""
    imgs, poses, K, sample = window
    model.begin_step()
    model.zero_grad(set_to_none=True)
    with precision.autocast(imgs.device.type, dtype):
        _, losses = model(imgs, poses, K, sample, mode="train")
    losses["loss"].backward()
    return losses["loss"].detach().clone()


def compare_calls(compiled_calls: list, eager_calls: list, twins: DepthNetHybrid,
                  device_type: str) -> dict:
    """Per part: how many calls, and the largest ``local`` (the compiled output against
    the eager twin's on the same inputs) and ``carried`` (against the eager run's output
    of the same call) relative differences, with the output tensor where each is."""
    worst = {}
    for mine, theirs in zip(compiled_calls, eager_calls):
        local = worst_difference(mine.output, replay(mine, getattr(twins, mine.part),
                                                     device_type))
        carried = worst_difference(mine.output, theirs.output)
        calls, best_local, best_carried = worst.get(mine.part, (0, (0.0, ""), (0.0, "")))
        worst[mine.part] = (calls + 1, max(best_local, local, key=lambda d: d[0]),
                            max(best_carried, carried, key=lambda d: d[0]))
    return {part: {"calls": calls, "local": local[0], "local_at": local[1],
                   "carried": carried[0], "carried_at": carried[1]}
            for part, (calls, local, carried) in worst.items()}


def gradients(model: torch.nn.Module) -> dict:
    """Copies of the parameters' gradients, by name."""
    return {name: p.grad.detach().clone() for name, p in model.named_parameters()
            if p.grad is not None}


def compare(model: DepthNetHybrid, window: tuple, amp: str = "none",
            backend: Union[str, Callable] = "inductor", mode: str = "default",
            parts: tuple = COMPILED_PARTS, steps: int = 3, float64: bool = True) -> dict:
    """Eager against compiled training steps of ``model`` (left as it was) on ``window``
    (``(imgs, poses, K, sample)`` as :func:`datasets.synthetic.random_frames.random_window` makes it).

    Returns ``{"steps": [{"loss_eager", "loss_compiled", "loss_relative", "parts":
    {part: {"calls", "local", "local_at", "carried", "carried_at"}}}], "gradients":
    {"relative", "by_part": {module: relative}, "worst": [(share, relative,
    parameter)...]}}``
    (``local``/``carried``: the largest relative difference over the part's calls and
    output tensors, and where it is), and with ``float64``, ``"float64"``: both runs against
    an eager float64 step (:func:`float64_report`), the scale to judge by.
    """
    dtype = precision.amp_dtype(amp)
    device_type = window[0].device.type
    eager = copy.deepcopy(model).use_fast_layers(True).train()
    compiled = copy.deepcopy(model).use_fast_layers(True).train()
    compiled.compile_parts(backend, mode, parts)
    # Replays the compiled calls: not the eager run's model, whose parts record their calls.
    twins = copy.deepcopy(eager)
    report = {"config": {"amp": amp, "mode": mode, "parts": list(parts), "steps": steps,
                         "backend": backend if isinstance(backend, str) else repr(backend)},
              "steps": []}
    eager_calls, compiled_calls = [], []
    handles = record_calls(eager, parts, eager_calls) + record_calls(compiled, parts,
                                                                     compiled_calls)
    try:
        for _ in range(steps):
            eager_calls.clear()
            compiled_calls.clear()
            loss_eager = training_step(eager, window, dtype)
            loss_compiled = training_step(compiled, window, dtype)
            if [c.part for c in eager_calls] != [c.part for c in compiled_calls]:
                raise RuntimeError("the compiled model called its parts in another order")
            report["steps"].append({
                "loss_eager": float(loss_eager), "loss_compiled": float(loss_compiled),
                "loss_relative": relative_difference(loss_compiled, loss_eager),
                "parts": compare_calls(compiled_calls, eager_calls, twins, device_type)})
    finally:
        for h in handles:
            h.remove()
    grads_eager, grads_compiled = gradients(eager), gradients(compiled)
    report["gradients"] = gradient_report(grads_compiled, grads_eager)
    if float64:
        report["float64"] = float64_report(model, window, report["steps"][0],
                                           {"eager": grads_eager, "compiled": grads_compiled})
    return report


def float64_report(model: DepthNetHybrid, window: tuple, first_step: dict,
                   grads: dict) -> dict:
    """Both runs against an eager float64 step, the stand-in for exact arithmetic: how far
    rounding alone moves the loss and the gradients (the eager run's distance), so that the
    compiled run's distance can be judged by it. ``grads``: ``{"eager": ..., "compiled":
    ...}`` gradients of the same weights."""
    reference = copy.deepcopy(model).double().use_fast_layers(True).train()
    loss = float(training_step(reference, to_float64(window), None))
    exact = gradients(reference)
    report = {"loss": loss}
    for run in ("eager", "compiled"):
        g = gradient_report(grads[run], exact)
        report[run] = {"loss_relative": abs(first_step[f"loss_{run}"] - loss) / abs(loss),
                       "gradients": g["relative"], "gradients_by_part": g["by_part"]}
    return report


def gradient_report(got: dict, want: dict, top: int = 5) -> dict:
    """How far the gradients differ: per top-level module, the relative difference of all
    its parameters' gradients together; per parameter, its difference relative to the whole
    model's gradient (a parameter whose gradient is zero in exact arithmetic, such as a bias
    before a softmax, differs by 100% of its rounding noise and matters nothing)."""
    if got.keys() != want.keys():
        raise RuntimeError(f"gradients of different parameters: "
                           f"{sorted(got.keys() ^ want.keys())}")
    names = list(want)
    total = _flat(want, names).norm()
    worst = sorted(((float((got[k].double() - want[k].double()).norm() / total),
                     relative_difference(got[k], want[k]), k) for k in names), reverse=True)
    modules = {}
    for name in names:
        modules.setdefault(name.split(".")[0], []).append(name)
    by_part = {part: relative_difference(_flat(got, part_names), _flat(want, part_names))
               for part, part_names in modules.items()}
    return {"relative": relative_difference(_flat(got, names), _flat(want, names)),
            "by_part": by_part, "worst": worst[:top]}


def _flat(grads: dict, names: list) -> torch.Tensor:
    """The named gradients as one float64 vector."""
    return torch.cat([grads[k].flatten().double() for k in names])


def print_report(report: dict) -> None:
    for k, step in enumerate(report["steps"], 1):
        print(f"step {k}: loss eager {step['loss_eager']:.6f}, compiled "
              f"{step['loss_compiled']:.6f} (relative {step['loss_relative']:.2e})")
        for part, e in step["parts"].items():
            print(f"  {part:16s} {e['calls']} calls: local {e['local']:.2e} at "
                  f"{e['local_at'] or 'output'}, carried {e['carried']:.2e} at "
                  f"{e['carried_at'] or 'output'}")
    ref = report.get("float64")
    for run in ("eager", "compiled") if ref else ():
        print(f"{run} against float64: first loss {ref[run]['loss_relative']:.2e}, gradients "
              f"{ref[run]['gradients']:.2e}; per module " + ", ".join(
                  f"{part} {diff:.2e}" for part, diff in ref[run]["gradients_by_part"].items()))
    grads = report["gradients"]
    print(f"gradients: relative {grads['relative']:.2e}; per module " + ", ".join(
        f"{part} {diff:.2e}" for part, diff in grads["by_part"].items()))
    print("parameters whose gradients differ most (share of the whole gradient, own relative):")
    for share, own, name in grads["worst"]:
        print(f"  {share:.2e} {own:.2e} {name}")


def parse_args(argv=None) -> argparse.Namespace:
    """The command line; a ``--mode`` other than default is refused for another backend
    than inductor (torch.compile would ignore it)."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--amp", default="fp16", choices=sorted(precision.AMP_DTYPES))
    parser.add_argument("--mode", default="reduce-overhead", choices=COMPILE_MODES)
    parser.add_argument("--backend", default="inductor", choices=BACKENDS,
                        help="aot_eager: the same graphs (autograd, decompositions) run by "
                             "PyTorch's kernels instead of inductor's")
    parser.add_argument("--parts", default="all",
                        help="the parts to compile: all, or comma-separated names among "
                             f"{', '.join(COMPILED_PARTS)}")
    parser.add_argument("--steps", type=int, default=3,
                        help="training steps (reduce-overhead: the 2nd records CUDA graphs, "
                             "the 3rd replays them)")
    training_window.add_arguments(parser, seed=0)
    parser.add_argument("--out", help="write the report as JSON to this file")
    args = parser.parse_args(argv)
    if args.backend != "inductor" and args.mode != "default":
        parser.error(f"--mode {args.mode} is inductor's: --backend {args.backend} takes "
                     f"--mode default")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the trainer and benchmark.py
    parts = compiled_parts(args.parts)  # refused before any work
    model, window = training_window.build(args, device)
    report = compare(model, window, args.amp, args.backend, args.mode, parts, args.steps)
    report["config"].update(device=str(device), torch=torch.__version__,
                            **training_window.describe(args))
    print_report(report)
    if args.out:
        save_json(report, args.out)
    return report


if __name__ == "__main__":
    main()
