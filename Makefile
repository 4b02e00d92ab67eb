# Build entry point. `make demo` runs the main job locally; `make test` runs the tests.
# Both set themselves up first (Python packages into .venv/, Azurite into node_modules/).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
MLTABLE_STAMP := .venv-mltable/.installed
SERVING_STAMP := .venv-serving/.installed

.PHONY: setup setup-python setup-serving test test-fast demo bench lint infra-check env-check automl-rehearsal deploy clean

setup: $(PIP_STAMP) $(MLTABLE_STAMP) $(NODE_STAMP) $(SERVING_STAMP)
setup-python: $(PIP_STAMP) $(MLTABLE_STAMP)
setup-serving: $(SERVING_STAMP)

$(PIP_STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 is required, found {sys.version}"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing Python packages into $(VENV) (log: $(VENV)/install.log)"
	@{ $(PY) -m pip install --quiet --upgrade pip && $(PY) -m pip install --quiet -e '.[pipeline,train,dev]'; } \
		> $(VENV)/install.log 2>&1 || { tail -40 $(VENV)/install.log; exit 1; }
	@touch $@

# The real mltable library, to check the MLTable files the steps write (tests/helpers.load_with_mltable), in
# its own environment: its azureml-dataprep pins azure-identity<=1.17.0, which the function app's blob
# binding extension (azure-identity>=1.19) cannot share.
$(MLTABLE_STAMP):
	test -x .venv-mltable/bin/python || $(PYTHON) -m venv .venv-mltable
	@echo "installing mltable into .venv-mltable (log: .venv-mltable/install.log)"
	@{ .venv-mltable/bin/pip install --quiet --upgrade pip && .venv-mltable/bin/pip install --quiet 'mltable>=1.7' 'pandas>=2.2,<3'; } \
		> .venv-mltable/install.log 2>&1 || { tail -40 .venv-mltable/install.log; exit 1; }
	@touch $@

# The local endpoint's inference server and the model's packages, in an environment of their own (the server pins
# pydantic ~=2.12 and opentelemetry-sdk 1.33.0, which the function app's packages cannot share); about 2 min.
$(SERVING_STAMP): inference/requirements.txt
	test -x .venv-serving/bin/python || $(PYTHON) -m venv .venv-serving
	@echo "installing the local endpoint's inference server into .venv-serving (log: .venv-serving/install.log)"
	@{ .venv-serving/bin/pip install --quiet --upgrade pip && .venv-serving/bin/pip install --quiet -r inference/requirements.txt; } \
		> .venv-serving/install.log 2>&1 || { tail -40 .venv-serving/install.log; exit 1; }
	@touch $@

$(NODE_STAMP): package.json package-lock.json
	@echo "installing Azurite into node_modules"
	@npm ci --no-audit --no-fund --loglevel=error > /dev/null
	@touch $@

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# The fast tier: no Azurite (so no Node), no training or end-to-end runs.
test-fast: setup-python
	$(PY) -m pytest -n auto -m 'not integration and not slow' $(PYTEST_ARGS)

demo: setup
	$(PY) -m devtools.demo

bench: setup
	$(PY) bench/labels.py
	$(PY) bench/aggregation.py
	$(PY) bench/split.py
	$(PY) bench/events.py
	$(PY) bench/ledger.py --images 1000,10000 --runs 100,1000,10000
	$(PY) bench/full_sheet.py
	$(PY) bench/holdout_scoring.py
	$(PY) bench/serving.py
	$(PY) bench/step_profile.py --realistic
	$(PY) bench/contention.py
	$(PY) bench/train.py
	$(PY) bench/train.py --realistic --warm-minutes 3

# Terraform: formatting and checkov (own virtual environment: its hcl2 fork clashes with python-hcl2).
CHECKOV := .venv-checkov/bin/checkov

$(CHECKOV):
	$(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/pip install --quiet --upgrade pip
	.venv-checkov/bin/pip install --quiet 'checkov>=3.2,<4'

# Deploy to Azure in the order that works (resources, code, subscriptions); see docs/deployment.md.
deploy: setup-python
	bash infra/deploy.sh all

infra-check: $(CHECKOV)
	terraform fmt -check -recursive infra
	$(CHECKOV) -d infra --framework terraform --skip-download --compact --quiet

# The pipeline steps' Azure ML environment resolves from wheels as pinned, the steps import in it, and
# the CPU steps' real code paths run in it, the tag step's decision included (a fresh Python 3.11 venv
# against the package index, as the image build does; a minute or two).
env-check: setup-python
	$(PY) -m devtools.step_environment check --import-steps --rehearse

# AutoML's models scored as the tag step scores them on Azure ML: two MLflow models saved through AutoML for Images'
# own wrapper class, in AutoML's interpreter (Python 3.10, devtools/automl_environment.txt), scored there by the tag
# step. Not in CI: the environment is 222 packages, 8.2 GB (torch's CUDA build: the index has no other), and took
# 844 s to install here; the rehearsal itself about 5 minutes (docs/pipeline.md, "What scoring costs").
PYTHON310 ?= $(firstword $(shell python3.10 -c 'import sys; print(sys.executable)' 2>/dev/null) \
	$(wildcard $(HOME)/.pyenv/versions/3.10*/bin/python3.10))
AUTOML_VENV := .venv-automl
# Not one of `make setup`'s environments (its stamp is named apart from theirs).
AUTOML_STAMP := $(AUTOML_VENV)/.automl-installed

$(AUTOML_STAMP): devtools/automl_environment.txt
	@test -n "$(PYTHON310)" || { echo "Python 3.10 is needed (AutoML's training image runs 3.10): set PYTHON310"; exit 1; }
	test -x $(AUTOML_VENV)/bin/python || $(PYTHON310) -m venv $(AUTOML_VENV)
	@echo "installing AutoML's scoring environment into $(AUTOML_VENV) (log: $(AUTOML_VENV)/install.log; ~15 min)"
	@printf 'setuptools<81\n' > $(AUTOML_VENV)/build-constraints.txt
	@PIP_CONSTRAINT=$(AUTOML_VENV)/build-constraints.txt $(AUTOML_VENV)/bin/pip install --quiet \
		-r devtools/automl_environment.txt > $(AUTOML_VENV)/install.log 2>&1 \
		|| { tail -40 $(AUTOML_VENV)/install.log; exit 1; }
	@touch $@

automl-rehearsal: setup-python $(AUTOML_STAMP)
	$(PY) -m devtools.step_rehearsal --automl-python $(AUTOML_VENV)/bin/python

lint: setup-python
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .venv-checkov .venv-mltable .venv-serving $(AUTOML_VENV) node_modules .pytest_cache .demo
