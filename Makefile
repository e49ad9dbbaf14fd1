# Two entry points: `make demo` (the main job) and `make test` (the suite).
# Each creates .venv on first use and installs exactly what the project needs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.smpc-installed

.PHONY: demo text-demo serve serve-text test docs bench study clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	# exact pin: the CPU wheel; a loose `torch` would pull a multi-GB CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test,docs]"
	# CrypTen's own metadata is broken (withdrawn `sklearn`, torchvision): no deps;
	# what it really needs is pinned in pyproject.toml
	$(PY) -m pip install --quiet --no-deps crypten==0.4.1
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/smpc launch configs/local-2pc.yaml --report runs/demo-report.json

# a BERT classifier on text, private end to end (tokenizer at alice, secret one-hot ids)
text-demo: $(STAMP)
	$(PY) models/text_demo.py

# standing parties (alice, bob, the dealer) serving the digits CNN to client `analyst`;
# the demo's keys are made on first use, in the git-ignored keys/ folder
SERVE_KEYS := keys/serve-2pc
serve: $(STAMP)
	test -f $(SERVE_KEYS)/ca.pem || $(VENV)/bin/smpc keys init $(SERVE_KEYS) alice bob dealer analyst
	exec $(VENV)/bin/smpc serve configs/serve-2pc.yaml

# standing parties serving a BERT classifier on text to client `analyst`: the keys and the
# model (the text demo's, trained, packed for every shape and signed) are made on first use
TEXT_KEYS := keys/serve-text
TEXT_MODEL := runs/serve-text
serve-text: $(STAMP)
	test -f $(TEXT_KEYS)/ca.pem || $(VENV)/bin/smpc keys init $(TEXT_KEYS) alice bob dealer analyst
	test -f $(TEXT_MODEL)/model/model.sig || $(PY) models/text_demo.py --serve $(TEXT_MODEL) --sign-key $(TEXT_KEYS)/bob.key
	exec $(VENV)/bin/smpc serve configs/serve-text.yaml

# lint and format (ruff), type-check smpc/ (mypy, strict), then the suite
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) -m pytest -q

# the documentation site, into site/: strict (a broken link, reference or include fails);
# the two variables silence banners that MkDocs' plugins print about their own future
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(VENV)/bin/mkdocs build --strict

bench: $(STAMP)
	$(PY) benchmarks/inference_overhead.py
	$(PY) benchmarks/randomness_sources.py
	$(PY) benchmarks/fss_comparisons.py
	$(PY) benchmarks/fss_demo.py
	$(PY) benchmarks/transport_overhead.py
	$(PY) benchmarks/generators.py
	$(PY) benchmarks/ring_matmul.py
	$(PY) benchmarks/two_party.py
	$(PY) benchmarks/serving.py
	$(PY) benchmarks/bert_encoder.py --settings 16x1 --comparisons circuits fss
	$(PY) benchmarks/demos.py
	$(PY) benchmarks/approximations.py
	$(PY) benchmarks/huggingface_fidelity.py

# a study of a few cells (about 3 minutes): tables and plots in bench-results/quick
study: $(STAMP)
	$(VENV)/bin/smpc bench configs/studies/quick.yaml --out bench-results/quick --force

clean:
	rm -rf $(VENV) runs bench-results site
