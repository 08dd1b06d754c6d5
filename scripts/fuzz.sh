#!/usr/bin/env bash
# make fuzz — builds the libFuzzer targets (clang, AddressSanitizer + UndefinedBehaviorSanitizer)
# in build-fuzz/, writes their seed corpora, runs every target for FUZZ_SECONDS (default 60),
# FUZZ_JOBS at a time (default: the number of cores), and prints a table of executions, coverage
# and findings. Findings are minimised and copied to tests/data/fuzz-regressions/<target>/, where
# `make test` replays them (tests/test_fuzz_regressions.cpp).
#
#   FUZZ_SECONDS=600 make fuzz            longer runs
#   FUZZ_TARGETS="pickle npy" make fuzz   some targets only
#   FUZZ_WORKERS=4 make fuzz              4 processes per target sharing one corpus (many-core hosts)
#   FUZZ_PREBUILT=1 scripts/fuzz.sh       run binaries (and seeds) already in $FUZZ_BUILD, e.g.
#                                         copied to a bigger machine; no compiler needed there
# The corpora grow across runs (build-fuzz/corpus/<target>); per-target logs are in build-fuzz/logs.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${FUZZ_SECONDS:-60}
JOBS=${FUZZ_JOBS:-$(nproc)}
WORKERS=${FUZZ_WORKERS:-1}
BUILD=${FUZZ_BUILD:-build-fuzz}
ALL="pickle torch_zip torch_legacy safetensors npy npz npz_rows jsonl_tokens event_file png jpeg idx idx_gz rartok config metrics serve_request roundtrip"
TARGETS=${FUZZ_TARGETS:-$ALL}

if [ -z "${FUZZ_PREBUILT:-}" ]; then
  if ! command -v clang++ >/dev/null || ! dpkg-query -W libclang-rt-14-dev >/dev/null 2>&1; then
    echo "[fuzz] apt-get install clang libclang-rt-14-dev"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends clang libclang-rt-14-dev >/dev/null
  fi
  if [ ! -f "$BUILD/build.ninja" ]; then
    CC=clang CXX=clang++ cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRAR_FUZZ=ON -DRAR_TESTS=OFF
  fi
  cmake --build "$BUILD" -j "$(nproc)"
fi

export TMPDIR=${TMPDIR:-$([ -d /dev/shm ] && echo /dev/shm || echo /tmp)}
# Leaks matter (a reader run millions of times must not grow); LibTorch's own one-time
# allocations at exit are not ours, hence the suppressions file.
export ASAN_OPTIONS=${ASAN_OPTIONS:-"detect_leaks=1:allocator_may_return_null=1"}
export LSAN_OPTIONS=${LSAN_OPTIONS:-"suppressions=$PWD/tests/fuzz/lsan.supp:print_suppressions=0"}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-"print_stacktrace=1:halt_on_error=1"}
export OMP_NUM_THREADS=1

[ -n "${FUZZ_PREBUILT:-}" ] && [ -d "$BUILD/seeds" ] || "$BUILD/fuzz_seeds" "$BUILD/seeds" >/dev/null
rm -rf "$BUILD/artifacts" "$BUILD/logs"  # this run's findings and logs only (earlier findings are in tests/data/fuzz-regressions)
mkdir -p "$BUILD/logs" "$BUILD/artifacts"

run_one() {  # one process of a target: run_one TARGET WORKER
  local t=$1 w=$2
  mkdir -p "$BUILD/corpus/$t" "$BUILD/artifacts/$t"
  # -rss_limit_mb / -malloc_limit_mb: memory far beyond the input is a finding; -timeout: a hang is one.
  # Workers of one target share its corpus folder (libFuzzer reloads it every second).
  "$BUILD/fuzz_$t" "$BUILD/corpus/$t" "$BUILD/seeds/$t" -max_total_time="$SECONDS_EACH" -max_len=16384 \
    -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 -print_final_stats=1 -close_fd_mask=1 \
    -seed=$((w + 1))$RANDOM -artifact_prefix="$BUILD/artifacts/$t/" >"$BUILD/logs/$t.$w.log" 2>&1 || true
}
export -f run_one
export BUILD SECONDS_EACH
echo "fuzzing ${TARGETS// /, } for ${SECONDS_EACH}s each, $WORKERS process(es) per target, $JOBS at a time"
for t in $TARGETS; do for w in $(seq 1 "$WORKERS"); do echo "$t $w"; done; done |
  xargs -P "$JOBS" -L1 bash -c 'run_one $0 $1'

# Findings: minimise each and keep it as a regression file.
found=0
for t in $TARGETS; do
  for a in "$BUILD/artifacts/$t"/*; do
    [ -f "$a" ] || continue
    case "$(basename "$a")" in minimized-*) continue ;; esac
    found=$((found + 1))
    min="$BUILD/artifacts/$t/minimized-$(basename "$a")"
    "$BUILD/fuzz_$t" -minimize_crash=1 -runs=5000 -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
      -exact_artifact_path="$min" "$a" >/dev/null 2>&1 || true
    [ -s "$min" ] || cp "$a" "$min"
    mkdir -p "tests/data/fuzz-regressions/$t"
    cp "$min" "tests/data/fuzz-regressions/$t/$(basename "$a")"
    echo "finding: $t $(basename "$a") -> tests/data/fuzz-regressions/$t/"
  done
done

printf '\n%-13s %12s %8s %8s %8s %8s %9s  %s\n' target executions exec/s CPU-min edges peak-MB corpus findings
for t in $TARGETS; do
  # Sums over the target's workers: executions, CPU time; the maximum of coverage and RSS.
  execs=0 rate=0 cov=0 rss=0 secs=0
  for log in "$BUILD/logs/$t".*.log; do
    e=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo 0)
    r=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo 0)
    m=$(grep -o 'stat::peak_rss_mb: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo 0)
    c=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo 0)
    execs=$((execs + ${e:-0})); rate=$((rate + ${r:-0}))
    [ "${r:-0}" -gt 0 ] && secs=$((secs + ${e:-0} / ${r:-1}))
    [ "${c:-0}" -gt "$cov" ] && cov=$c
    [ "${m:-0}" -gt "$rss" ] && rss=$m
  done
  corpus=$(ls "$BUILD/corpus/$t" | wc -l)
  n=$(ls "$BUILD/artifacts/$t" 2>/dev/null | grep -vc '^minimized-' || true)
  printf '%-13s %12s %8s %8s %8s %8s %9s  %s\n' "$t" "$execs" "$rate" "$((secs / 60))" "$cov" "$rss" "$corpus" "$n"
done
[ "$found" -eq 0 ] && echo "no findings" || echo "$found findings copied to tests/data/fuzz-regressions/ (see $BUILD/logs)"
