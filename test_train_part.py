import json
import math
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

import train
from gpt import GPT, GPTConfig

HERE = os.path.dirname(os.path.abspath(__file__))
torch.set_num_threads(1)  # tiny models: threads only add overhead (and stall when cores are busy)
ONE_THREAD = dict(os.environ, OMP_NUM_THREADS="1")


def make_titles(n, seed=0):
    """Titles from a tiny grammar: enough structure that a small model's loss falls fast."""
    rng = random.Random(seed)
    starts = ["Show HN:", "Ask HN:", "Launch HN:", "", "", ""]
    adjs = ["fast", "tiny", "open-source", "simple", "new", "better"]
    nouns = ["database", "compiler", "editor", "tokenizer", "GPT", "search engine"]
    langs = ["Rust", "Python", "Go", "C", "Zig"]
    return [f"{rng.choice(starts)} A {rng.choice(adjs)} {rng.choice(nouns)} in {rng.choice(langs)}".strip()
            for _ in range(n)]


@pytest.fixture
def titles_file(tmp_path):
    path = tmp_path / "titles.txt"
    path.write_text("\n".join(make_titles(700)) + "\n", encoding="utf-8")
    return str(path)


def tiny(titles_file, tmp_path, **over):
    cfg = dict(data=titles_file, num_titles=600, test_titles=100, vocab_size=300, n_layer=1, n_head=2,
               d_model=32, block_size=16, batch_size=8, dropout=0.1, opt="adamw", lr=3e-3, epochs=2,
               evals_per_epoch=2, log_every=5, device="cpu", compile=False, amp=False,
               out_dir=str(tmp_path / "runs"), progress=False, sample=0)
    cfg.update(over)
    return cfg


def read_log(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


# ----------------------------------------------------------------------------------------------
# pure helpers, exactly as their docstrings say

def test_split_titles_docstring():
    assert train.split_titles(list("abcdefghijkl"), 10, 0.2, 5) == (list("abcdefgh"), ["i", "j"], ["k", "l"])


def test_text_chars_docstring():
    assert train.text_chars(["ab", "c"]) == 13 == len("<eos>".join(["ab", "c"]) + "<eos>")


def test_read_titles_strips_and_skips_blank_lines(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("  one \n\n\t\ntwo\nthree", encoding="utf-8")
    assert train.read_titles(str(p)) == ["one", "two", "three"]
    assert train.read_titles(str(p), limit=2) == ["one", "two"]


# ----------------------------------------------------------------------------------------------
# the metric: every token scored once, summed nats over characters

class Uniform(torch.nn.Module):
    """A model whose every prediction is uniform over V: each scored token costs exactly ln V."""

    def __init__(self, V):
        super().__init__()
        self.V = V

    def forward(self, idx, targets):
        logits = torch.zeros(*idx.shape, self.V)
        return logits, torch.nn.functional.cross_entropy(logits.view(-1, self.V), targets.view(-1),
                                                         ignore_index=-1)


@pytest.mark.parametrize("n,block,batch", [(2, 4, 3), (50, 4, 3), (64, 8, 2), (65, 8, 2), (1000, 7, 5)])
def test_stream_nats_scores_every_token_once(n, block, batch):
    stream = torch.randint(0, 11, (n,))
    nats = train.stream_nats(Uniform(11), stream, block, batch, "cpu")
    assert nats == pytest.approx((n - 1) * math.log(11), rel=1e-6)


def test_stream_nats_equals_a_plain_loop_with_a_real_model():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=1, n_head=2, d_model=16))
    stream = torch.randint(0, 50, (45,))
    by_hand = 0.0
    with torch.no_grad():
        for i in range(0, 44, 8):  # windows of 8 targets: x = stream[i:i+8], y = the next token of each
            x, y = stream[i:i + 8][None], stream[i + 1:i + 9][None]
            x = x[:, :y.shape[1]]
            logits, _ = model(x)
            by_hand += torch.nn.functional.cross_entropy(logits[0], y[0], reduction="sum").item()
    assert train.stream_nats(model, stream, 8, 3, "cpu") == pytest.approx(by_hand, rel=1e-5)


# ----------------------------------------------------------------------------------------------
# end to end

