# Tianfu 天府智医 — the two commands: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
VENDOR := src/tianfu/web/static/vendor
VENDORED := $(VENDOR)/.installed
PYTEST := $(BIN)/python -m pytest

.PHONY: run setup test test-sqlite test-postgres lint bench screenshots i18n models clean

run: setup ## Set up, seed the demo hospital, serve http://127.0.0.1:8000
	TIANFU_DEMO=1 $(BIN)/tianfu demo
	TIANFU_DEMO=1 $(BIN)/tianfu serve

setup: $(INSTALLED) $(VENDORED)

$(INSTALLED): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

# Browser libraries come from npm (package-lock.json pins them) and are copied next to our own assets.
$(VENDORED): package.json package-lock.json
	npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	mkdir -p $(VENDOR)/swagger-ui
	cp node_modules/htmx.org/dist/htmx.min.js node_modules/echarts/dist/echarts.min.js $(VENDOR)/
	cp node_modules/swagger-ui-dist/swagger-ui-bundle.js node_modules/swagger-ui-dist/swagger-ui.css $(VENDOR)/swagger-ui/
	touch $@

# The whole suite on SQLite; then, when TIANFU_TEST_POSTGRES_URL is set (CI sets it), again on PostgreSQL.
test: setup
	$(PYTEST) --cov --cov-report=
	$(BIN)/coverage report --fail-under=$$(cat .coverage-floor)
	@if [ -n "$$TIANFU_TEST_POSTGRES_URL" ]; then \
		echo "=== the same suite against PostgreSQL ($$TIANFU_TEST_POSTGRES_URL) ==="; \
		TIANFU_TEST_DATABASE_URL="$$TIANFU_TEST_POSTGRES_URL" $(PYTEST) -m "not browser" -p no:cacheprovider; \
	else echo "TIANFU_TEST_POSTGRES_URL is unset: skipped the PostgreSQL pass"; fi

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy

bench: setup
	$(BIN)/python benchmarks/run.py

# Retrain every shipped model on the CPU from the public data under DATA (outputs are committed).
DATA ?= ../shared/data
models: setup
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,train]'
	for task in pneumonia breast retina; do \
		$(BIN)/python training/imaging/train.py --task $$task --data $(DATA)/imaging/medmnist/$${task}mnist.npz \
			--out src/tianfu/imaging/models/ || exit 1; done
	$(BIN)/python training/imaging/train.py --task cxr-abnormal --data $(DATA)/imaging/cxr-samples/nih1000_64px \
		--out src/tianfu/imaging/models/
	$(BIN)/python training/triage/train_inquiry.py --data $(DATA)/triage --out src/tianfu/triage/models/inquiry/
	$(BIN)/python training/triage/train_departments.py --toyhom $(DATA)/triage/toyhom-im/train.jsonl \
		--cmekg $(DATA)/knowledge/cmekg/cmekg_diseases.json --benchmarks $(DATA)/triage --out src/tianfu/triage
	$(BIN)/python training/sepsis/train.py --data $(DATA)/monitoring/physionet2019/training_setA.tar.gz \
		--out src/tianfu/monitoring/models/

screenshots: setup
	$(BIN)/python scripts/screenshots.py

i18n: setup
	$(BIN)/pybabel extract -F babel.cfg -k N_ -k gettext_ --no-location --omit-header -o src/tianfu/locale/messages.pot src/tianfu
	$(BIN)/pybabel update -i src/tianfu/locale/messages.pot -d src/tianfu/locale -l zh_CN --no-fuzzy-matching

clean:
	rm -rf $(VENV) node_modules $(VENDOR) var .pytest_cache .mypy_cache .ruff_cache .coverage
