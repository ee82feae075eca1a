# nanorun: every step is one command. `make help` lists them.
PY    ?= .venv/bin/python
DATA  ?= data/hn_titles.txt
# A first run that finishes in minutes on a laptop CPU: nanorun's recipe on the study's smallest model,
# fewer titles, 1 epoch, eager: compiling costs ~60 s the first time on a machine, more than 108 steps can
# win back (NOTES.md, 2026-12-07 evening); no weight average: one epoch of 108 steps is shorter than its memory.
FIRST ?= --preset nanorun --num_titles 30000 --epochs 1 --no-compile --ema 0

.PHONY: help install run data test bench tune evaluate figure records ladder ablate speedrun distill
help:            ## this list
	@grep -E '^[a-z]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

.venv/installed: requirements.txt
	python3 -m venv .venv
	.venv/bin/pip install -q -r requirements.txt
	touch $@

install: .venv/installed  ## make a virtual environment in .venv and install requirements.txt

run: install     ## install, then a first training run (DATA=file.txt for your own titles)
	@[ -f "$(DATA)" ] || [ "$(DATA)" != data/hn_titles.txt ] || $(MAKE) data
	$(PY) train.py --data $(DATA) $(FIRST)

data: install    ## download the study's corpus to data/hn_titles.txt (needs the `datasets` package)
	.venv/bin/pip install -q datasets
	$(PY) data/prepare.py

test: install    ## the test suite
	$(PY) -m pytest -q test_all.py

bench: install   ## speed numbers: training step, model, AdamW, tokenizer (DATA=file.txt)
	$(PY) bench.py step --opt adamw
	$(PY) bench.py step --opt asam --dropout 0.0603
	$(PY) bench.py model --shape all
	$(PY) bench.py adamw
	$(PY) bench.py tokenizer --data $(DATA)
