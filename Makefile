# The two commands a new user needs: `make run` and `make test`.
VENV ?= .venv
PORT ?= 7860

.PHONY: run test test-fast setup setup-dev clean

run: setup  ## install everything and start the assistant on the demo data (UI + API)
	$(VENV)/bin/recassist serve --demo --port $(PORT)

test: setup-dev  ## install everything and run the whole test suite
	./scripts/system-deps.sh
	$(VENV)/bin/python -m pytest

test-fast: setup-dev  ## unit tests only (fake LLM, hashing embeddings): seconds
	$(VENV)/bin/python -m pytest -m "not integration and not browser"

setup:
	./scripts/bootstrap.sh local

setup-dev:
	./scripts/bootstrap.sh local,dev

clean:
	rm -rf $(VENV) *.egg-info
