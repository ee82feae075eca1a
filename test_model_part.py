"""Tests for gpt.py and optim.py: exact parameter counts, causality, equality with PyTorch's own
optimizers, SAM/ASAM worked by hand, Muon's singular-value band, schedule values, over-fitting.

    python -m pytest -q test_model_part.py
"""

import copy
import math

import pytest
import torch

import optim
from gpt import GPT, GPTConfig

# the models here are tiny: one thread is as fast as two, and a second thread stalls badly whenever
# the machine is busy with other work
torch.set_num_threads(1)

TINY = GPTConfig(vocab_size=32, block_size=16, n_layer=2, n_head=2, d_model=16)


def tiny_model(seed=0, config=TINY):
    torch.manual_seed(seed)
    return GPT(config)


def random_batch(seed, config=TINY, B=4):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(config.vocab_size, (B, config.block_size), generator=g)
    y = torch.randint(config.vocab_size, (B, config.block_size), generator=g)
    return x, y


# -----------------------------------------------------------------------------
# gpt.py

@pytest.mark.parametrize("vocab, block, n_layer, n_head, d_model, expected", [
    (16000, 128, 6, 8, 512, 27_172_864),   # study steps 0-4
    (4000, 64, 6, 6, 384, 12_208_128),     # step 5
    (4000, 64, 4, 3, 192, 2_560_128),      # step 6
])
def test_parameter_counts_of_the_study(vocab, block, n_layer, n_head, d_model, expected):
    config = GPTConfig(vocab_size=vocab, block_size=block, n_layer=n_layer, n_head=n_head, d_model=d_model)
    with torch.device("meta"):  # shapes only, no memory or init time
        model = GPT(config)
    assert model.num_params() == expected
    # by hand: tied embedding V*C, positions T*C, per block 12C^2 weights + 13C biases/norms, final norm 2C
    C = d_model
    assert expected == vocab * C + block * C + n_layer * (12 * C * C + 13 * C) + 2 * C


def test_gpt2_names_tying_and_init():
    model = GPT(GPTConfig())  # the 2.56M shape
    names = {n for n, _ in model.named_parameters()}
    for n in ["wte.weight", "wpe.weight", "h.0.ln_1.weight", "h.0.attn.c_attn.weight", "h.0.attn.c_proj.weight",
              "h.0.ln_2.bias", "h.0.mlp.c_fc.weight", "h.3.mlp.c_proj.weight", "ln_f.weight"]:
        assert n in names
    assert model.lm_head.weight is model.wte.weight
    assert "lm_head.weight" not in names  # the tied matrix is listed (and counted) once
    assert abs(model.h[0].attn.c_attn.weight.std().item() - 0.02) < 0.001
    assert abs(model.h[1].mlp.c_proj.weight.std().item() - 0.02 / math.sqrt(2 * 4)) < 0.0005
    assert torch.all(model.h[0].mlp.c_fc.bias == 0)


def test_clear_errors_for_bad_shapes_and_ids():
    with pytest.raises(ValueError, match="divisible by n_head"):
        GPTConfig(d_model=192, n_head=5)
    model = tiny_model()
    with pytest.raises(ValueError, match="longer than block_size"):
        model(torch.zeros(1, TINY.block_size + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="token ids must lie in"):
        model(torch.full((1, 4), TINY.vocab_size))
    with pytest.raises(ValueError, match="token ids must lie in"):
        model(torch.tensor([[0, -1, 2]]))
    with pytest.raises(ValueError, match="integer token ids"):
        model(torch.zeros(1, 4))


def test_loss_is_mean_cross_entropy_over_unpadded_targets():
    model = tiny_model()
    x, y = random_batch(1)
    y[0, :5] = -1  # padding: not scored
    y[2, 7] = -1
    logits, loss = model(x, y)
    logp = torch.log_softmax(logits, dim=-1)
    keep = y != -1
    by_hand = -logp[keep].gather(1, y[keep].unsqueeze(1)).mean()
    assert torch.allclose(loss, by_hand, atol=1e-6)


def test_causality_future_tokens_never_change_past_logits():
    model = tiny_model().eval()
    x, _ = random_batch(2, B=1)
    logits, _ = model(x)
    for t in [0, 5, TINY.block_size - 1]:
        x2 = x.clone()
        x2[0, t] = (x2[0, t] + 1) % TINY.vocab_size
        logits2, _ = model(x2)
        assert torch.allclose(logits2[:, :t], logits[:, :t], atol=1e-6, rtol=0)
        assert not torch.allclose(logits2[:, t], logits[:, t])


def test_generate_greedy_crops_context_and_restores_mode():
    model = tiny_model()
    model.train()
    x = torch.randint(TINY.vocab_size, (2, TINY.block_size + 3), generator=torch.Generator().manual_seed(3))
    out = model.generate(x, 5, temperature=0)
    assert out.shape == (2, TINY.block_size + 3 + 5) and torch.equal(out[:, :x.size(1)], x)
    assert model.training
    # the same by hand: argmax of the last logit given the last block_size tokens
    model.eval()
    idx = x
    for _ in range(5):
        logits, _ = model(idx[:, -TINY.block_size:])
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, idx)
    assert torch.equal(model.generate(x, 5, top_k=1), out)  # top_k=1 leaves one choice
    with pytest.raises(ValueError):
        model.generate(x, 1, temperature=-1.0)


