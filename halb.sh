#!/usr/bin/env bash
# One entry point for people and CI (run as root on Debian 12):
#   ./halb.sh demo    install, build, and run the demo (see README)
#   ./halb.sh test    install, build twice (Release; Debug+ASan/UBSan), run every test
#   ./halb.sh build   install and build the Release tree only
#   ./halb.sh bench   install, build, and run the benchmarks against HAProxy and nginx
#   ./halb.sh package install, build the Release binary and the Debian package (build/release)
set -euo pipefail
cd "$(dirname "$0")"
root=$(pwd)
jobs=$(nproc)

log() { printf '\n==> %s\n' "$*"; }

install_deps() {
  if [[ ${HALB_SKIP_INSTALL:-0} != 1 ]]; then
    log "installing dependencies"
    ./scripts/install-deps.sh
  fi
}

# configure DIR [cmake args...]; then build DIR [targets...]
configure() {
  local dir=$1
  shift
  cmake -S "$root" -B "$dir" -G Ninja -Wno-dev "$@" >/dev/null
}
build() {
  local dir=$1
  shift
  cmake --build "$dir" -j "$jobs" ${1:+--target "$@"}
}

build_release() {
  log "building Release (build/release)"
  configure build/release -DCMAKE_BUILD_TYPE=Release
  build build/release
}

cmd_test() {
  install_deps
  local failed=0

  if command -v clang++ >/dev/null; then
    log "fuzzing: libFuzzer targets with clang, bounded (build/fuzz)"
    configure build/fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
      -DHALB_FUZZ=ON -DHALB_BUILD_TESTS=ON -DHALB_BUILD_BENCH=OFF
    if build build/fuzz fuzzers; then
      ./scripts/fuzz.sh build/fuzz "${HALB_FUZZ_SECONDS:-20}" || failed=1
    else
      failed=1
    fi
  fi

  log "Debug + AddressSanitizer + UndefinedBehaviorSanitizer: unit tests (build/asan)"
  configure build/asan -DCMAKE_BUILD_TYPE=Debug -DHALB_SANITIZE=ON -DHALB_BUILD_BENCH=OFF
  if build build/asan; then
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      ctest --test-dir build/asan -L unit -j "$jobs" --output-on-failure --timeout 300 || failed=1
  else
    failed=1
  fi

  log "Release: every test, unit and network-namespace (build/release)"
  if ! build_release; then
    echo "halb.sh test: Release build failed"
    return 1
  fi
  [[ $failed -eq 0 ]] || echo "halb.sh test: earlier stages FAILED (see above); running the Release suite anyway"
  local select=()
  if [[ $(id -u) -ne 0 ]]; then
    echo "not root: skipping the network-namespace tests (label netns)" >&2
    select=(-LE netns)
  fi
  # Namespace tests are RUN_SERIAL, so one invocation runs unit tests in parallel and the
  # namespace scenarios one at a time; its summary line ends the run.
  ctest --test-dir build/release -j "$jobs" --output-on-failure --timeout 900 "${select[@]}" || failed=1
  return $failed
}

cmd_demo() {
  install_deps
  build_release
  ./scripts/demo.sh build/release/app/halb
}

cmd_package() {
  install_deps
  log "building the halb binary (build/release)"
  configure build/release -DCMAKE_BUILD_TYPE=Release
  build build/release halb
  log "packaging: cpack -G DEB (cmake/HalbPackage.cmake)"
  (cd build/release && cpack -G DEB)
  ls -l build/release/halb_*.deb
}

cmd_bench() {
  install_deps
  build_release
  ./bench/run.sh build/release "$@"
}

case ${1:-} in
  test) cmd_test ;;
  demo) cmd_demo ;;
  build) install_deps && build_release ;;
  bench) shift; cmd_bench "$@" ;;
  package) cmd_package ;;
  *)
    sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
