# The two commands of the README. Each creates/refreshes .venv from pyproject.toml first.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast venv clean chromium compiled

# the compiled decoder is generated from the .avsc files at install: a changed schema reinstalls; the package is
# installed editable without its extensions, which `make compiled` then builds once in place (setup.py)
$(STAMP): pyproject.toml setup.py schemas/codegen.py schemas/encodegen.py schemas/avsc.py $(shell find schemas -name '*.avsc')
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	SHOPMAIL_EXTENSIONS=in-place-later $(VENV)/bin/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: compiled

demo: compiled
	$(VENV)/bin/shopmail demo  # .venv has the [test] extra, which includes [demo]

# Headless Chromium for the browser tests (preview screenshots, unsubscribe page): installed where it can be
# (root + apt-get, Debian's `chromium`); elsewhere those tests skip and say why.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	      (apt-get update -qq && apt-get install -y -qq chromium fonts-thai-tlwg) || echo "chromium install failed: browser tests will skip"; \
	    else echo "chromium not installed (needs root + apt-get): browser tests will skip"; fi; }

# The extensions built in place: the decoder and encoder, and the hot path's modules (streams/compiled.py);
# after an edit only the changed ones are rebuilt.
compiled: $(STAMP)
	SHOPMAIL_BUILD_PROTOTYPE=0 $(VENV)/bin/python setup.py -q build_ext --inplace

# Four pytest-xdist workers, each with its own session broker and SES emulator; a test file stays on one worker.
# Four on two cores: much of an integration test is waiting (group joins, session time-outs, killed processes).
test: compiled chromium
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider -n 4 --dist loadfile --no-loadscope-reorder

# The edit loop: every test that needs neither the broker nor the SES emulator and is not marked slow (≈ 1½ min).
test-fast: compiled
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider -n 2 -m "not integration and not slow"

clean:
	rm -rf $(VENV) .shopmail-data build
	find streams -name '*.so' -delete -o -name '*.c' -delete; rm -f schemas/serde*.so schemas/serde.c