# ---- the study: tune, evaluate, figure, ladder (tune.py, evaluate.py, plot_logs.py)
# ARGS: extra flags for the command, e.g. make tune ARGS='--opt adamw --epochs 2 --num_titles 20000'
ARGS   ?=
TRIALS ?= 30
CKPTS  ?= $(wildcard runs/*/ckpt.pt)
RUNS   ?= runs/*/log.jsonl
# make ladder SCALE=cpu: every step on 4,000 titles x 1 epoch, eager (compiling would take longer
# than these few steps); SCALE=full: the study's own 100,000 titles x 7 epochs (a GPU).
# The table's title states the scale.
SCALE  ?= cpu
SCALE_cpu  = --num_titles 4000 --test_titles 2000 --epochs 1 --no-compile
SCALE_full =

tune: install      ## Optuna study of lr, dropout, block size, warm-up, wd (TRIALS=30 ARGS='--opt asam ...')
	@[ -f "$(DATA)" ] || [ "$(DATA)" != data/hn_titles.txt ] || $(MAKE) data
	$(PY) tune.py --trials $(TRIALS) --data $(DATA) $(ARGS)

evaluate: install  ## held-out test loss of checkpoints as a Markdown table (CKPTS='runs/a/ckpt.pt ...')
	@[ -n "$(CKPTS)" ] || { echo "error: no checkpoint in runs/*/ckpt.pt; train one first or pass CKPTS='path/ckpt.pt ...'"; exit 1; }
	$(PY) evaluate.py $(CKPTS) $(ARGS)

figure: install    ## runs/figure.png from the run logs (RUNS='runs/*/log.jsonl')
	$(PY) plot_logs.py --runs '$(RUNS)' $(ARGS)

records: install   ## print README.md's tables from the logs in records/ (each table's command is in README.md)
	@grep -o "<!-- table: python plot_logs.py .* -->" README.md | sed 's/<!-- table: python //; s/ -->//' | \
	while read -r args; do echo "\$$ python $$args"; eval "$(PY) $$args" || exit 1; echo; done

ladder: install    ## every step of the study in order, then its table (SCALE=cpu or full)
	@[ -n "$(filter $(SCALE),cpu full)" ] || { echo "error: unknown SCALE=$(SCALE); use SCALE=cpu or SCALE=full"; exit 1; }
	@[ -f "$(DATA)" ] || [ "$(DATA)" != data/hn_titles.txt ] || $(MAKE) data
	@dir=runs/ladder-$(SCALE)-$$(date +%Y%m%d-%H%M%S); \
	for s in 0 1 2 3 4 5 6; do \
		echo "== step$$s"; \
		$(PY) train.py --preset step$$s --data $(DATA) $(SCALE_$(SCALE)) $(ARGS) --out_dir $$dir --name step$$s || exit 1; \
	done; \
	$(PY) plot_logs.py --runs "$$dir/*/log.jsonl" --out $$dir/figure.png && \
	$(PY) plot_logs.py --table --runs "$$dir/*/log.jsonl" | tee $$dir/ladder.md
# ---- beyond the study: the step-6 recipe, then one change at a time; SEEDS seeds per row; one table
# ROWS: name=flags;... (each row's flags in full); ARGS shrinks every run, e.g. ARGS='--num_titles 20000'
# (an --epochs in ARGS also overrides every row's own epochs: ep5 then repeats wd0.1)
SEEDS ?= 1337 1338 1339
ROWS  ?= step6=--preset step6;rho0.5=--preset step6 --rho 0.5;adamw=--preset step6 --opt adamw;nodropout=--preset step6 --opt adamw --dropout 0;within_title=--preset step6 --opt adamw --dropout 0 --within_title;rope=--preset step6 --opt adamw --dropout 0 --within_title --rope;muon=--preset step6 --opt muon --dropout 0 --within_title --rope;wd0.1=--preset step6 --opt muon --dropout 0 --within_title --rope --weight_decay 0.1;ep5=--preset step6 --opt muon --dropout 0 --within_title --rope --weight_decay 0.1 --epochs 5;wsd=--preset step6 --opt muon --dropout 0 --within_title --rope --weight_decay 0.1 --epochs 5 --schedule wsd;lr3e-3wd0.2=--preset nanorun --no-window_offsets --epochs 5 --no-attn_gate --no-relu2 --ema 0;offsets=--preset nanorun --epochs 5 --no-attn_gate --no-relu2 --ema 0;ep6=--preset nanorun --no-attn_gate --no-relu2 --ema 0;gate=--preset nanorun --no-relu2 --ema 0;relu2=--preset nanorun --ema 0;nanorun=--preset nanorun

# JOBS runs at once: on one GPU a 2.56M-model run leaves most of it idle (33 runs, 12 at a time: 5.3 min on
# an H200, NOTES.md); on a CPU keep JOBS=1, runs at once share its cores. Each run's output: its NAME.out.
JOBS  ?= 1

ablate: install    ## the ablation rows x SEEDS seeds, JOBS at once, then runs/ablate-*/ablation.md and figure.png
	@[ -f "$(DATA)" ] || [ "$(DATA)" != data/hn_titles.txt ] || $(MAKE) data
	@export dir=runs/ablate-$$(date +%Y%m%d-%H%M%S); mkdir -p $$dir; \
	echo '$(ROWS)' | tr ';' '\n' | while IFS='=' read -r row flags; do \
		for s in $(SEEDS); do echo "$$row-s$$s $$flags --seed $$s"; done; \
	done | xargs -L 1 -P $(JOBS) sh -c 'name=$$1; shift; echo "== $$name: $$*"; \
		$(PY) train.py --data $(DATA) "$$@" --sample 0 --no-progress $(ARGS) --out_dir $$dir --name $$name \
		>$$dir/$$name.out 2>&1 && tail -n 1 $$dir/$$name.out || { echo "$$name failed: $$dir/$$name.out"; exit 255; }' run && \
	rows=$$(echo '$(ROWS)' | tr ';' '\n' | sed "s|=.*|-s*/log.jsonl|; s|^|$$dir/|"); \
	$(PY) plot_logs.py --ablation --runs $$rows | tee $$dir/ablation.md && \
	$(PY) plot_logs.py --runs $$rows --out $$dir/figure.png
# ---- the study's number, fast: nanorun for 1.35 epochs with a larger lr, a shorter warm-up and a longer decay,
# evaluated once at the end (each evaluation costs seconds); the table's last column is each seed's time to 1.3206.
# Window offsets, the attention gate, squared ReLU and the weight average off, as in the runs of records/speedrun/
# (they came before nanorun took them up).
FAST  ?= --preset nanorun --epochs 1.35 --lr 8e-3 --warmup_ratio 0.01 --decay_frac 0.4 --evals_per_epoch 1 --no-window_offsets --no-attn_gate --no-relu2 --ema 0

speedrun: install  ## nanorun to the study's 1.3206 in 2-7 minutes on a 2-core CPU, SEEDS seeds one at a time
	@$(MAKE) --no-print-directory ablate ROWS='speedrun=$(FAST)' JOBS=1
# ---- distillation: a 12.2M teacher (nanorun12m), trained once, then nanorun's 2.56M model
# learns from the teacher's next-token distributions as well as from the titles (train.py --teacher; NOTES.md)
# STUDENT: the student's flags; STUDENT='--preset nanorun12m' distils the 12.2M model from a
# teacher of its own size (NOTES.md)
TEACHER ?= runs/teacher12m
STUDENT ?= --preset nanorun

distill: install   ## train the 12.2M teacher once (TEACHER=runs/teacher12m), then nanorun (STUDENT=flags) from it, SEEDS seeds
	@[ -f "$(DATA)" ] || [ "$(DATA)" != data/hn_titles.txt ] || $(MAKE) data
	@[ -f $(TEACHER)/ckpt.pt ] || $(PY) train.py --preset nanorun12m --data $(DATA) --sample 0 \
		$(ARGS) --out_dir $(dir $(TEACHER)) --name $(notdir $(TEACHER))
	@$(MAKE) --no-print-directory ablate ROWS='distill=$(STUDENT) --teacher $(TEACHER)'