def test_forward_traces_as_one_graph_under_compile():
    # backend="eager" traces with dynamo but skips code generation: fast, and fullgraph=True fails on any
    # graph break (the id range check must not cause one)
    model = tiny_model()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    x, y = random_batch(4)
    _, loss = model(x, y)
    _, loss_c = compiled(x, y)
    assert torch.allclose(loss, loss_c, atol=1e-6)


# -----------------------------------------------------------------------------
# optim.py: SGD and AdamW against PyTorch's

def train_copy(make_opt, lr, steps=20, wd=0.1):
    """Train a tiny model for `steps` steps with decay and no-decay groups; return its parameters."""
    model = tiny_model(seed=5)
    opt = make_opt(optim.param_groups(model, wd))
    for step in range(steps):
        for group in opt.param_groups:  # the lr changes every step, set in the groups as train.py does
            group["lr"] = optim.lr_at(step, steps, lr, "cosine", warmup_steps=4)
        x, y = random_batch(100 + step)
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad()
    return [p.detach().clone() for p in model.parameters()]


def assert_same_params(a, b, atol=1e-6):
    assert len(a) == len(b)
    worst = max((pa - pb).abs().max().item() for pa, pb in zip(a, b))
    assert worst <= atol, f"max difference {worst}"


@pytest.mark.parametrize("kwargs", [
    dict(momentum=0.0),
    dict(momentum=0.9),
    dict(momentum=0.9, dampening=0.1),
    dict(momentum=0.9, nesterov=True),
])
def test_sgd_equals_torch(kwargs):
    ours = train_copy(lambda groups: optim.SGD(groups, lr=0.1, **kwargs), lr=0.1)
    theirs = train_copy(lambda groups: torch.optim.SGD(groups, lr=0.1, **kwargs), lr=0.1)
    assert_same_params(ours, theirs)
    assert not torch.allclose(ours[0], tiny_model(seed=5).wte.weight)  # it did move


@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.9, 0.95)])
@pytest.mark.parametrize("foreach", [True, False])
def test_adamw_equals_torch(betas, foreach):
    ours = train_copy(lambda groups: optim.AdamW(groups, lr=1e-2, betas=betas), lr=1e-2)
    theirs = train_copy(lambda groups: torch.optim.AdamW(groups, lr=1e-2, betas=betas, foreach=foreach), lr=1e-2)
    assert_same_params(ours, theirs)


def test_param_groups_exempt_biases_norms_and_embeddings():
    model = GPT(GPTConfig())
    decay, no_decay = optim.param_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert {names[id(p)] for p in decay["params"]} == {
        f"h.{i}.{m}.weight" for i in range(4) for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}
    assert {names[id(p)] for p in no_decay["params"]} >= {"wte.weight", "wpe.weight", "ln_f.weight", "h.0.ln_1.bias"}
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    (everything,) = optim.param_groups(model, 0.01, decay_all=True)
    assert len(everything["params"]) == len(list(model.parameters()))


# -----------------------------------------------------------------------------
# SAM and ASAM worked by hand on L(a, b) = (k_a a^2 + k_b b^2) / 2, gradient (k_a a, k_b b)

def quadratic(k_a, k_b):
    a = torch.nn.Parameter(torch.tensor([1.0]))
    b = torch.nn.Parameter(torch.tensor([2.0]))

    def backward():
        a.grad = b.grad = None
        (0.5 * (k_a * a ** 2 + k_b * b ** 2)).sum().backward()
    return a, b, backward


def values(a, b):
    return [a.item(), b.item()]


def test_sam_by_hand():
    # k = (3, 2) at w = (1, 2): g = (3, 4), ||g|| = 5, e = 0.05 * (3, 4) / 5 = (0.03, 0.04)
    a, b, backward = quadratic(3.0, 2.0)
    opt = optim.SAM([{"params": [a]}, {"params": [b]}], optim.SGD, lr=0.1)  # norms span both groups
    assert opt.param_groups[0]["rho"] == optim.SAM_RHO == 0.05
    backward()
    opt.first_step(zero_grad=True)
    assert values(a, b) == pytest.approx([1.03, 2.04], abs=1e-6)
    backward()  # gradient at w + e: (3.09, 4.08)
    opt.second_step(zero_grad=True)
    assert values(a, b) == pytest.approx([1 - 0.1 * 3.09, 2 - 0.1 * 4.08], abs=1e-6)  # from w, not w + e


def test_asam_by_hand():
    # k = (3, 1) at w = (1, 2): g = (3, 2), w g = (3, 4), ||w g|| = 5, w^2 g = (3, 8), e = 0.5 * (3, 8) / 5
    a, b, backward = quadratic(3.0, 1.0)
    opt = optim.SAM([a, b], optim.SGD, adaptive=True, lr=0.1)
    assert opt.param_groups[0]["rho"] == optim.ASAM_RHO == 0.5
    backward()
    opt.first_step(zero_grad=True)
    assert values(a, b) == pytest.approx([1.3, 2.8], abs=1e-6)
    backward()  # gradient at w + e: (3.9, 2.8)
    opt.second_step(zero_grad=True)
    assert values(a, b) == pytest.approx([1 - 0.39, 2 - 0.28], abs=1e-6)


def test_sam_restores_weights_exactly_and_keeps_decay_in_the_base():
    a, b, backward = quadratic(3.0, 2.0)
    opt = optim.SAM([a, b], optim.SGD, lr=0.0)  # lr 0: second_step must land exactly on w
    backward()
    opt.first_step()
    backward()
    opt.second_step()
    assert values(a, b) == [1.0, 2.0]
    # AdamW base with weight decay 0.1: e is the same as without decay; AdamW's first step is
    # w (1 - lr wd) - lr g / (|g| + eps), with g the gradient at w + e (positive here)
    a, b, backward = quadratic(3.0, 2.0)
    opt = optim.SAM([a, b], optim.AdamW, lr=0.1, weight_decay=0.1)
    backward()
    opt.first_step(zero_grad=True)
    assert values(a, b) == pytest.approx([1.03, 2.04], abs=1e-6)
    backward()
    opt.second_step(zero_grad=True)
    assert values(a, b) == pytest.approx([1 * 0.99 - 0.1, 2 * 0.99 - 0.1], abs=1e-6)


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_ignores_gradient_scale_before_first_step(adaptive):
    # clipping before first_step rescales g, and e = rho g / ||g|| does not see the scale
    points = []
    for scale in (1.0, 0.01):
        a, b, backward = quadratic(3.0, 2.0)
        opt = optim.SAM([a, b], optim.SGD, adaptive=adaptive, lr=0.1)
        backward()
        a.grad *= scale
        b.grad *= scale
        opt.first_step()
        points.append(values(a, b))
    assert points[0] == pytest.approx(points[1], abs=1e-6)


def test_sam_groups_are_shared_and_step_closure_matches_two_steps():
    a, b, backward = quadratic(3.0, 2.0)
    opt = optim.SAM([a, b], optim.SGD, lr=0.1)
    opt.param_groups[0]["lr"] = 0.05  # what a schedule does
    assert opt.base_optimizer.param_groups[0]["lr"] == 0.05
    backward()
    opt.step(closure=lambda: backward())
    assert values(a, b) == pytest.approx([1 - 0.05 * 3.09, 2 - 0.05 * 4.08], abs=1e-6)


