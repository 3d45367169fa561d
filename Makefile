# SparKV — C-only build (GNU make; no Swift needed).
#
#   make                        build/libsparkv.so (soname libsparkv.so.MAJOR, file libsparkv.so.MAJOR.MINOR.PATCH),
#                               build/libsparkv.a and build/sparkv.pc
#   make check                  all + check-symbols + check-header + test-c + example + test-python + check-install
#   make install PREFIX=/opt/x  header, libraries (with symlinks) and sparkv.pc; DESTDIR is honoured
#   make uninstall PREFIX=/opt/x
#   make clean
#
# Compilers: CC=cc (default), CC=gcc (OpenMP from libgomp) or CC=clang (OpenMP from the newest
# /usr/lib/llvm-N that has omp.h; override OMP_LLVM_INCLUDE / OMP_LLVM_LIBDIR for another place). Changing CC or the flags
# rebuilds everything. Every csrc/*/*.c is compiled: new kernel files need no change here.

.DEFAULT_GOAL := all
.DELETE_ON_ERROR:
.SUFFIXES:

PREFIX       ?= /usr/local
LIBDIR       ?= $(PREFIX)/lib
INCLUDEDIR   ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
DESTDIR      ?=
BUILD        ?= build
PYTHON       ?= python3
AR           ?= ar
INSTALL      ?= install
PKG_CONFIG   ?= pkg-config

HEADER := include/sparkv.h

# ---- version, read from the header ------------------------------------------------------------
version_field = $(shell sed -n 's/^[#][[:space:]]*define[[:space:]][[:space:]]*SPARKV_VERSION_$(1)[[:space:]][[:space:]]*\([0-9][0-9]*\).*/\1/p' $(HEADER))
VERSION_MAJOR := $(call version_field,MAJOR)
VERSION_MINOR := $(call version_field,MINOR)
VERSION_PATCH := $(call version_field,PATCH)
ifeq ($(strip $(VERSION_MAJOR)),)
$(error cannot read SPARKV_VERSION_MAJOR from $(HEADER))
endif
ifeq ($(strip $(VERSION_MINOR)),)
$(error cannot read SPARKV_VERSION_MINOR from $(HEADER))
endif
ifeq ($(strip $(VERSION_PATCH)),)
$(error cannot read SPARKV_VERSION_PATCH from $(HEADER))
endif
VERSION := $(VERSION_MAJOR).$(VERSION_MINOR).$(VERSION_PATCH)

SONAME     := libsparkv.so.$(VERSION_MAJOR)
LIB_REAL   := libsparkv.so.$(VERSION)
LIB_SHARED := $(BUILD)/libsparkv.so
LIB_STATIC := $(BUILD)/libsparkv.a
PC_FILE    := $(BUILD)/sparkv.pc
PC_UNINSTALLED := $(BUILD)/sparkv-uninstalled.pc

# ---- compiler and OpenMP ------------------------------------------------------------------------
CC_IS_CLANG := $(shell $(CC) --version 2>/dev/null | grep -qi clang && echo 1)
ifeq ($(origin CXX),default)
  ifeq ($(CC_IS_CLANG),1)
    CXX := $(if $(filter %clang,$(CC)),$(patsubst %clang,%clang++,$(CC)),clang++)
  else
    CXX := $(if $(filter %gcc,$(CC)),$(patsubst %gcc,%g++,$(CC)),c++)
  endif
endif

