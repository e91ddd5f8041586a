# The two commands of the README: `make demo` and `make test`. Both build .venv first.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-stamp
# Debian packages: the demo's data; the tests' PostgreSQL and headless browser.
DEMO_DEBS := dataset-fashion-mnist
TEST_DEBS := dataset-fashion-mnist postgresql chromium

.PHONY: venv demo demo-seg test bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip==25.3
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Byte-compile ablate once: where PYTHONDONTWRITEBYTECODE is set (as on the CI machines) every command
# would otherwise recompile its modules at each start (~0.1 s of `ablate table`). Up-to-date files are skipped.
venv: $(STAMP)
	@$(BIN)/python -m compileall -q ablate

demo: venv
	@bash scripts/system-deps.sh $(DEMO_DEBS)
	$(BIN)/ablate run studies/dilation.yaml --profile demo

demo-seg: venv  # Table 11's ADE20K half in miniature: UperNet on a generated image/mask set, on the CPU
	$(BIN)/python -m ablate.seg_synth seg-demo
	$(BIN)/ablate run studies/convnext_kernels.yaml --profile ade20k-demo

test: venv
	@bash scripts/system-deps.sh $(TEST_DEBS)
	@ABLATE_TEST_PG="$$(bash scripts/postgres.sh)"; export ABLATE_TEST_PG; \
	  echo "PostgreSQL for the store tests: $${ABLATE_TEST_PG:-none}"; \
	  $(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=25 $(PYTEST_ARGS)

bench: venv
	@bash scripts/system-deps.sh $(DEMO_DEBS)
	$(BIN)/python bench/trainer_throughput.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis
