"""The optimizer of the training loop and its update: AdamW as configured, stepped only when the
step's loss and gradient norm are finite on every rank, with one host synchronisation a step."""

from __future__ import annotations

import torch

from w2v.train import distributed
from w2v.train.config import TrainConfig


def update(opt: torch.optim.Optimizer, loss: torch.Tensor, gnorm: torch.Tensor, stats: dict,
           info: distributed.DistInfo) -> tuple[float, float, bool]:
    """The optimizer step, unless the loss or the gradient norm is non-finite on any rank.
    Returns the loss, the gradient norm and whether the update was skipped, and replaces every
    tensor-valued statistic in ``stats`` by its float: all brought to the host in one transfer,
    the step's one synchronisation.

    An optimizer that can skip a step on the device (fused AdamW's ``found_inf``, as GradScaler
    drives it: parameters, moments and step count untouched) is stepped before the host waits,
    so the host launches the update while the GPU still runs the backward, and the GPU applies
    it while the host reads the values. Others (FSDP's) are stepped after the read, if finite."""
    keys = [k for k, v in stats.items() if torch.is_tensor(v)]
    dev = loss.device
    values = torch.stack([loss.detach().float().reshape(()), gnorm.detach().float().reshape(()).to(dev),
                          *(stats[k].float().reshape(()).to(dev) for k in keys)])
    bad = distributed.any_true_on_device((~torch.isfinite(values[:2]).all()).float(), info)
    host = torch.cat([values, bad.reshape(1)]).to("cpu", non_blocking=True)  # pinned memory from a GPU
    copied = None
    if dev.type == "cuda":
        copied = torch.cuda.Event()
        copied.record()
    on_device = getattr(opt, "_step_supports_amp_scaling", False) and all(g.get("fused") for g in opt.param_groups)
    if on_device:
        opt.found_inf = bad
        opt.step()
        del opt.found_inf
    if copied is not None:
        copied.synchronize()  # the values, not the update queued behind them
    read = host.tolist()
    stats.update(zip(keys, read[2:-1]))
    skip = read[-1] > 0
    if not skip and not on_device:
        opt.step()
    return read[0], read[1], skip


def adamw(params: list, tcfg: TrainConfig, sharded: bool) -> torch.optim.AdamW:
    """AdamW as configured: fused (one kernel for all parameters, and able to skip a non-finite
    step on the device, see `update`) wherever this torch has it for the device, except for
    FSDP's sharded parameters."""
    kw = dict(lr=tcfg.lr, betas=tcfg.betas, eps=tcfg.eps, weight_decay=tcfg.weight_decay)
    if not sharded:
        try:
            return torch.optim.AdamW(params, fused=True, **kw)
        except RuntimeError:  # no fused kernel for this device in this torch (the CPU's before 2.4)
            pass
    return torch.optim.AdamW(params, **kw)
