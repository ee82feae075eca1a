"""Tests of tune.py, evaluate.py and plot_logs.py: known answers on tiny runs (about half a minute)."""

import glob
import json
import math
import os
import random
import subprocess
import sys

import optuna
import pytest
import torch
import torch.nn.functional as F

import evaluate
import plot_logs
import train
import tune

REPO = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Models this small only lose from threads: on a busy machine 2 threads were 5x slower than 1."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def titles_file(tmp_path_factory):
    """600 made-up titles with a little structure, so a tiny model's loss falls within one epoch."""
    r = random.Random(0)
    words = [["Show HN", "Ask HN", "Launch HN", "Tell HN"], ["fast", "small", "simple", "new", "tiny"],
             ["database", "compiler", "editor", "browser", "shell", "kernel"], ["Rust", "Go", "Python", "C", "Zig"]]
    path = tmp_path_factory.mktemp("data") / "titles.txt"
    path.write_text("".join(f"{r.choice(words[0])}: A {r.choice(words[1])} {r.choice(words[2])} written in "
                            f"{r.choice(words[3])}\n" for _ in range(600)), encoding="utf-8")
    return str(path)


def tiny_flags(titles_file):
    return ["--data", titles_file, "--num_titles", "400", "--test_titles", "100", "--vocab_size", "300",
            "--n_layer", "1", "--n_head", "2", "--d_model", "32", "--batch_size", "8", "--epochs", "1",
            "--opt", "adamw", "--device", "cpu", "--no-compile", "--no-amp", "--no-progress"]


# -----------------------------------------------------------------------------
# plot_logs.py


def write_log(path, name, events):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(json.dumps(e) for e in events) + "\n")


def fake_log(path, name, final, preset=None, t0=0.0, resume_at=None):
    cfg = dict(train.defaults(), preset=preset, n_layer=4, n_head=3, d_model=192, epochs=1)
    events = [{"event": "config", "time": t0, "name": name, "config": cfg, "device": "cpu", "n_params": 2560128}]
    for step in range(0, 31, 5):
        if step:
            events.append({"event": "train", "time": t0 + step, "step": step, "epoch": step / 30,
                           "loss": 4 - step / 10, "lr": 1e-3, "tokens_per_s": 1000.0})
        if step % 15 == 0:
            events.append({"event": "eval", "time": t0 + step, "step": step, "epoch": step / 30,
                           "val_loss": final + (30 - step) / 30})
    events.append({"event": "end", "time": t0 + 60, "status": "done", "final_val_loss": final,
                   "best_val_loss": final, "steps": 30, "tokens_per_s": 1000.0, "time_s": 60.0})
    write_log(path, name, events)


def test_smooth_and_spread_docstring_examples():
    assert plot_logs.smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])
    assert plot_logs.smooth([0.0, 2.0], beta=0.5) == pytest.approx([0.0, 4 / 3])
    assert plot_logs.spread([1.0, 1.01, 2.0], gap=0.1) == pytest.approx([1.0, 1.1, 2.0])
    ys = [1.3, 1.29, 1.31, 1.7, 1.305]
    out = plot_logs.spread(ys, gap=0.02, lo=1.295)
    assert all(o >= max(y, 1.295) - 1e-12 for o, y in zip(out, ys))     # labels only move up
    s = sorted(out)
    assert all(b - a >= 0.02 - 1e-12 for a, b in zip(s, s[1:]))        # and never overlap


