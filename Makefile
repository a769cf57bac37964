# Two commands for a fresh machine: `make demo` (set up + run the pipeline on the bundled
# examples) and `make test` (set up + the test suite). Everything lives in .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU wheel of torch lies on disk on our machines and installs in seconds; elsewhere
# pip resolves the package's torch range normally.
TORCH_PIN ?= torch==2.13.0
PROFILE ?= profiles/local

.PHONY: setup demo lint test test-fast bench bench-quality bench-quality-bounds clean

$(BIN)/sign-vq: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_PIN)" || $(BIN)/pip install -q "torch>=2.2,<3"
	$(BIN)/pip install -q -e ".[all,test]"
	touch $@

setup: $(BIN)/sign-vq

demo: setup
	$(BIN)/snakemake --profile $(PROFILE)
	$(BIN)/snakemake --profile $(PROFILE) --report results/report.zip

lint: setup  # ruff, configured in pyproject.toml ([tool.ruff])
	$(BIN)/ruff check

# Three pytest-xdist workers: most slow tests wait on subprocesses (pip, Snakemake, Slurm, DDP), so three keep 2 cores
# busy; a file's tests stay on one worker (its module fixtures are built once; the two local-Slurm runs take turns),
# the files with Slurm tests go first, then those with the most slow tests (tests/conftest.py). TEST_WORKERS=0: one
# process.
TEST_WORKERS ?= 3

test: setup lint
	$(BIN)/python -m pytest -x -q -rs --durations=15 -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test-fast: setup
	$(BIN)/python -m pytest -x -q -rs -m "not slow" -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

bench: setup
	$(BIN)/python -m benchmarks

bench-quality: setup  # QUALITY_ARGS=--quick for the small run (~10 min); see python -m benchmarks.quality --help
	$(BIN)/python -m benchmarks.quality $(QUALITY_ARGS)

bench-quality-bounds: setup
	$(BIN)/python -m benchmarks.quality_bounds

.PHONY: bench-curve
CURVE_ARGS ?= --quick
# The default model at 1k/2k/4k/8k steps of one run (quick size, ~9 min; docs/quality.md). CURVE_ARGS="--quick
# --short-runs": also a run ending at each (~15 min); CURVE_ARGS= the full size (~24 min).
bench-curve: setup
	$(BIN)/python -m benchmarks.learning_curve $(CURVE_ARGS)

.PHONY: bench-scale
bench-scale: setup  # SCALE_ARGS="--sizes 10000,100000" for a shorter run
	$(BIN)/python -m benchmarks.bench_scale $(SCALE_ARGS)

.PHONY: bench-workflow
bench-workflow: setup  # WORKFLOW_ARGS="--sizes 20000,100000 --no-run" for a shorter run
	$(BIN)/python -m benchmarks.bench_workflow $(WORKFLOW_ARGS)

.PHONY: bench-gpu
bench-gpu: setup  # the GPU check (docs/gpu.md); GPU_ARGS="--device cpu --quick" for the 1-minute CPU variant
	$(BIN)/python -m benchmarks.gpu --output results/gpu.json $(GPU_ARGS)

clean:
	rm -rf results .snakemake
