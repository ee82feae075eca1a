"""
The study's optimizers and learning-rate schedules, written out by hand.

SGD with momentum (Polyak 1964; Nesterov as in Sutskever et al. 2013), AdamW (Loshchilov & Hutter 2019),
SAM (Foret et al. 2021) and its adaptive form ASAM (Kwon et al. 2021) wrapped around any of them,
and Muon (Jordan et al. 2024) for the weight matrices inside the transformer blocks; at the end, an average of
the last weights (WeightAverage). Every update is a plain loop over the parameters, one tensor at a time, so
each line reads as the paper's equation.

    python -m pytest -q test_all.py -k "sgd_equals or adamw_equals or sam_by or sam_restores or sam_ignores \
        or sam_groups or sam_state or sam_steps or newton_schulz or test_muon_ or schedule_values \
        or schedule_errors or wsd_ or lr_zero or param_groups or zero_gradients"  # against torch.optim, by hand
    python bench.py adamw       # AdamW per tensor (as here) vs torch's multi-tensor foreach, in a step's share
"""

import math

import torch
import torch.nn as nn

# SAM bounds its perturbation in weight space, ||e|| = rho; 0.05 is Foret et al.'s default. ASAM bounds it
# relative to each weight, ||e / |w| || = rho, so for weights of size ~0.02 (this model's init) it moves only
# ~0.02 rho in weight space. Kwon et al. use 10x SAM's radius for ASAM (0.5 vs 0.05 on CIFAR-10): 0.5 is
# their value and this module's default. The study's code ran ASAM with 0.05, so train.py passes --rho 0.05.
SAM_RHO = 0.05
ASAM_RHO = 0.5


# -----------------------------------------------------------------------------
# SGD and AdamW, one tensor at a time. No multi-tensor (torch._foreach_*) path: on this CPU it made AdamW's
# step no faster (`python bench.py adamw`, NOTES.md). On CUDA, a launch per tensor and operation may cost
# more: not measured.

def groups_with_grads(opt):
    """(group, the group's params that have a gradient) for each param group that has any."""
    for group in opt.param_groups:
        params = [p for p in group["params"] if p.grad is not None]
        if params:
            yield group, params


def closure_loss(closure):
    """step(closure) as in torch.optim: re-evaluate the loss, with gradients on, before updating."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def _check_lr_wd(lr, weight_decay):
    if lr < 0:
        raise ValueError(f"lr must be >= 0, got {lr}.")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")


class SGD(torch.optim.Optimizer):
    """SGD with momentum, dampening, Nesterov and (coupled, L2) weight decay: the same arguments and the
    same numbers as torch.optim.SGD."""

    def __init__(self, params, lr, momentum=0, dampening=0, weight_decay=0, nesterov=False):
        _check_lr_wd(lr, weight_decay)
        if momentum < 0:
            raise ValueError(f"momentum must be >= 0, got {momentum}.")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum needs momentum > 0 and dampening = 0.")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure_loss(closure)
        for group, params in groups_with_grads(self):
            lr, mu, wd, dampening = group["lr"], group["momentum"], group["weight_decay"], group["dampening"]
            for p in params:
                g = p.grad
                if wd != 0:
                    g = g.add(p, alpha=wd)                  # L2, coupled: g <- g + wd w
                if mu != 0:
                    # heavy ball (Polyak 1964), as torch.optim.SGD writes it: b <- mu b + (1 - dampening) g,
                    # w <- w - lr b.
                    # Sutskever et al. 2013 (eq. 1) put lr inside b; the two agree while lr is constant.
                    buf = self.state[p].get("momentum_buffer")
                    if buf is None:
                        buf = self.state[p]["momentum_buffer"] = g.detach().clone()  # first step: b = g, undampened
                    else:
                        buf.mul_(mu).add_(g, alpha=1 - dampening)
                    g = g.add(buf, alpha=mu) if group["nesterov"] else buf   # Nesterov: step g + mu b, torch's form
                p.add_(g, alpha=-lr)                        # w <- w - lr step
        return loss


def adamw_update(p, state, group):
    """One AdamW step of p, in place, with its gradient p.grad (Loshchilov & Hutter 2019, Algorithm 2).
    state holds p's step count t and moments m, v, made here on the first step. The operations and their
    order are torch.optim.AdamW's, so the numbers are too."""
    lr, wd, eps, (beta1, beta2) = group["lr"], group["weight_decay"], group["eps"], group["betas"]
    if not state:
        state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
    state["step"] += 1
    t, m, v, g = state["step"], state["exp_avg"], state["exp_avg_sq"], p.grad
    # line 12's decay, first: w <- w - lr wd w, decoupled: it never enters m or v. (The paper scales it by
    # the schedule multiplier eta_t alone; torch and this file by lr, which includes it.)
    p.mul_(1 - lr * wd)
    m.lerp_(g, 1 - beta1)                                   # line 7: m <- beta1 m + (1 - beta1) g
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)           # line 8: v <- beta2 v + (1 - beta2) g^2
    # lines 9-10: m and v start at 0, biased towards 0 early on: m_hat = m / (1 - beta1^t), v_hat likewise
    bias_correction1, bias_correction2 = 1 - beta1 ** t, 1 - beta2 ** t
    # line 12: w <- w - lr m_hat / (sqrt(v_hat) + eps), with sqrt(v_hat) = sqrt(v) / sqrt(1 - beta2^t)
    denom = v.sqrt().div_(math.sqrt(bias_correction2)).add_(eps)
    p.addcdiv_(m, denom, value=-lr / bias_correction1)


class AdamW(torch.optim.Optimizer):
    """Adam with decoupled weight decay: the same arguments and the same numbers as torch.optim.AdamW."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        _check_lr_wd(lr, weight_decay)
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"betas must both lie in [0, 1), got {betas}.")
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}.")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure_loss(closure)
        for group, params in groups_with_grads(self):
            for p in params:
                adamw_update(p, self.state[p], group)
        return loss


# -----------------------------------------------------------------------------
# SAM and ASAM: step to the worst nearby point, then descend with the gradient taken there

class SAM(torch.optim.Optimizer):
    """Sharpness-aware minimisation around a base optimizer (Foret et al. 2021; ASAM: Kwon et al. 2021).

    SAM minimises max_{||e|| <= rho} L(w + e). To first order the worst e points along the gradient:
        SAM:  e = rho * g / ||g||                 ASAM (adaptive=True):  e = rho * w^2 g / ||w g||
    with norms over all parameters together. ASAM measures the neighbourhood relative to each weight's size,
    so its sharpness does not change when weights are rescaled in a way that leaves the function unchanged.

    Each training step needs two forward/backward passes:
        loss(model(x), y).backward()          # gradient at w
        opt.first_step(zero_grad=True)        # w -> w + e
        loss(model(x), y).backward()          # gradient at w + e
        clip_grad_norm_(model.parameters(), 1.0)  # here: e is normalised, so clipping before first_step changes nothing
        opt.second_step(zero_grad=True)       # back to w, then the base optimizer steps with that gradient
    or step(closure) with a closure that does the second forward/backward (and any clipping).

    param_groups are the base optimizer's own dicts, so a schedule that sets group["lr"] here reaches it.
    Weight decay belongs to the base optimizer only (pass weight_decay in base_kwargs); it is not part of e.
    """

    def __init__(self, params, base_optimizer, rho=None, adaptive=False, **base_kwargs):
        if rho is None:
            rho = ASAM_RHO if adaptive else SAM_RHO
        if rho < 0:
            raise ValueError(f"rho must be >= 0, got {rho}.")
        super().__init__(params, dict(rho=rho, adaptive=adaptive, **base_kwargs))
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups  # one list of dicts, shared
        self.defaults.update(self.base_optimizer.defaults)
        self.perturbed = None  # the parameters first_step moved, until second_step puts them back

    @torch.no_grad()
    def first_step(self, zero_grad=False):
        """Move every parameter with a gradient from w to w + e, keeping a copy of w to come back to."""
        if self.perturbed is not None:  # a second climb would keep w + e as the point to come back to
            raise RuntimeError("SAM.first_step called twice: call second_step() between them.")
        groups = list(groups_with_grads(self))
        if not groups:
            raise RuntimeError("SAM.first_step found no gradients: call loss.backward() before it.")
        # T_w g: g (SAM) or w g (ASAM, T_w = |w|); its norm over all parameters together
        Tg = [(group, p, p.grad * p if group["adaptive"] else p.grad) for group, params in groups for p in params]
        grad_norm = torch.linalg.vector_norm(torch.stack([x.norm() for _, _, x in Tg]))
        self.perturbed = []
        for group, p, x in Tg:
            # e = rho T_w^2 g / ||T_w g||: rho g / ||g|| (Foret et al. eq. 2), rho w^2 g / ||w g|| (Kwon et al.)
            e = (x * p if group["adaptive"] else x) * (group["rho"] / (grad_norm + 1e-12))
            self.state[p]["w"] = p.clone()
            p.add_(e)                                                       # w -> w + e
            self.perturbed.append(p)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad=False):
        """Put back w (copied, not recomputed as w + e - e, so it is bit for bit the same) and let the
        base optimizer step with the gradient now in p.grad: the one taken at w + e."""
        if self.perturbed is None:
            raise RuntimeError("SAM.second_step called without a first_step before it.")
        for p in self.perturbed:
            p.copy_(self.state[p].pop("w"))  # and free the copy
        self.perturbed = None
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()

    def step(self, closure=None):
        """Both steps. p.grad must already hold the gradient at w; closure runs forward and backward
        at w + e (first_step has zeroed the gradients), clips if wanted, and returns the loss."""
        if closure is None:
            raise ValueError("SAM.step needs a closure that recomputes the loss and its gradient; "
                             "or call first_step() and second_step() yourself.")
        self.first_step(zero_grad=True)
        with torch.enable_grad():
            loss = closure()
        self.second_step()
        return loss

    def state_dict(self):
        # between steps SAM itself keeps nothing (w is held only from first_step to second_step), so its
        # state is the base optimizer's: moments, step counts, and the shared groups
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict):
        self.base_optimizer.load_state_dict(state_dict)
        # loading builds new group dicts inside the base optimizer: share them again
        self.param_groups = self.base_optimizer.param_groups


# -----------------------------------------------------------------------------
# Muon: momentum, orthogonalised

NS_COEFFS = (3.4445, -4.7750, 2.0315)  # Jordan et al. 2024: a quintic that pushes singular values up fast


def newton_schulz(G, steps=5, dtype=None):
    """Approximately replace G = U S V^T by U V^T (every singular value -> 1) with the iteration
    X <- a X + b (X X^T) X + c (X X^T)^2 X, which maps each singular value s to p(s) = a s + b s^3 + c s^5.
    After dividing by ||G||_F all s lie in (0, 1]; five steps of p then leave them in about [0.68, 1.13]
    (for s >= 0.01 ||G||_F), not exactly 1: the coefficients trade convergence for speed, which works as well
    in training (Jordan et al. 2024). E.g. p(1.0) = 0.701, p(0.5) = 1.189.
    dtype None: bf16 on CUDA, as Jordan et al. run it (half the memory traffic, and the iteration tolerates it);
    fp32 elsewhere: a CPU without bf16 units emulates bf16 products, many times slower. train.py asks for bf16
    wherever its matmuls run in bf16 (--amp), where it is measured to be faster (NOTES.md)."""
    a, b, c = NS_COEFFS
    if dtype is None:
        dtype = torch.bfloat16 if G.is_cuda else torch.float32
    X = G.to(dtype)
    tall = X.size(0) > X.size(1)
    if tall:
        X = X.mT                                 # work with the smaller Gram matrix X X^T
    X = X / X.norm().clamp(min=1e-7)             # spectral norm <= Frobenius norm = 1
    for _ in range(steps):
        A = X @ X.mT                             # (m, m)
        B = torch.addmm(A, A, A, beta=b, alpha=c)  # b A + c A^2
        X = torch.addmm(X, B, X, beta=a)         # a X + B X
    return X.mT if tall else X


class Muon(torch.optim.Optimizer):
    """Muon (Jordan et al. 2024) for 2-D weight matrices, AdamW for everything else, in one optimizer.

    Groups with use_muon=True (default): momentum buffer b <- mu b + (1 - mu) g, Nesterov look-ahead
    g + mu (b - g), orthogonalised by newton_schulz, scaled by 0.2 sqrt(max(rows, cols)) so that its RMS
    is 0.2 (an orthogonal rows x cols matrix has RMS 1 / sqrt(max(rows, cols))), about that of an AdamW
    update (Liu et al. 2025, "Muon is Scalable"); hence Muon shares AdamW's lr and weight decay (decoupled:
    w <- w - lr wd w). Groups with use_muon=False take the AdamW step with betas and eps. With
    ns_dtype=torch.bfloat16 it matches torch.optim.Muon(adjust_lr_fn="match_rms_adamw") on the Muon groups
    (torch orthogonalises in bf16 on every device; ns_dtype=None picks by device).
    """

    def __init__(self, params, lr=1e-3, momentum=0.95, nesterov=True, weight_decay=0.0, ns_steps=5,
                 betas=(0.9, 0.95), eps=1e-8, ns_dtype=None):
        _check_lr_wd(lr, weight_decay)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}.")
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                        ns_steps=ns_steps, betas=betas, eps=eps, ns_dtype=ns_dtype, use_muon=True)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if group["use_muon"] and p.dim() != 2:
                    raise ValueError(f"Muon orthogonalises matrices but got a parameter of shape {tuple(p.shape)}; "
                                     f"put it in a group with use_muon=False (AdamW).")

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure_loss(closure)
        for group, params in groups_with_grads(self):
            lr, wd, mu = group["lr"], group["weight_decay"], group["momentum"]
            for p in params:
                state = self.state[p]
                if not group["use_muon"]:
                    adamw_update(p, state, group)
                    continue
                if not state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - mu)                                    # b <- mu b + (1 - mu) g
                update = p.grad.lerp(buf, mu) if group["nesterov"] else buf  # g + mu (b - g)
                # .get: a checkpoint saved before ns_dtype existed has no such key in its groups
                O = newton_schulz(update, steps=group["ns_steps"], dtype=group.get("ns_dtype"))
                p.mul_(1 - lr * wd)
                p.add_(O, alpha=-lr * 0.2 * math.sqrt(max(p.shape)))
        return loss


# -----------------------------------------------------------------------------
# parameter groups and the one-call builder train.py uses

def param_groups(model, weight_decay, decay_all=False):
    """Two groups: matrices that multiply activations get weight decay; biases, norm weights and
    embeddings (the token table is also the tied output head) do not. Decay pulls weights toward 0, which
    makes no sense for a LayerNorm gain (its neutral value is 1), and it shrinks the embeddings of rare
    tokens every step while their gradients, which push back, come seldom.
    decay_all=True puts everything in one decayed group, as the study's presets step0-step4 do (--wd_all)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if decay_all:
        return [{"params": params, "weight_decay": weight_decay}]
    embeddings = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    decay = [p for p in params if p.dim() >= 2 and id(p) not in embeddings]
    no_decay = [p for p in params if not (p.dim() >= 2 and id(p) not in embeddings)]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


