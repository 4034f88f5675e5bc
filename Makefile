# Shelf: `make run` to try it, `make test` to check it. Both set themselves up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   ?= $(HOME)/.local/share/shelf/demo-library
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test test-systemd bench dist screenshot soak fuzz system-deps install-desktop install-service clean

# System packages: Tk for the desktop client; Xvfb, xdotool, a window manager (openbox)
# and xprop for its real-input tests; fail2ban for fail2ban-regex, which checks our filter.
# Installed with apt-get when missing and we are root; otherwise we say what is missing.
system-deps:
	@missing=""; \
	$(PYTHON) -c "import tkinter" 2>/dev/null || missing="$$missing python3-tk"; \
	$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || missing="$$missing python3-venv"; \
	command -v Xvfb >/dev/null || missing="$$missing xvfb"; \
	command -v xdotool >/dev/null || missing="$$missing xdotool"; \
	command -v openbox >/dev/null || missing="$$missing openbox"; \
	command -v xprop >/dev/null || missing="$$missing x11-utils"; \
	command -v desktop-file-validate >/dev/null || missing="$$missing desktop-file-utils"; \
	command -v fail2ban-regex >/dev/null || missing="$$missing fail2ban"; \
	command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing="$$missing haproxy"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing system packages:$$missing"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q $$missing >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null && apt-get install -y -q $$missing >/dev/null; } || exit 1; \
	  else \
	    echo "note: missing system packages:$$missing (install them with apt-get as root)"; \
	  fi; \
	fi

$(STAMP): setup.cfg pyproject.toml
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $(STAMP)

# `make run` installs only what running needs (no test extras). `exec`: no shell between
# make and the app, so Ctrl+C closes the window quietly (no "Interrupt" from a killed sh).
RUN_STAMP := $(VENV)/.installed-run
$(RUN_STAMP): setup.cfg pyproject.toml
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e .
	@touch $(RUN_STAMP)

run: system-deps $(RUN_STAMP)
	@exec $(BIN)/python -m gui.demo --library "$(DEMO)"

test: system-deps $(STAMP)
	$(BIN)/python -m pytest -q

# The packaged shelfd under a real systemd: a cached minimal Debian booted with
# systemd-nspawn (root only; tests/system/test_systemd.py says what it checks).
test-systemd: $(STAMP) dist
	SHELF_SYSTEMD_TEST=1 SHELF_DIST=$(CURDIR)/dist $(BIN)/python -m pytest -q -p no:randomly -p no:xvfb \
	  tests/system/test_systemd.py

bench: system-deps $(STAMP) dist
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  for peer in nginx vsftpd; do command -v $$peer >/dev/null || [ -x /usr/sbin/$$peer ] || \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$peer >/dev/null 2>&1 || \
	    echo "note: could not install $$peer; it will be reported as missing"; done; fi
	$(BIN)/python -m pip install -q pyftpdlib matplotlib || echo "note: pyftpdlib/matplotlib unavailable"
	$(BIN)/python -m bench

soak: $(STAMP)
	rm -f .soak-figures.jsonl
	SHELF_SOAK=1 SHELF_RELIABILITY_REPORT=$(CURDIR)/.soak-figures.jsonl \
	  $(BIN)/python -m pytest -q -p no:randomly tests/test_reliability.py
	$(BIN)/python tests/reliability_report.py .soak-figures.jsonl docs/reliability.md

# dist/shelfd-service.tar.gz: what a server needs to run shelfd as a service, no Python:
# the binary, install-service.sh, the unit, the ini template, the logrotate file and the
# fail2ban filter and jail.
dist: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dist]'
	$(BIN)/python packaging/build.py --dist dist --work build
	rm -rf build/shelfd-service && mkdir -p build/shelfd-service
	cp dist/shelfd packaging/systemd/install-service.sh packaging/systemd/shelfd.service \
	   packaging/systemd/shelfd.ini build/shelfd-service/
	cp packaging/logrotate/shelfd build/shelfd-service/shelfd.logrotate
	cp -r packaging/fail2ban build/shelfd-service/fail2ban
	tar -C build --owner=0 --group=0 -czf dist/shelfd-service.tar.gz shelfd-service
	cd dist && sha256sum shelfd-service.tar.gz >> SHA256SUMS

screenshot: system-deps $(STAMP)
	$(BIN)/python -m pip install -q pillow
	if [ -n "$$DISPLAY" ]; then $(BIN)/python docs/screenshot.py docs/screenshot.png; \
	else xvfb-run -a -s "-screen 0 1400x900x24" $(BIN)/python docs/screenshot.py docs/screenshot.png; fi

install-desktop:
	sh packaging/linux/install-desktop.sh

# Uses dist/shelfd as it is (no venv, no rebuild); builds it only when it is missing.
install-service:
	@[ -x dist/shelfd ] || $(MAKE) dist
	$(SUDO) sh packaging/systemd/install-service.sh dist/shelfd

# The wire fuzzers alone, with soak-sized example counts (minutes, not part of make test).
fuzz: $(STAMP)
	SHELF_SOAK=1 $(BIN)/python -m pytest -q tests/test_reliability.py -k "fuzzed or wrong_byte or sequences or corpus"

clean:
	rm -rf $(VENV) build dist .pytest_cache .hypothesis *.egg-info