def test_run_writes_log_and_checkpoint_and_loss_falls(titles_file, tmp_path):
    seen = []
    out = train.run(callback=lambda step, val: seen.append((step, val)), **tiny(titles_file, tmp_path))
    assert out["status"] == "done" and math.isfinite(out["final_val_loss"])
    log = read_log(out["log"])
    events = [e["event"] for e in log]
    assert events[0] == "config" and events[-1] == "end" and "train" in events
    head = log[0]
    assert head["config"]["n_layer"] == 1 and head["n_params"] == out["n_params"]
    assert {"torch", "python", "numpy"} <= set(head["versions"]) and len(head["data"]["sha256"]) == 64
    evals = [e for e in log if e["event"] == "eval"]
    assert [e["step"] for e in evals] == [s for s, _ in seen] and evals[0]["step"] == 0
    assert len(evals) == 1 + 2 * 2 and evals[-1]["step"] == out["steps"]
    assert evals[-1]["val_loss"] < 0.6 * evals[0]["val_loss"]
    assert log[-1]["final_val_loss"] == out["final_val_loss"] == evals[-1]["val_loss"]
    # the checkpoint holds the plain module's weights: strict load into a fresh GPT on CPU
    ckpt = train.load_checkpoint(out["ckpt"])
    assert not any(k.startswith("_orig_mod.") for k in ckpt["model"])
    model = GPT(GPTConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"], strict=True)
    assert os.path.isfile(os.path.join(out["run_dir"], "tokenizer.json"))


def test_second_run_reuses_the_tokenizer_and_never_overwrites_a_run(titles_file, tmp_path):
    a = train.run(**tiny(titles_file, tmp_path, epochs=1, max_steps=2))
    b = train.run(**tiny(titles_file, tmp_path, epochs=1, max_steps=2))
    assert a["run_dir"] != b["run_dir"]
    assert len(os.listdir(tmp_path / "runs" / ".tokenizers")) == 1
    with open(os.path.join(a["run_dir"], "tokenizer.json"), "rb") as f1, \
            open(os.path.join(b["run_dir"], "tokenizer.json"), "rb") as f2:
        assert f1.read() == f2.read()


def test_callback_can_stop_a_run(titles_file, tmp_path):
    class Enough(Exception):
        pass

    def stop_after_first(step, val):
        if step > 0:
            raise Enough

    with pytest.raises(Enough):
        train.run(callback=stop_after_first, name="cut", **tiny(titles_file, tmp_path))
    log = read_log(tmp_path / "runs" / "cut" / "log.jsonl")
    assert log[-1]["event"] == "end" and log[-1]["status"] == "stopped"
    assert [e["step"] for e in log if e["event"] == "eval"] == [0, log[-1]["steps"]]


def test_resume_after_sigkill_equals_an_uninterrupted_run(titles_file, tmp_path):
    cfg = tiny(titles_file, tmp_path, epochs=4, opt="asam")
    whole = train.run(name="whole", **cfg)

    # the same run in a process killed with SIGKILL as soon as its first checkpoint exists
    flags = [f"--{k}={v}" for k, v in cfg.items() if not isinstance(v, bool)]
    flags += ["--no-compile", "--no-amp", "--no-progress", "--name=killed"]
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "train.py"), *flags], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ONE_THREAD)
    ckpt = tmp_path / "runs" / "killed" / "ckpt.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    log = read_log(tmp_path / "runs" / "killed" / "log.jsonl")
    assert proc.returncode == -signal.SIGKILL and log[-1]["event"] != "end", "the run ended before the kill"

    resumed = train.run(resume=str(ckpt), device="cpu", compile=False, progress=False, sample=0)
    assert resumed["steps"] == whole["steps"]
    assert resumed["final_val_loss"] == pytest.approx(whole["final_val_loss"], abs=1e-6)
    assert read_log(tmp_path / "runs" / "killed" / "log.jsonl")[-1]["status"] == "done"


def test_resume_after_a_cut_run_equals_uninterrupted(titles_file, tmp_path):
    whole = train.run(name="whole", **tiny(titles_file, tmp_path, opt="sgd", momentum=0.9, lr=0.05))
    cut = train.run(name="cut", **tiny(titles_file, tmp_path, opt="sgd", momentum=0.9, lr=0.05, max_steps=7))
    assert cut["steps"] == 7
    resumed = train.run(resume=cut["ckpt"], max_steps=0)
    assert resumed["final_val_loss"] == pytest.approx(whole["final_val_loss"], abs=1e-6)