def sam_train(model, opt, steps, start):
    for step in range(start, start + steps):
        x, y = random_batch(200 + step)
        model(x, y)[1].backward()
        opt.first_step(zero_grad=True)
        model(x, y)[1].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.second_step(zero_grad=True)


@pytest.mark.parametrize("name", ["sam", "asam"])
def test_sam_state_dict_resumes_exactly(name):
    model = tiny_model(seed=7)
    opt = optim.build_optimizer(name, model, lr=1e-2, weight_decay=0.1)
    sam_train(model, opt, 3, start=0)
    saved_model = {k: v.clone() for k, v in model.state_dict().items()}
    saved_opt = copy.deepcopy(opt.state_dict())  # state_dict() holds live tensors, as torch.save would not
    sam_train(model, opt, 3, start=3)

    resumed = tiny_model(seed=99)
    resumed.load_state_dict(saved_model)
    opt2 = optim.build_optimizer(name, resumed, lr=1e-2, weight_decay=0.1)
    opt2.load_state_dict(saved_opt)
    assert opt2.param_groups is opt2.base_optimizer.param_groups  # still shared after loading
    sam_train(resumed, opt2, 3, start=3)
    for p, q in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


# -----------------------------------------------------------------------------
# Muon

def ns_band(x_min, steps=5):
    """Where `steps` rounds of the Newton-Schulz polynomial send the interval [x_min, 1]."""
    a, b, c = optim.NS_COEFFS
    x = torch.linspace(x_min, 1.0, 100_001, dtype=torch.float64)
    for _ in range(steps):
        x = a * x + b * x ** 3 + c * x ** 5
    return x.min().item(), x.max().item()


@pytest.mark.parametrize("shape", [(24, 40), (40, 24)])
def test_newton_schulz_applies_its_polynomial_to_each_singular_value(shape):
    G = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    x = S / G.norm()
    a, b, c = optim.NS_COEFFS
    for _ in range(5):
        x = a * x + b * x ** 3 + c * x ** 5
    expected = U @ torch.diag(x) @ Vh  # same singular vectors, singular values p(p(p(p(p(s)))))
    assert torch.allclose(optim.newton_schulz(G, dtype=torch.float32), expected, atol=1e-5)


def test_muon_update_has_singular_values_in_the_band():
    G = torch.randn(64, 96, generator=torch.Generator().manual_seed(1))
    S = torch.linalg.svdvals(G)
    lo, hi = ns_band((S.min() / G.norm()).item())
    assert 0.6 < lo and hi < 1.25  # about [0.68, 1.13]
    p = torch.nn.Parameter(torch.zeros(64, 96))
    opt = optim.Muon([p], lr=0.1, momentum=0.0)  # no momentum: the update is the orthogonalised gradient
    p.grad = G.clone()
    opt.step()
    O = -p.detach() / (0.1 * 0.2 * math.sqrt(96))
    s = torch.linalg.svdvals(O)
    assert lo - 0.02 <= s.min().item() and s.max().item() <= hi + 0.02  # bf16 iteration: small slack


def test_muon_touches_only_block_matrices_and_matches_torch():
    model = tiny_model(seed=11)
    opt = optim.build_optimizer("muon", model, lr=1e-2, weight_decay=0.1)  # Muon's own momentum, 0.95
    names = {id(p): n for n, p in model.named_parameters()}
    muon = sorted(names[id(p)] for g in opt.param_groups if g["use_muon"] for p in g["params"])
    adam = sorted(names[id(p)] for g in opt.param_groups if not g["use_muon"] for p in g["params"])
    assert muon == sorted(n for n in names.values() if n.startswith("h.") and n.endswith("weight")
                          and ".ln_" not in n)
    assert set(muon) | set(adam) == set(names.values()) and not set(muon) & set(adam)

    # reference: torch.optim.Muon (Moonshot's RMS matching) on the matrices, torch AdamW on the rest
    ref = tiny_model(seed=11)
    ref_names = dict(ref.named_parameters())
    ref_opts = []
    for g in opt.param_groups:
        params = [ref_names[names[id(p)]] for p in g["params"]]
        if g["use_muon"]:
            ref_opts.append(torch.optim.Muon(params, lr=1e-2, weight_decay=g["weight_decay"], momentum=0.95,
                                             nesterov=True, adjust_lr_fn="match_rms_adamw"))
        else:
            ref_opts.append(torch.optim.AdamW(params, lr=1e-2, betas=(0.9, 0.95), weight_decay=g["weight_decay"]))
    for step in range(5):
        x, y = random_batch(300 + step)
        for m, opts in ((model, [opt]), (ref, ref_opts)):
            m(x, y)[1].backward()
            for o in opts:
                o.step()
                o.zero_grad()
    assert_same_params(list(model.parameters()), list(ref.parameters()), atol=1e-6)