OPTIMIZERS = ("sgd", "adamw", "sam", "asam", "muon")


def build_optimizer(name, model, lr, weight_decay, betas=(0.9, 0.95), momentum=0.9, rho=None, decay_all=False,
                    ns_dtype=None):
    """The optimizer for train.py's --opt: "sgd", "adamw", "sam" or "asam" (both around AdamW), "muon".
    Every group takes the schedule's lr as it is (group["lr"] = lr): there are no per-group lr scales,
    Muon's update is scaled to AdamW's size instead. momentum is SGD's only (Muon keeps its own 0.95);
    betas are AdamW's, also inside SAM and for Muon's non-matrix groups; rho only for SAM/ASAM; ns_dtype is
    Muon's (newton_schulz)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}.")
    if rho is not None and name not in ("sam", "asam"):
        raise ValueError(f"rho is a SAM/ASAM setting but the optimizer is {name!r}; leave rho unset.")
    groups = param_groups(model, weight_decay, decay_all)
    if name == "sgd":
        return SGD(groups, lr=lr, momentum=momentum)
    if name == "adamw":
        return AdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay)
    if name in ("sam", "asam"):
        return SAM(groups, AdamW, rho=rho, adaptive=(name == "asam"), lr=lr, betas=betas, weight_decay=weight_decay)
    # muon: the 2-D weights inside the transformer blocks; AdamW for embeddings/head, norms and biases.
    # c_attn is orthogonalised as one (3C, C) matrix, q, k and v together: simpler, and a guess that
    # splitting it (as some implementations do) would matter little at this size
    matrices = {id(p) for p in model.h.parameters() if p.dim() == 2}
    muon_groups = []
    for group in groups:
        for use_muon in (True, False):
            params = [p for p in group["params"] if (id(p) in matrices) == use_muon]
            if params:
                muon_groups.append({"params": params, "weight_decay": group["weight_decay"], "use_muon": use_muon})
    return Muon(muon_groups, lr=lr, betas=betas, weight_decay=weight_decay, ns_dtype=ns_dtype)


# -----------------------------------------------------------------------------
# learning-rate schedules: pure functions of the step
#
# step counts updates from 0: lr_at(step, ...) is the lr for update number step, step = 0 .. total_steps-1.
# Warm-up takes the first warmup_steps updates from lr/warmup_steps up to lr (reached at step
# warmup_steps - 1); the decay then starts at lr and would reach min_lr one step after the last update,
# so no update is wasted at lr = min_lr (which may be 0).

def warmup_fraction(step, warmup_steps):
    """Fraction of the peak lr during linear warm-up.

    >>> [warmup_fraction(s, 4) for s in (0, 3, 9)]
    [0.25, 1.0, 1.0]
    """
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


def decay_progress(step, start, total_steps):
    """How far into a decay that starts at update `start` and would end one step after the last update.

    >>> [decay_progress(s, 0, 10) for s in (0, 5, 9)], decay_progress(2, 5, 10)
    ([0.0, 0.5, 0.9], 0.0)
    """
    return max(0.0, (step - start) / (total_steps - start)) if total_steps > start else 1.0


def cosine_lr(step, total_steps, lr, warmup_steps=0, min_lr=0.0):
    """For steps >= warmup_steps (lr_at does the warm-up): half a cosine from lr towards min_lr.

    >>> round(cosine_lr(5, 10, 1.0), 6), round(cosine_lr(9, 10, 1.0), 6)
    (0.5, 0.024472)
    """
    p = decay_progress(step, warmup_steps, total_steps)
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * p))


def wsd_lr(step, total_steps, lr, warmup_steps=0, min_lr=0.0, decay_frac=0.2):
    """Warm-up, stable, decay (Hu et al. 2024; Hagele et al. 2024): hold lr, then fall linearly towards min_lr
    over the last decay_frac of the steps. decay_frac=1: a straight line down from the end of warm-up.

    >>> [wsd_lr(s, 10, 1.0) for s in (7, 8, 9)]
    [1.0, 1.0, 0.5]
    """
    start = max(warmup_steps, total_steps - round(decay_frac * total_steps))
    return lr + (min_lr - lr) * decay_progress(step, start, total_steps)


SCHEDULES = ("constant", "cosine", "wsd")


def lr_at(step, total_steps, lr, schedule="cosine", warmup_steps=0, min_lr=0.0, decay_frac=0.2):
    """The lr for update number step (0-based) of total_steps. "constant" is warm-up then lr (min_lr unused);
    decay_frac is only read by "wsd".

    >>> lr_at(0, 100, 1e-3, "cosine", warmup_steps=10), round(lr_at(99, 100, 1e-3, min_lr=1e-5), 9)
    (0.0001, 1.0244e-05)
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}.")
    if not 0 <= step < total_steps:
        raise ValueError(f"step {step} is outside the run: steps go from 0 to total_steps - 1 = {total_steps - 1}.")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must lie in [0, total_steps = {total_steps}], got {warmup_steps}.")
    if not 0 < decay_frac <= 1:
        raise ValueError(f"decay_frac must lie in (0, 1], got {decay_frac}.")
    if step < warmup_steps or schedule == "constant":  # one linear warm-up for every schedule
        return lr * warmup_fraction(step, warmup_steps)
    if schedule == "cosine":
        return cosine_lr(step, total_steps, lr, warmup_steps, min_lr)
    return wsd_lr(step, total_steps, lr, warmup_steps, min_lr, decay_frac)