# The newest LLVM folder holding omp.h (Debian/Ubuntu libomp-dev); its lib/ holds libomp.so.
ifeq ($(origin OMP_LLVM_INCLUDE),undefined)
  OMP_LLVM_INCLUDE := $(shell for d in /usr/lib/llvm-*/lib/clang/*/include; do [ -e "$$d/omp.h" ] && echo "$$d"; done \
                        2>/dev/null | sort -V | tail -n 1)
endif
ifeq ($(origin OMP_LLVM_LIBDIR),undefined)
  OMP_LLVM_LIBDIR := $(abspath $(OMP_LLVM_INCLUDE)/../../..)
endif
ifeq ($(CC_IS_CLANG),1)
  OMP_CFLAGS  := -fopenmp -isystem $(OMP_LLVM_INCLUDE)
  OMP_LDFLAGS := -fopenmp -L$(OMP_LLVM_LIBDIR) -Wl,-rpath,$(OMP_LLVM_LIBDIR)
  OMP_PC_LIBS := -L$(OMP_LLVM_LIBDIR) -lomp
else
  OMP_CFLAGS  := -fopenmp
  OMP_LDFLAGS := -fopenmp
  OMP_PC_LIBS := -lgomp
endif

# Flags the library needs (do not override); CFLAGS / CPPFLAGS / LDFLAGS are the user's additions.
# -ffp-contract=off: no FMA contraction, so results do not depend on the compiler or the ISA (the
# library's kernels, the sanitizer build and the test's reference all round every operation).
FP_FLAGS   := -ffp-contract=off
# csrc/ by concern: platform (CPU probe, fp16, OpenMP), core (handle, policy, errors, planner),
# storage (the page format, its encoder, quantization, recovery), pipeline (prefill and append
# stages), attention (decode kernels). Every folder is on the include path.
CSRC_DIRS  := $(sort $(dir $(wildcard csrc/*/*.c csrc/*/*.h)))
CSRC_INC   := $(patsubst %/,-I%,$(CSRC_DIRS))
LIB_CFLAGS := -std=c11 -O3 -fPIC -fvisibility=hidden $(FP_FLAGS) -Iinclude $(CSRC_INC) $(OMP_CFLAGS)
WARNFLAGS  ?= -Wall -Wextra -Wno-unused-parameter
SAN_FLAGS  := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g -O1
SAN_ENV    := ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1

SRCS     := $(sort $(wildcard csrc/*/*.c))
OBJS     := $(patsubst csrc/%.c,$(BUILD)/obj/%.o,$(SRCS))
SAN_OBJS := $(patsubst csrc/%.c,$(BUILD)/san/%.o,$(SRCS))

.PHONY: all shared static pc install uninstall clean check check-symbols check-header check-install \
        test-c test-diff test-persist example test-python FORCE

all: shared static pc
shared: $(LIB_SHARED) $(BUILD)/$(SONAME)
static: $(LIB_STATIC)
pc: $(PC_FILE) $(PC_UNINSTALLED)

# Rebuild when the compiler or flags change, and rewrite sparkv.pc when the install paths change:
# each stamp file is rewritten only when its content differs.
COMPILE_ID = $(CC) | $(SRCS) | $(LIB_CFLAGS) | $(WARNFLAGS) | $(CPPFLAGS) | $(CFLAGS) | $(LDFLAGS) | $(OMP_LDFLAGS)
PATHS_ID   = $(PREFIX) | $(LIBDIR) | $(INCLUDEDIR) | $(OMP_PC_LIBS) | $(VERSION)
define update_stamp
	@mkdir -p $(dir $@)
	@echo '$($(1))' > $@.tmp
	@if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv -f $@.tmp $@; fi
endef
$(BUILD)/compile.stamp: FORCE
	$(call update_stamp,COMPILE_ID)
$(BUILD)/paths.stamp: FORCE
	$(call update_stamp,PATHS_ID)

$(BUILD)/obj/%.o: csrc/%.c $(BUILD)/compile.stamp
	@mkdir -p $(dir $@)
	$(CC) $(LIB_CFLAGS) $(WARNFLAGS) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

# The export list: only sparkv_* (hides linker-defined symbols such as _end that lld exports).
EXPORTS_MAP := $(BUILD)/sparkv.map
$(EXPORTS_MAP):
	@mkdir -p $(dir $@)
	@printf '%s\n' '{' '  global: sparkv_*;' '  local: *;' '};' > $@

$(BUILD)/$(LIB_REAL): $(OBJS) $(EXPORTS_MAP)
	$(CC) -shared $(LDFLAGS) -Wl,-soname,$(SONAME) -Wl,--no-undefined -Wl,--version-script,$(EXPORTS_MAP) \
	    -o $@ $(OBJS) $(OMP_LDFLAGS) -lm
$(BUILD)/$(SONAME): $(BUILD)/$(LIB_REAL)
	ln -sf $(LIB_REAL) $@
$(LIB_SHARED): $(BUILD)/$(SONAME)
	ln -sf $(SONAME) $@

$(LIB_STATIC): $(OBJS)
	@rm -f $@
	$(AR) rcs $@ $(OBJS)