def test_muon_rejects_vectors():
    with pytest.raises(ValueError, match="use_muon=False"):
        optim.Muon([torch.nn.Parameter(torch.zeros(3))])


# -----------------------------------------------------------------------------
# schedules: 100 steps, 10 of warm-up, lr 1e-3 down to 1e-5

@pytest.mark.parametrize("schedule, mid_step, end_of_run", [
    ("cosine", 54, 1e-5),     # decay covers steps 10..99; step 54 is half way: (54 + 1 - 10) / 90
    ("linear", 54, 1e-5),
    ("wsd", 89, 1e-5),        # stable to step 79, decays over the last 20: step 89 is half way
    ("constant", None, 1e-3),
])
def test_schedule_values(schedule, mid_step, end_of_run):
    lr = lambda step: optim.lr_at(step, 100, 1e-3, schedule, warmup_steps=10, min_lr=1e-5)
    assert lr(0) == pytest.approx(1e-4)        # first update: 1/10 of the peak
    assert lr(9) == pytest.approx(1e-3)        # end of warm-up: the peak
    if mid_step is not None:
        assert lr(mid_step) == pytest.approx((1e-3 + 1e-5) / 2)  # cosine and linear agree at the midpoint
    assert lr(99) == pytest.approx(end_of_run)  # last update reaches the floor
    if schedule == "wsd":
        assert lr(79) == pytest.approx(1e-3)
    values = [lr(s) for s in range(9, 100)]
    assert all(x >= y - 1e-15 for x, y in zip(values, values[1:]))  # never rises after warm-up


def test_schedule_docstring_examples_and_errors():
    assert optim.warmup_fraction(0, 4) == 0.25 and optim.warmup_fraction(3, 4) == 1.0
    assert optim.decay_progress(4, 0, 10) == 0.5 and optim.decay_progress(2, 5, 10) == 0.0
    assert optim.cosine_lr(4, 10, 1.0) == pytest.approx(0.5) and optim.cosine_lr(9, 10, 1.0) == 0.0
    assert optim.linear_lr(4, 10, 1.0) == 0.5 and optim.linear_lr(9, 10, 1.0) == 0.0
    assert [optim.wsd_lr(s, 10, 1.0) for s in (7, 8, 9)] == [1.0, 0.5, 0.0]
    assert optim.lr_at(0, 100, 1e-3, "cosine", warmup_steps=10) == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="unknown schedule"):
        optim.lr_at(0, 10, 1.0, "exp")
    with pytest.raises(ValueError, match="outside the run"):
        optim.lr_at(10, 10, 1.0)
    with pytest.raises(ValueError, match="unknown optimizer"):
        optim.build_optimizer("adam", tiny_model(), lr=1e-3, weight_decay=0.0)


# -----------------------------------------------------------------------------
# every optimizer can memorise one tiny batch

@pytest.mark.parametrize("name, lr", [("sgd", 0.3), ("adamw", 1e-2), ("sam", 1e-2), ("asam", 1e-2), ("muon", 2e-2)])
def test_each_optimizer_overfits_a_tiny_batch(name, lr):
    config = GPTConfig(vocab_size=16, block_size=8, n_layer=2, n_head=2, d_model=32)
    model = tiny_model(seed=0, config=config)
    x, y = random_batch(0, config, B=4)
    x[:, 0] = torch.arange(4)  # distinct first tokens: every prefix has one right answer
    opt = optim.build_optimizer(name, model, lr=lr, weight_decay=0.0)
    for _ in range(100):
        _, loss = model(x, y)
        loss.backward()
        if name in ("sam", "asam"):
            opt.first_step(zero_grad=True)
            model(x, y)[1].backward()
            opt.second_step(zero_grad=True)
        else:
            opt.step()
            opt.zero_grad()
    assert model(x, y)[1].item() < 0.01  # from ln(16) = 2.77