def test_read_log_drops_steps_logged_again_after_resume(tmp_path):
    # steps 1-3 ran, the checkpoint is at step 2 (its eval), the run was killed during step 3 and resumed
    path = str(tmp_path / "r" / "log.jsonl")
    events = [{"event": "config", "time": 0, "name": "r", "config": {}},
              {"event": "train", "step": 1, "epoch": 0.25, "loss": 3.0},
              {"event": "train", "step": 2, "epoch": 0.5, "loss": 2.5},
              {"event": "eval", "step": 2, "epoch": 0.5, "val_loss": 2.0},
              {"event": "train", "step": 3, "epoch": 0.75, "loss": 9.9},
              {"event": "end", "status": "interrupted", "final_val_loss": 2.0},
              {"event": "resume", "step": 2},
              {"event": "train", "step": 3, "epoch": 0.75, "loss": 2.2},
              {"event": "eval", "step": 4, "epoch": 1.0, "val_loss": 1.8}]
    write_log(path, "r", events)
    with open(path, "a") as f:
        f.write('{"event": "train", "st')  # killed mid-line
    run = plot_logs.read_log(path)
    assert run["train"] == [(0.25, 3.0), (0.5, 2.5), (0.75, 2.2)]
    assert run["evals"] == [(0.5, 2.0), (1.0, 1.8)]
    assert run["end"] is None and plot_logs.final_val_loss(run) == 1.8


def test_plot_logs_writes_png_from_two_logs(tmp_path):
    fake_log(str(tmp_path / "a" / "log.jsonl"), "a", 1.5)
    fake_log(str(tmp_path / "b" / "log.jsonl"), "b", 1.3, t0=1.0)
    out = tmp_path / "figure.png"
    plot_logs.main(["--runs", str(tmp_path / "*" / "log.jsonl"), "--out", str(out)])
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image
    h, w, _ = matplotlib.image.imread(str(out)).shape
    assert w > 1000 and h > 500
    assert sorted(os.listdir(tmp_path)) == ["a", "b", "figure.png"]  # no temporary file left behind
    rows = [plot_logs.meta_row(plot_logs.read_log(str(tmp_path / n / "log.jsonl"))) for n in "ab"]
    assert rows[0][plot_logs.META_COLUMNS.index("shape")] == "4L 3H 192d b64"
    assert [r[-1] for r in rows] == ["1.5000", "1.3000"]