# libdir / includedir are written relative to ${prefix} when they lie under it.
PC_LIBDIR     = $(patsubst $(PREFIX)/%,$${prefix}/%,$(LIBDIR))
PC_INCLUDEDIR = $(patsubst $(PREFIX)/%,$${prefix}/%,$(INCLUDEDIR))
$(PC_FILE): sparkv.pc.in $(BUILD)/paths.stamp
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(PC_LIBDIR)|g' -e 's|@INCLUDEDIR@|$(PC_INCLUDEDIR)|g' \
	    -e 's|@VERSION@|$(VERSION)|g' -e 's|@LIBS_PRIVATE@|$(OMP_PC_LIBS) -lm|g' $< > $@
# The same for the build folder, used before `make install`: pkg-config prefers NAME-uninstalled.pc,
# so `PKG_CONFIG_PATH=$(BUILD) pkg-config --cflags --libs sparkv` points at this checkout.
$(PC_UNINSTALLED): sparkv.pc.in $(BUILD)/paths.stamp
	sed -e 's|@PREFIX@|$(abspath .)|g' -e 's|@LIBDIR@|$(abspath $(BUILD))|g' -e 's|@INCLUDEDIR@|$(abspath include)|g' \
	    -e 's|@VERSION@|$(VERSION)|g' -e 's|@LIBS_PRIVATE@|$(OMP_PC_LIBS) -lm|g' $< > $@

-include $(OBJS:.o=.d) $(SAN_OBJS:.o=.d)

# ---- install --------------------------------------------------------------------------------------
install: all
	$(INSTALL) -d $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PKGCONFIGDIR)
	$(INSTALL) -m 644 $(HEADER) $(DESTDIR)$(INCLUDEDIR)/sparkv.h
	$(INSTALL) -m 755 $(BUILD)/$(LIB_REAL) $(DESTDIR)$(LIBDIR)/$(LIB_REAL)
	ln -sf $(LIB_REAL) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libsparkv.so
	$(INSTALL) -m 644 $(LIB_STATIC) $(DESTDIR)$(LIBDIR)/libsparkv.a
	$(INSTALL) -m 644 $(PC_FILE) $(DESTDIR)$(PKGCONFIGDIR)/sparkv.pc

uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/sparkv.h $(DESTDIR)$(LIBDIR)/$(LIB_REAL) $(DESTDIR)$(LIBDIR)/$(SONAME) \
	      $(DESTDIR)$(LIBDIR)/libsparkv.so $(DESTDIR)$(LIBDIR)/libsparkv.a $(DESTDIR)$(PKGCONFIGDIR)/sparkv.pc

clean:
	rm -rf $(BUILD)

# ---- checks ---------------------------------------------------------------------------------------
check: all check-symbols check-header test-c example test-python check-install

# The shared library must export exactly the functions the header declares, all named sparkv_*.
check-symbols: $(LIB_SHARED)
	@nm -D --defined-only $(LIB_SHARED) | awk '{print $$NF}' | sort -u > $(BUILD)/exported.txt
	@sed -n 's/^SPARKV_API.*[ *]\(sparkv_[a-z0-9_]*\)(.*/\1/p' $(HEADER) | sort -u > $(BUILD)/declared.txt
	@if grep -v '^sparkv_' $(BUILD)/exported.txt; then \
	    echo "check-symbols: FAILED: the symbols above are exported but not named sparkv_*"; exit 1; fi
	@if ! cmp -s $(BUILD)/exported.txt $(BUILD)/declared.txt; then \
	    echo "check-symbols: FAILED: exported (<) and declared in $(HEADER) (>) differ:"; \
	    diff $(BUILD)/exported.txt $(BUILD)/declared.txt; exit 1; fi
	@echo "check-symbols: OK ($$(wc -l < $(BUILD)/exported.txt) symbols, all sparkv_*, all declared)"

# The header alone must compile cleanly as C99, C11 and C++11.
HDR_TU := $(BUILD)/header_check.c
$(HDR_TU): $(HEADER)
	@mkdir -p $(dir $@)
	@printf '%s\n' '#include "sparkv.h"' '#include "sparkv.h" /* include guard */' \
	    'int main(void) {' \
	    '    sparkv_shape s = sparkv_default_shape();' \
	    '    sparkv_policy p = sparkv_default_policy();' \
	    '    sparkv_memory m = {sizeof(sparkv_memory), 0, 0, 0, 0, 0, 0, 0, 0};' \
	    '    sparkv_cache *c = 0;' \
	    '    sparkv_kernel k = SPARKV_KERNEL_AUTO;' \
	    '    sparkv_status st = SPARKV_OK;' \
	    '    (void)s; (void)p; (void)m; (void)c; (void)k; (void)st;' \
	    '    return sparkv_version() == SPARKV_VERSION_NUMBER && SPARKV_ALL_LAYERS != 0u ? 0 : 1;' \
	    '}' > $@