# -----------------------------------------------------------------------------
# weight averaging: a run that ends with the average of its last weights

class WeightAverage:
    """An exponential moving average of a model's weights (Polyak & Juditsky 1992 average the iterates; an EMA
    weighs the recent ones most): after each update avg <- decay * avg + (1 - decay) * w, an average over the
    last ~1 / (1 - decay) updates. It starts from the weights of its first update(). train.py --ema averages
    over the last epoch, while the lr decays, and ends the run with the average (--preset nanorun: decay
    0.995, measured in NOTES.md).

    >>> w = nn.Parameter(torch.zeros(1)); avg = WeightAverage([w], decay=0.5)
    >>> for value in (0.0, 2.0, 4.0):
    ...     _ = w.data.fill_(value); avg.update()
    >>> avg.avg[0].item()
    2.5
    """

    def __init__(self, params, decay):
        if not 0 < decay < 1:
            raise ValueError(f"the average's decay must lie in (0, 1), got {decay}.")
        self.params, self.decay, self.avg = list(params), decay, None

    @torch.no_grad()
    def update(self):
        if self.avg is None:
            self.avg = [p.detach().clone() for p in self.params]
            return
        for a, p in zip(self.avg, self.params):
            a.lerp_(p, 1 - self.decay)  # a + (1 - decay) (p - a)

    @torch.no_grad()
    def copy_to_params(self):
        """Put the average in the weights' place."""
        for a, p in zip(self.avg, self.params):
            p.copy_(a)

    def state_dict(self):  # the decay is the run's config, saved with it
        return {"avg": self.avg}

    def load_state_dict(self, state):
        avg = state["avg"]  # a checkpoint loads on the CPU
        self.avg = None if avg is None else [a.to(p.device) for a, p in zip(avg, self.params)]
