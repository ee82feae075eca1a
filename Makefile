# nanorun: every step is one command. `make help` lists them.
PY    ?= .venv/bin/python
DATA  ?= data/hn_titles.txt
# A first run that finishes in minutes on a laptop CPU: the study's smallest model, fewer titles, 1 epoch.
FIRST ?= --preset step6 --num_titles 30000 --epochs 1

.PHONY: help install run data test bench
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

bench: install   ## speed numbers: tokenizer, model, optimizer (DATA=file.txt)
	$(PY) bpe.py --data $(DATA) --num_titles 100000 --vocab_size 4000
	$(PY) gpt.py --bench
	$(PY) optim.py --bench