def test_ladder_table_lists_presets_in_study_order(tmp_path, capsys):
    fake_log(str(tmp_path / "s6" / "log.jsonl"), "s6", 1.4, preset="step6")
    fake_log(str(tmp_path / "s0" / "log.jsonl"), "s0", 1.9, preset="step0", t0=5.0)
    fake_log(str(tmp_path / "x" / "log.jsonl"), "x", 1.2)  # not a preset: not in the ladder
    plot_logs.main(["--table", "--runs", str(tmp_path / "*" / "log.jsonl")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("nanorun ladder: 100,000 titles x 1 epoch of data/hn_titles.txt "
                        "(the study: 100,000 titles x 7 epochs)")
    assert lines[4:] == ["| step0 | baseline: SGD, constant lr | 1.9000 | 1.7533 | 60 s |",
                         "| step6 | smaller still | 1.4000 | 1.3206 | 60 s |"]


# -----------------------------------------------------------------------------
# evaluate.py


@pytest.fixture(scope="module")
def tiny_ckpt(titles_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    result = train.run(data=titles_file, num_titles=400, test_titles=100, vocab_size=300, n_layer=1, n_head=2,
                       d_model=32, block_size=16, batch_size=8, epochs=1, device="cpu", compile=False, amp=False,
                       out_dir=str(out), progress=False, sample=0, name="tiny")
    return result["ckpt"]


def test_evaluate_equals_the_metric_computed_by_hand(tiny_ckpt, titles_file, capsys):
    r = evaluate.evaluate(tiny_ckpt, device="cpu")
    model, tok, _ = evaluate.load_model(tiny_ckpt)
    with open(titles_file, encoding="utf-8") as f:
        test = [line.strip() for line in f][400:500]
    text = "<eos>".join(test) + "<eos>"
    ids = [tok.eos_id] + tok.encode_titles(test)
    # a plain loop: windows of 16 predictions tile the stream, each token scored once, no padding
    nats, T = 0.0, 16
    with torch.no_grad():
        for s in range(0, len(ids) - 1, T):
            y = torch.tensor(ids[s + 1:s + T + 1])
            logits, _ = model(torch.tensor(ids[s:s + len(y)])[None])
            nats += F.cross_entropy(logits[0], y, reduction="sum").item()
    assert r["test_titles"] == 100 and r["chars"] == len(text)
    assert r["loss"] == pytest.approx(nats / len(text), rel=1e-5)
    assert r["perplexity"] == pytest.approx(math.exp(nats / len(text)), rel=1e-5)
    assert r["tokens_per_char"] == pytest.approx((len(ids) - 1) / len(text))
    assert r["params"] == sum(p.numel() for p in model.parameters())
    evaluate.main([tiny_ckpt, "--device", "cpu"])
    row = f"| {tiny_ckpt} | {r['params']:,} | 100 | {r['loss']:.4f} | {r['perplexity']:.4f} |"
    assert row in capsys.readouterr().out


def test_evaluate_bad_input_is_one_clear_sentence(tiny_ckpt, titles_file, tmp_path):
    ckpt = torch.load(tiny_ckpt, weights_only=False)
    run_dir = os.path.dirname(tiny_ckpt)
    (tmp_path / "no_tok").mkdir()
    torch.save(ckpt, tmp_path / "no_tok" / "ckpt.pt")
    (tmp_path / "other_tok").mkdir()
    torch.save(ckpt, tmp_path / "other_tok" / "ckpt.pt")
    with open(os.path.join(run_dir, "tokenizer.json"), encoding="utf-8") as f:
        (tmp_path / "other_tok" / "tokenizer.json").write_text(f.read().replace("[", "[ ", 1), encoding="utf-8")
    (tmp_path / "no_config").mkdir()
    torch.save({k: v for k, v in ckpt.items() if k != "config"}, tmp_path / "no_config" / "ckpt.pt")
    with open(titles_file, encoding="utf-8") as f:
        lines = f.readlines()
    (tmp_path / "short.txt").write_text("".join(lines[:400]), encoding="utf-8")
    (tmp_path / "shifted.txt").write_text("".join(lines[1:]), encoding="utf-8")
    cases = [([str(tmp_path / "no_tok" / "ckpt.pt")], "is missing"),
             ([str(tmp_path / "other_tok" / "ckpt.pt")], "sha256 differs"),
             ([str(tmp_path / "no_config" / "ckpt.pt")], "not a version-1 nanorun checkpoint"),
             ([tiny_ckpt, "--data", str(tmp_path / "short.txt")], "has no titles after the first 400"),
             ([tiny_ckpt, "--data", str(tmp_path / "shifted.txt")], "does not begin with the 400 titles")]
    for argv, words in cases:
        with pytest.raises(SystemExit) as e:
            evaluate.main(argv + ["--device", "cpu"])
        assert str(e.value).startswith("error: ") and words in str(e.value), (argv, e.value)
        assert str(e.value).count("; ") <= 1 and "\n" not in str(e.value)


# -----------------------------------------------------------------------------
# tune.py


def test_train_command_and_search_space_docstring_examples():
    assert (tune.train_command({"opt": "asam", "compile": False}, {"lr": 0.00123})
            == "python train.py --opt asam --no-compile --lr 0.00123")
    space = tune.search_space(dict(train.defaults(), opt="adamw"), {"lr", "block_size"})
    assert space == {"dropout": ("float", 0.0, 0.3), "warmup_ratio": ("float", 0.0, 0.2),
                     "weight_decay": ("float", 0.0, 0.1)}
    # ranges hold the untuned recipe's values (step 2's block size 128, SGD's lr) so it can be trial 0
    space = tune.search_space(dict(train.defaults(), **train.PRESETS["step0"]["flags"]), set())
    assert space["lr"] == ("log", 1e-3, 1.0) and space["block_size"] == ("choice", [32, 64, 128])
    assert tune.search_space(train.defaults(), set())["rho"] == ("log", 0.1, 3.0)  # ASAM, its default 0.5 inside


def test_tune_study_prunes_fails_and_resumes(titles_file, tmp_path, monkeypatch, capsys):
    db, out = f"sqlite:///{tmp_path}/tune.db", str(tmp_path / "runs")
    flags = ["--storage", db, "--study", "s", "--prune_after", "1", *tiny_flags(titles_file), "--out_dir", out]
    study = optuna.create_study(storage=db, study_name="s", direction="minimize")
    study.enqueue_trial({"lr": 1e-2})  # learns fast: the median to beat
    study.enqueue_trial({"lr": 1e-4})  # barely moves: behind trial 0 at the first evaluation, so pruned
    real_run = train.run

    def crash_trial_2(callback=None, **config):
        if config["name"] == "s-t2":
            raise RuntimeError("a crash")
        return real_run(callback=callback, **config)

    monkeypatch.setattr(train, "run", crash_trial_2)
    tune.main(["--trials", "3", *flags])
    S = optuna.trial.TrialState
    trials = optuna.load_study(study_name="s", storage=db).get_trials()
    assert [t.state for t in trials] == [S.COMPLETE, S.PRUNED, S.FAIL]
    with open(os.path.join(out, "s-t0", "log.jsonl")) as f:
        end = [json.loads(line) for line in f][-1]
    assert end["status"] == "done" and trials[0].value == end["final_val_loss"]
    with open(os.path.join(out, "s-t1", "log.jsonl")) as f:
        events = [json.loads(line) for line in f]
    assert events[-1]["status"] == "stopped" and sum(e["event"] == "eval" for e in events) == 2
    assert list(trials[1].intermediate_values) == [0, 1]  # reported by evaluation index
    printed = capsys.readouterr().out
    assert "3 trials, 1 complete, 1 pruned, 1 fail" in printed
    best = printed.split("repeat the best trial:\n")[1].split()
    assert best[:4] == ["python", "train.py", "--data", titles_file] and best[best.index("--lr") + 1] == "0.01"

    monkeypatch.setattr(train, "run", real_run)
    tune.main(["--trials", "1", *flags])  # the same command again: resumes, adds one trial
    trials = optuna.load_study(study_name="s", storage=db).get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3] and trials[3].state in (S.COMPLETE, S.PRUNED)
    assert all(trials[3].params != t.params for t in trials[:3])
    assert os.path.isfile(os.path.join(out, "s-t3", "ckpt.pt"))
    with pytest.raises(SystemExit, match="was run with d_model=32, not d_model=64"):  # other flags: refused
        tune.main(["--trials", "1", *flags, "--d_model", "64"])


def test_diverged_trial_is_pruned_and_bad_input_stops_the_study(monkeypatch):
    def run(callback=None, **config):
        if config["name"] == "x-t0":
            raise train.Diverged("training loss became nan")
        raise train.ConfigError("bad on purpose")

    monkeypatch.setattr(train, "run", run)
    study, bad_input = optuna.create_study(), []
    space = tune.search_space(train.defaults(), set())
    study.optimize(lambda t: tune.objective(t, {}, space, "x", "runs", bad_input), n_trials=5, catch=(Exception,))
    S = optuna.trial.TrialState
    assert [t.state for t in study.trials] == [S.PRUNED, S.FAIL]  # trials 2-4 never started
    assert [str(e) for e in bad_input] == ["bad on purpose"]


def test_two_workers_share_one_journal_study(titles_file, tmp_path):
    journal, out = str(tmp_path / "tune.log"), str(tmp_path / "runs")
    cmd = [sys.executable, os.path.join(REPO, "tune.py"), "--storage", journal, "--study", "j", "--trials", "2",
           "--pruner", "none", *tiny_flags(titles_file), "--out_dir", out]
    env = dict(os.environ, OMP_NUM_THREADS="1")  # one core each (see one_thread)
    workers = [subprocess.Popen(cmd + ["--sampler_seed", str(seed)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for seed in (1, 2)]
    outputs = [w.communicate(timeout=120)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    trials = optuna.load_study(study_name="j", storage=tune.open_storage(journal)).get_trials()
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert sum(bool(t.user_attrs.get("baseline")) for t in trials) == 1  # one worker made the study
    runs = sorted(glob.glob(os.path.join(out, "j-t*", "log.jsonl")))
    assert [os.path.basename(os.path.dirname(p)) for p in runs] == ["j-t0", "j-t1", "j-t2", "j-t3"]