check-header: $(HDR_TU)
	$(CC) -std=c99 -Wall -Wextra -pedantic -Werror -Wstrict-prototypes -Iinclude -fsyntax-only $(HDR_TU)
	$(CC) -std=c11 -Wall -Wextra -pedantic -Werror -Wstrict-prototypes -Iinclude -fsyntax-only $(HDR_TU)
	$(CXX) -x c++ -std=c++11 -Wall -Wextra -pedantic -Werror -Iinclude -fsyntax-only $(HDR_TU)
	@echo "check-header: OK (C99, C11, C++11)"

# API test: the test and every csrc file built with ASan + UBSan, no shared library involved.
$(BUILD)/san/%.o: csrc/%.c $(BUILD)/compile.stamp
	@mkdir -p $(dir $@)
	$(CC) -std=c11 $(SAN_FLAGS) $(FP_FLAGS) -Iinclude $(CSRC_INC) $(OMP_CFLAGS) $(WARNFLAGS) $(CPPFLAGS) -MMD -MP -c $< -o $@
$(BUILD)/test_api: Tests/C/test_api.c Tests/C/reference.c $(wildcard Tests/C/*.h) $(HEADER) $(SAN_OBJS)
	$(CC) -std=c11 $(SAN_FLAGS) $(FP_FLAGS) -Iinclude -ITests/C $(WARNFLAGS) -o $@ Tests/C/test_api.c Tests/C/reference.c \
	    $(SAN_OBJS) $(OMP_LDFLAGS) -lm
# Differential test: random configurations, every kernel against the float64 reference (reference.c).
# `make test-diff DIFF_ARGS="n_configs seed"` to choose the run. OMP_WAIT_POLICY=passive: idle OpenMP
# threads of its 2-thread caches would otherwise spin and halve the run's speed on a 2-core machine.
DIFF_ENV := OMP_WAIT_POLICY=passive $(SAN_ENV)
$(BUILD)/test_differential: Tests/C/test_differential.c Tests/C/reference.c $(wildcard Tests/C/*.h) $(HEADER) $(SAN_OBJS)
	$(CC) -std=c11 $(SAN_FLAGS) $(FP_FLAGS) -Iinclude -ITests/C $(OMP_CFLAGS) $(WARNFLAGS) -o $@ Tests/C/test_differential.c \
	    Tests/C/reference.c $(SAN_OBJS) $(OMP_LDFLAGS) -lm
test-diff: $(BUILD)/test_differential
	$(DIFF_ENV) $(BUILD)/test_differential $(DIFF_ARGS)
# Regression tests of the audit's defects (issue 11): each failed before its fix.
$(BUILD)/test_robustness: Tests/C/test_robustness.c Tests/C/reference.c $(wildcard Tests/C/*.h) $(HEADER) $(SAN_OBJS)
	$(CC) -std=c11 $(SAN_FLAGS) $(FP_FLAGS) -Iinclude -ITests/C $(OMP_CFLAGS) $(WARNFLAGS) -o $@ Tests/C/test_robustness.c \
	    Tests/C/reference.c $(SAN_OBJS) $(OMP_LDFLAGS) -lm -lpthread
# Decode-time compression: aged pages against prefill's encoding, attention over the stored tokens.
$(BUILD)/test_decode_compression: Tests/C/test_decode_compression.c Tests/C/reference.c $(wildcard Tests/C/*.h) $(HEADER) $(SAN_OBJS)
	$(CC) -std=c11 $(SAN_FLAGS) $(FP_FLAGS) -Iinclude -ITests/C $(OMP_CFLAGS) $(WARNFLAGS) -o $@ \
	    Tests/C/test_decode_compression.c Tests/C/reference.c $(SAN_OBJS) $(OMP_LDFLAGS) -lm -lpthread
# Prefill kernels (saliency, selection, split) per ISA against naive versions and the reference.
$(BUILD)/test_prefill_kernels: Tests/C/test_prefill_kernels.c Tests/C/reference.c $(wildcard Tests/C/*.h) $(HEADER) $(SAN_OBJS)
	$(CC) -std=c11 $(SAN_FLAGS) $(FP_FLAGS) -Iinclude $(CSRC_INC) -ITests/C $(OMP_CFLAGS) $(WARNFLAGS) -o $@ \
	    Tests/C/test_prefill_kernels.c Tests/C/reference.c $(SAN_OBJS) $(OMP_LDFLAGS) -lm
# The differential test again, linked against the optimized objects the library ships: the
# instrumented build above does not unroll the SIMD kernels' loops (SV_UNROLLED), this one does.
$(BUILD)/test_differential_opt: Tests/C/test_differential.c Tests/C/reference.c $(wildcard Tests/C/*.h) $(HEADER) $(OBJS)
	$(CC) -std=c11 -O2 $(FP_FLAGS) -Iinclude -ITests/C $(OMP_CFLAGS) $(WARNFLAGS) -o $@ Tests/C/test_differential.c \
	    Tests/C/reference.c $(OBJS) $(OMP_LDFLAGS) -lm
# Saved caches: round trips of every storage mode, hostile files, truncation and bit-flip sweeps.
$(BUILD)/test_persist: Tests/C/test_persist.c Tests/C/reference.c $(wildcard Tests/C/*.h) $(HEADER) $(SAN_OBJS)
	$(CC) -std=c11 $(SAN_FLAGS) $(FP_FLAGS) -Iinclude -ITests/C $(OMP_CFLAGS) $(WARNFLAGS) -o $@ Tests/C/test_persist.c \
	    Tests/C/reference.c $(SAN_OBJS) $(OMP_LDFLAGS) -lm
test-persist: $(BUILD)/test_persist
	$(DIFF_ENV) $(BUILD)/test_persist
test-c: $(BUILD)/test_api $(BUILD)/test_robustness $(BUILD)/test_differential $(BUILD)/test_prefill_kernels \
        $(BUILD)/test_differential_opt $(BUILD)/test_decode_compression $(BUILD)/test_persist
	$(SAN_ENV) $(BUILD)/test_api
	$(DIFF_ENV) $(BUILD)/test_persist
	$(SAN_ENV) $(BUILD)/test_robustness
	$(SAN_ENV) $(BUILD)/test_decode_compression
	$(DIFF_ENV) $(BUILD)/test_prefill_kernels
	$(DIFF_ENV) $(BUILD)/test_differential $(DIFF_ARGS)
	OMP_WAIT_POLICY=passive $(BUILD)/test_differential_opt 300 20261130

# The example, linked against the shared library.
$(BUILD)/examples/decode: examples/c/decode.c $(HEADER) $(LIB_SHARED)
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -O2 -Wall -Wextra -pedantic -Werror -Iinclude -o $@ $< -L$(BUILD) -lsparkv \
	    -Wl,-rpath,$(abspath $(BUILD)) -lm
example: $(BUILD)/examples/decode
	$(BUILD)/examples/decode

test-python: $(LIB_SHARED)
	SPARKV_LIBRARY=$(abspath $(LIB_SHARED)) PYTHONPATH=$(abspath python)$${PYTHONPATH:+:$$PYTHONPATH} \
	    $(PYTHON) -m pytest -q python/tests

# Install into a staging directory, then build the example from the installed files through
# pkg-config, once against the shared library and once statically.
STAGE := $(abspath $(BUILD))/stage
STAGE_PC := PKG_CONFIG_PATH=$(STAGE)$(PKGCONFIGDIR) PKG_CONFIG_SYSROOT_DIR=$(STAGE) $(PKG_CONFIG)
check-install: all
	test "$$(PKG_CONFIG_PATH=$(abspath $(BUILD)) $(PKG_CONFIG) --variable=includedir sparkv)" = "$(abspath include)"
	$(CC) -std=c11 -O2 -o $(BUILD)/uninstalled-decode examples/c/decode.c \
	    $$(PKG_CONFIG_PATH=$(abspath $(BUILD)) $(PKG_CONFIG) --cflags --libs sparkv) -lm
	LD_LIBRARY_PATH=$(abspath $(BUILD)) $(BUILD)/uninstalled-decode > /dev/null
	@rm -rf $(STAGE)
	$(MAKE) --no-print-directory install DESTDIR=$(STAGE)
	test -L $(STAGE)$(LIBDIR)/libsparkv.so && test -L $(STAGE)$(LIBDIR)/$(SONAME) && test -f $(STAGE)$(LIBDIR)/$(LIB_REAL)
	test "$$($(STAGE_PC) --modversion sparkv)" = "$(VERSION)"
	$(CC) -std=c11 -O2 -o $(BUILD)/stage-decode-shared examples/c/decode.c $$($(STAGE_PC) --cflags --libs sparkv) -lm
	LD_LIBRARY_PATH=$(STAGE)$(LIBDIR) $(BUILD)/stage-decode-shared > /dev/null
	$(CC) -std=c11 -O2 -o $(BUILD)/stage-decode-static examples/c/decode.c $$($(STAGE_PC) --cflags sparkv) \
	    $$($(STAGE_PC) --libs-only-L sparkv) -Wl,-Bstatic -lsparkv -Wl,-Bdynamic \
	    $$($(STAGE_PC) --static --libs-only-l sparkv | sed 's/-lsparkv//') $(OMP_LDFLAGS)
	! ldd $(BUILD)/stage-decode-static | grep -q libsparkv
	$(BUILD)/stage-decode-static > /dev/null
	$(MAKE) --no-print-directory uninstall DESTDIR=$(STAGE)
	test ! -e $(STAGE)$(LIBDIR)/libsparkv.so && test ! -e $(STAGE)$(INCLUDEDIR)/sparkv.h
	@rm -rf $(STAGE)
	@echo "check-install: OK (pkg-config, shared and static link, uninstall)"

# ---- fuzzing and ThreadSanitizer (not part of `check`) ---------------------------------------------
#   make fuzz-api [FUZZ_SECONDS=60] [FUZZ_SEED=0]
#                                    libFuzzer target for C API call sequences (Tests/Fuzz/api/fuzz_api.c)
#                                    with ASan + UBSan: replays Tests/Fuzz/api/corpus (a failure stops
#                                    here), then fuzzes for FUZZ_SECONDS. New inputs go to
#                                    $(BUILD)/fuzz/corpus-api, crash reproducers to $(BUILD)/fuzz/.
#   make fuzz-persist [FUZZ_SECONDS=60] [FUZZ_SEED=0]
#                                    libFuzzer target for the saved-cache loader (Tests/Fuzz/persist), the same way.
#   make test-tsan                   Tests/C/test_threads.c and every csrc file under ThreadSanitizer.
# Both need a clang with compiler-rt's fuzzer/tsan runtimes (SAN_CC; the Swift toolchain's by default).
SAN_CC       ?= /opt/swift/usr/bin/clang
FUZZ_SECONDS ?= 60
FUZZ_DIR     := $(BUILD)/fuzz
FUZZ_OBJS    := $(patsubst csrc/%.c,$(FUZZ_DIR)/obj/%.o,$(SRCS))
FUZZ_CFLAGS  := -std=c11 -g -O1 -fno-omit-frame-pointer -fno-sanitize-recover=all $(FP_FLAGS) -Iinclude
FUZZ_SEED    ?= 0
FUZZ_RUN     := ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
                LSAN_OPTIONS=suppressions=$(abspath Tests/Fuzz/api/lsan.supp):print_suppressions=0
# The library objects get coverage but no libFuzzer main; OpenMP from LLVM 14's libomp, as for CC=clang.
$(FUZZ_DIR)/obj/%.o: csrc/%.c $(wildcard csrc/*/*.h) $(HEADER)
	@mkdir -p $(dir $@)
	$(SAN_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link,address,undefined -fopenmp -isystem $(OMP_LLVM_INCLUDE) \
	    $(CSRC_INC) -c $< -o $@
$(FUZZ_DIR)/fuzz_api: Tests/Fuzz/api/fuzz_api.c $(HEADER) $(FUZZ_OBJS)
	$(SAN_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer,address,undefined -Wall -Wextra -fuse-ld=lld -o $@ $< $(FUZZ_OBJS) \
	    -fopenmp -L$(OMP_LLVM_LIBDIR) -Wl,-rpath,$(OMP_LLVM_LIBDIR) -lm
fuzz-api: $(FUZZ_DIR)/fuzz_api
	@mkdir -p $(FUZZ_DIR)/corpus-api
	$(FUZZ_RUN) $(FUZZ_DIR)/fuzz_api -runs=0 Tests/Fuzz/api/corpus
	$(FUZZ_RUN) $(FUZZ_DIR)/fuzz_api -max_total_time=$(FUZZ_SECONDS) -seed=$(FUZZ_SEED) -timeout=30 -rss_limit_mb=2048 -max_len=1024 -print_final_stats=1 \
	    -artifact_prefix=$(FUZZ_DIR)/ $(FUZZ_DIR)/corpus-api Tests/Fuzz/api/corpus

# make fuzz-persist [FUZZ_SECONDS=60] [FUZZ_SEED=0]: the saved-cache loader (Tests/Fuzz/persist/fuzz_persist.c)
# under ASan + UBSan. Its library objects are built apart, with -DSPARKV_FUZZ_SKIP_CHECKSUMS: the loader
# then ignores section checksums so mutations reach the checks behind them (only in this build).
FUZZ_PERSIST_OBJS := $(patsubst csrc/%.c,$(FUZZ_DIR)/obj-persist/%.o,$(SRCS))
$(FUZZ_DIR)/obj-persist/%.o: csrc/%.c $(wildcard csrc/*/*.h) $(HEADER)
	@mkdir -p $(dir $@)
	$(SAN_CC) $(FUZZ_CFLAGS) -DSPARKV_FUZZ_SKIP_CHECKSUMS -fsanitize=fuzzer-no-link,address,undefined -fopenmp \
	    -isystem $(OMP_LLVM_INCLUDE) $(CSRC_INC) -c $< -o $@
$(FUZZ_DIR)/fuzz_persist: Tests/Fuzz/persist/fuzz_persist.c $(HEADER) $(FUZZ_PERSIST_OBJS)
	$(SAN_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer,address,undefined -Wall -Wextra -fuse-ld=lld -o $@ $< \
	    $(FUZZ_PERSIST_OBJS) -fopenmp -L$(OMP_LLVM_LIBDIR) -Wl,-rpath,$(OMP_LLVM_LIBDIR) -lm
fuzz-persist: $(FUZZ_DIR)/fuzz_persist
	@mkdir -p $(FUZZ_DIR)/corpus-persist
	$(FUZZ_RUN) $(FUZZ_DIR)/fuzz_persist -runs=0 Tests/Fuzz/persist/corpus
	$(FUZZ_RUN) $(FUZZ_DIR)/fuzz_persist -max_total_time=$(FUZZ_SECONDS) -seed=$(FUZZ_SEED) -timeout=30 -rss_limit_mb=2048 \
	    -max_len=16384 -print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/persist- $(FUZZ_DIR)/corpus-persist \
	    Tests/Fuzz/persist/corpus
.PHONY: fuzz-persist

# TSan: the library is built without OpenMP (its pragmas are ignored, every call runs on the calling
# thread): libomp is not TSan-instrumented and its internal synchronisation would be reported as races.
TSAN_DIR    := $(BUILD)/tsan
TSAN_OBJS   := $(patsubst csrc/%.c,$(TSAN_DIR)/obj/%.o,$(SRCS))
TSAN_CFLAGS := -std=c11 -g -O1 -fno-omit-frame-pointer -fsanitize=thread $(FP_FLAGS) -Iinclude
# The Swift toolchain's TSan runtime also intercepts libdispatch: link the toolchain's libdispatch.
TSAN_DISPATCH ?= $(wildcard $(dir $(SAN_CC))../lib/swift/linux/libdispatch.so)
TSAN_DISPATCH_DIR = $(dir $(TSAN_DISPATCH))
TSAN_LIBS     = $(if $(TSAN_DISPATCH),-L$(TSAN_DISPATCH_DIR) -Wl$(TSAN_COMMA)-rpath$(TSAN_COMMA)$(TSAN_DISPATCH_DIR) -ldispatch -lBlocksRuntime)
TSAN_COMMA   := ,
$(TSAN_DIR)/obj/%.o: csrc/%.c $(wildcard csrc/*/*.h) $(HEADER)
	@mkdir -p $(dir $@)
	$(SAN_CC) $(TSAN_CFLAGS) -Wno-unknown-pragmas $(CSRC_INC) -c $< -o $@
$(TSAN_DIR)/test_threads: Tests/C/test_threads.c $(HEADER) $(TSAN_OBJS)
	$(SAN_CC) $(TSAN_CFLAGS) -Wall -Wextra -pthread -fuse-ld=lld -o $@ $< $(TSAN_OBJS) -lm $(TSAN_LIBS)
test-tsan: $(TSAN_DIR)/test_threads
	TSAN_OPTIONS=halt_on_error=1:exitcode=66 $(TSAN_DIR)/test_threads
.PHONY: fuzz-api test-tsan

FORCE:
