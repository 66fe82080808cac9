# Both entry points do their own set-up (scripts/bootstrap.sh): a fresh Debian 12 machine, as root,
# needs nothing else.
SHELL := /bin/bash
VENV := $(CURDIR)/.venv
COLLECTIONS := $(CURDIR)/.cache/collections
SANITY_ROOT := $(CURDIR)/.cache/sanity/ansible_collections/nixie/provision
export PATH := $(VENV)/bin:$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export PYTHONPATH := $(COLLECTIONS):$(CURDIR)/tests/lab
PYTEST := python -m pytest -p no:cacheprovider

.PHONY: demo test bootstrap sanity lint unit protocol lab bench bench-smoke clean

demo: bootstrap
	python -m nixielab demo

test: bootstrap
	$(MAKE) --no-print-directory sanity lint bench-smoke
	$(PYTEST) --durations=30 tests/unit tests/protocol tests/lab

bootstrap:
	bash scripts/bootstrap.sh

# ansible-test needs the collection at .../ansible_collections/nixie/provision and reads only
# what git would ship, so it runs on a copy of the tracked and untracked-but-not-ignored files.
sanity: bootstrap
	rm -rf $(SANITY_ROOT) && mkdir -p $(SANITY_ROOT)
	git ls-files -z --cached --others --exclude-standard | rsync -a --from0 --files-from=- ./ $(SANITY_ROOT)/
	cd $(SANITY_ROOT) && git init -q && git add -A && \
	  ansible-test sanity --local --python $$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])') --requirements --color no

# The whole collection (plugins' EXAMPLES, meta, examples, changelogs too), as Galaxy users get it. The execution
# environment is checked by tests/unit/packaging (ansible-builder create and its dependency scan).
lint: bootstrap
	ansible-lint --profile production
	antsibull-changelog lint

unit: bootstrap
	$(PYTEST) tests/unit

protocol: bootstrap
	$(PYTEST) tests/protocol

lab: bootstrap
	$(PYTEST) tests/lab

bench: bootstrap
	python -m bench

bench-smoke: bootstrap
	python -m bench --smoke

clean:
	python -m nixielab teardown || true
	rm -rf .cache .lab