def test_non_finite_loss_stops_at_once(titles_file, tmp_path):
    with pytest.raises(train.Diverged, match="training loss became"):
        train.run(name="boom", **tiny(titles_file, tmp_path, opt="sgd", lr=1e12, grad_clip=0, dropout=0.0))
    log = read_log(tmp_path / "runs" / "boom" / "log.jsonl")
    assert log[-1]["status"] == "diverged"


# ----------------------------------------------------------------------------------------------
# bad input: one clear sentence, non-zero exit, nothing lost

def cli(*args, cwd):
    r = subprocess.run([sys.executable, os.path.join(HERE, "train.py"), *args], cwd=cwd,
                       capture_output=True, text=True, timeout=120, env=ONE_THREAD)
    return r.returncode, r.stderr.strip()


@pytest.mark.parametrize("make,over,match", [
    (None, dict(data="nope.txt"), "not found"),
    (b"", {}, "no titles"),
    (b"\n  \n", {}, "no titles"),
    (b"good title\nbad \xff byte\n", {}, "not UTF-8"),
    ("few", dict(num_titles=5000), "has 700 titles but --num_titles 5,000"),
    ("ok", dict(d_model=33, n_head=2), "not divisible"),
    ("ok", dict(vocab_size=100), "too small"),
    ("ok", dict(opt="adam"), "unknown --opt"),
    ("ok", dict(device="tpu"), "unknown --device"),
    ("ok", dict(dropout=1.5), "--dropout"),
    ("ok", dict(min_lr=1.0, lr=0.1), "--min_lr"),
    ("ok", dict(batch_size=1000, block_size=512), "fewer than one batch"),
    ("ok", dict(nonsense=3), "unknown setting"),
])
def test_bad_input_raises_one_clear_sentence(tmp_path, titles_file, make, over, match):
    cfg = tiny(titles_file, tmp_path, **over)
    if isinstance(make, bytes):
        (tmp_path / "bad.txt").write_bytes(make)
        cfg["data"] = str(tmp_path / "bad.txt")
    with pytest.raises(train.ConfigError, match=match) as e:
        train.run(**cfg)
    assert "\n" not in str(e.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_device_is_an_error(titles_file, tmp_path):
    with pytest.raises(train.ConfigError, match="sees no CUDA GPU"):
        train.run(**tiny(titles_file, tmp_path, device="cuda"))


def test_cli_errors_exit_non_zero_with_one_line(tmp_path, titles_file):
    code, err = cli("--data", str(tmp_path / "missing.txt"), cwd=tmp_path)
    assert code != 0 and err.count("\n") == 0 and err.startswith("error: data file")
    code, err = cli("--opt", "adam", cwd=tmp_path)
    assert code != 0 and "invalid choice: 'adam'" in err


def test_existing_run_name_and_bad_resume_lose_nothing(titles_file, tmp_path):
    first = train.run(name="keep", **tiny(titles_file, tmp_path, epochs=1, max_steps=3))
    before = {f: open(os.path.join(first["run_dir"], f), "rb").read() for f in os.listdir(first["run_dir"])}
    with pytest.raises(train.ConfigError, match="already exists"):
        train.run(name="keep", **tiny(titles_file, tmp_path))
    with pytest.raises(train.ConfigError, match="was trained with n_layer=1, not 2"):
        train.run(resume=first["ckpt"], n_layer=2)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(open(first["ckpt"], "rb").read()[:1000])
    with pytest.raises(train.ConfigError, match="corrupt"):
        train.run(resume=str(corrupt))
    after = {f: open(os.path.join(first["run_dir"], f), "rb").read() for f in os.listdir(first["run_dir"])}
    assert after == before


def test_preset_flags_and_overrides():
    cfg = train.resolve_config({"preset": "step5", "d_model": 384, "opt": "adamw"})
    assert (cfg["n_layer"], cfg["n_head"], cfg["lr"], cfg["opt"]) == (6, 6, 1.1e-3, "adamw")
    # every preset is a valid config, and the big ones are the study's 27,172,864-parameter shape
    for name, p in train.PRESETS.items():
        c = train.resolve_config({"preset": name})
        n = GPT(GPTConfig(vocab_size=c["vocab_size"], block_size=c["block_size"], n_layer=c["n_layer"],
                          n_head=c["n_head"], d_model=c["d_model"])).num_params()
        assert n == {"step5": 12_208_128, "step6": 2_560_128}.get(name, 27_172_864)
