#!/usr/bin/env bash
# ci/windows.sh: clippy and the tests of coring for Windows (x86_64-pc-windows-gnu),
# cross-built with mingw-w64 and run under Wine. Called by .ci/run; runs on its own too.
#
# Made for Debian 12 (Wine 8.0, mingw-w64 from Debian's packages). Every setup stage is
# idempotent and skips itself when its work is done, so on a prepared machine the setup
# takes about a second; creating the Wine prefix the first time takes 10-15 s more.
#
# Stages (each is timed, and each command is bounded by `timeout`):
#   1. packages   apt-get install gcc-mingw-w64-x86-64 wine wine64, if any is missing
#   2. rust       rustup target add x86_64-pc-windows-gnu (and clippy), if missing
#   3. prefix     create the Wine prefix with wineboot, if missing
#   4. shim       build ci/bcryptprimitives.c into the prefix's system32 when the installed
#                 Wine lacks bcryptprimitives.dll (Wine < 8.13; Rust >= 1.78's std imports
#                 its ProcessPrng, see that file)
#   5. clippy     cargo clippy -p coring --all-targets --target ... -- -D warnings, and
#                 cargo doc -p coring --no-deps --target ... (RUSTDOCFLAGS=-D warnings)
#   6. build      cargo test --no-run (compile errors are reported apart from test failures)
#   7. wineserver start a persistent wineserver with its output detached (see there)
#   8. tests      cargo test --target x86_64-pc-windows-gnu -p coring $WIN_TEST_ARGS,
#                 with wine as the runner
#
# Environment:
#   WIN_TEST_ARGS     extra arguments for both cargo test calls, word-split (default: none),
#                     e.g. WIN_TEST_ARGS="--test net -- --test-threads=1"
#   WIN_PACKAGE       the package to lint and test (default: coring)
#   WIN_PROJECT_DIR   the cargo project to run in (default: this repository's root)
#   WINEPREFIX        the Wine prefix (default: $HOME/.cache/wine-ci)
#   SKIP_CLIPPY=1     skip stage 5
#   WIN_TEST_TIMEOUT  seconds the test run may take (default: 900); WIN_BUILD_TIMEOUT the
#                     clippy and build stages (default: 1800 each); WIN_SETUP_TIMEOUT
#                     each setup command (default: 900)
set -euo pipefail

WIN_TARGET=x86_64-pc-windows-gnu
CI_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROJECT_DIR=${WIN_PROJECT_DIR:-$CI_DIR/..}
WIN_PACKAGE=${WIN_PACKAGE:-coring}
WIN_TEST_ARGS=${WIN_TEST_ARGS:-}
WIN_TEST_TIMEOUT=${WIN_TEST_TIMEOUT:-900}
WIN_BUILD_TIMEOUT=${WIN_BUILD_TIMEOUT:-1800}
WIN_SETUP_TIMEOUT=${WIN_SETUP_TIMEOUT:-900}

export WINEPREFIX=${WINEPREFIX:-${HOME:-/root}/.cache/wine-ci}
export WINEDEBUG=-all                   # also silences Debian's "wine32 is missing" hint
export WINEDLLOVERRIDES="mscoree,mshtml=" # no Mono/Gecko install prompts
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=wine
export DEBIAN_FRONTEND=noninteractive
unset DISPLAY                           # console programs need no X server

# ---------------------------------------------------------------------------- helpers
now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((10#$t / 1000)); }
fmt_ms() { printf '%d.%01d s' $(($1 / 1000)) $(($1 % 1000 / 100)); }
T0=$(now_ms)
STAGE="" STAGE_T0=$T0
stage() {
  STAGE=$1 STAGE_T0=$(now_ms)
  printf '\n=== [%(%T)T] windows: %s\n' -1 "$STAGE"
}
stage_done() {
  printf '=== [%(%T)T] windows: %s: %s\n' -1 "$STAGE" "$(fmt_ms $(($(now_ms) - STAGE_T0)))"
}
# bounded [-q] SECONDS CMD...: runs CMD, killed after SECONDS (KILL 30 s after the TERM),
# and says so on stderr, so a hung command (a Wine process waiting forever) fails CI
# instead of stalling it. -q: CMD's stdin, stdout and stderr are /dev/null (the message is
# not).
bounded() {
  local quiet=0 secs rc=0
  [ "$1" = -q ] && { quiet=1; shift; }
  secs=$1
  shift
  if [ "$quiet" = 1 ]; then
    timeout -k 30 "$secs" "$@" </dev/null >/dev/null 2>&1 || rc=$?
  else
    timeout -k 30 "$secs" "$@" || rc=$?
  fi
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    echo "ci/windows.sh: TIMEOUT: stage '$STAGE' did not finish within $secs s" \
      "(exit $rc): $*" >&2
  fi
  return "$rc"
}

# Once this script has started Wine (stage 3 or 7), the prefix's wineserver and every Wine
# process of the prefix (services.exe, winedevice.exe, a hung test) are stopped when the
# script ends, however it ends.
wine_started=0
cleanup() {
  if [ "$wine_started" = 1 ]; then
    timeout 30 wineserver -k >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------- 1. packages
stage "packages (gcc-mingw-w64-x86-64 wine wine64)"
missing=()
for p in gcc-mingw-w64-x86-64 wine wine64; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
    missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  echo "installing ${missing[*]}"
  bounded "$WIN_SETUP_TIMEOUT" "${sudo[@]}" apt-get update -qq
  bounded "$WIN_SETUP_TIMEOUT" "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
else
  echo "all installed"
fi
stage_done

# ---------------------------------------------------------------------------- 2. rust
cd "$PROJECT_DIR" # so that a rust-toolchain.toml there picks the toolchain
stage "rust target $WIN_TARGET"
if rustup target list --installed | grep -qx "$WIN_TARGET"; then
  echo "installed"
else
  bounded "$WIN_SETUP_TIMEOUT" rustup target add "$WIN_TARGET"
fi
if [ "${SKIP_CLIPPY:-0}" != 1 ] && ! cargo clippy --version >/dev/null 2>&1; then
  bounded "$WIN_SETUP_TIMEOUT" rustup component add clippy
fi
stage_done

# ---------------------------------------------------------------------------- 3. prefix
stage "wine prefix $WINEPREFIX"
if [ -f "$WINEPREFIX/system.reg" ]; then
  echo "exists"
else
  echo "creating it (first run only)"
  mkdir -p "$WINEPREFIX"
  wine_started=1
  # Output detached: the services wineboot starts would otherwise hold our stdout open.
  bounded -q "$WIN_SETUP_TIMEOUT" wineboot --init
  # Wait for the auto-started wineserver to exit (3 s after the last Wine process), so the
  # persistent one of stage 7 can take its place.
  bounded "$WIN_SETUP_TIMEOUT" wineserver -w
  [ -f "$WINEPREFIX/system.reg" ] || {
    echo "ci/windows.sh: wineboot did not create $WINEPREFIX" >&2
    exit 1
  }
fi
stage_done

# ---------------------------------------------------------------------------- 4. shim
stage "bcryptprimitives.dll"
sys32="$WINEPREFIX/drive_c/windows/system32"
dll="$sys32/bcryptprimitives.dll"
# Wine puts a "Wine builtin DLL" copy of each DLL it implements into system32 when it
# creates the prefix; any other file there is our shim.
if [ -f "$dll" ] && grep -aq 'Wine builtin DLL' "$dll"; then
  echo "provided by Wine ($(wine --version))"
elif [ -f "$dll" ] && [ ! "$CI_DIR/bcryptprimitives.c" -nt "$dll" ] &&
  [ ! "$CI_DIR/bcryptprimitives.def" -nt "$dll" ]; then
  echo "shim up to date"
else
  echo "$(wine --version) lacks it: building ci/bcryptprimitives.c into $sys32"
  bounded "$WIN_SETUP_TIMEOUT" x86_64-w64-mingw32-gcc -O2 -shared -s -o "$dll.tmp" \
    "$CI_DIR/bcryptprimitives.c" "$CI_DIR/bcryptprimitives.def" -ladvapi32
  mv -f "$dll.tmp" "$dll"
fi
stage_done
echo "=== windows: setup done in $(fmt_ms $(($(now_ms) - T0)))"

# ---------------------------------------------------------------------------- 5. clippy
if [ "${SKIP_CLIPPY:-0}" != 1 ]; then
  stage "cargo clippy -p $WIN_PACKAGE --all-targets --target $WIN_TARGET -- -D warnings"
  bounded "$WIN_BUILD_TIMEOUT" \
    cargo clippy -p "$WIN_PACKAGE" --all-targets --target "$WIN_TARGET" -- -D warnings
  stage_done
  stage "cargo doc -p $WIN_PACKAGE --no-deps --target $WIN_TARGET (warnings are errors)"
  bounded "$WIN_BUILD_TIMEOUT" \
    env RUSTDOCFLAGS="-D warnings" cargo doc -p "$WIN_PACKAGE" --no-deps --target "$WIN_TARGET"
  stage_done
fi

# ---------------------------------------------------------------------------- 6. build
stage "cargo test --target $WIN_TARGET -p $WIN_PACKAGE --no-run${WIN_TEST_ARGS:+ $WIN_TEST_ARGS}"
# shellcheck disable=SC2086 # WIN_TEST_ARGS is a list of arguments
bounded "$WIN_BUILD_TIMEOUT" \
  cargo test --target "$WIN_TARGET" -p "$WIN_PACKAGE" --no-run $WIN_TEST_ARGS
stage_done

# ---------------------------------------------------------------------------- 7. wineserver
# A wineserver started by a test's wine would hand the helper processes it spawns
# (services.exe, winedevice.exe) that test's stdout: when CI pipes our output (`| tee`),
# the pipe then stays open about 3 s after each test binary, and after the last one. So
# start a persistent one now, its output detached, plus the helpers (the first wine
# command also applies a pending prefix update after a Wine upgrade); cleanup() stops it.
stage "start a detached wineserver"
wine_started=1
bounded -q 60 wineserver -p || true # exit 2: one is running already
bounded -q "$WIN_SETUP_TIMEOUT" wine cmd /c exit || {
  echo "ci/windows.sh: wine cannot run a program in $WINEPREFIX" >&2
  exit 1
}
stage_done

# ---------------------------------------------------------------------------- 8. tests
stage "cargo test --target $WIN_TARGET -p $WIN_PACKAGE${WIN_TEST_ARGS:+ $WIN_TEST_ARGS} (runner: wine, limit ${WIN_TEST_TIMEOUT} s)"
# shellcheck disable=SC2086
bounded "$WIN_TEST_TIMEOUT" cargo test --target "$WIN_TARGET" -p "$WIN_PACKAGE" $WIN_TEST_ARGS
stage_done
echo "=== windows: all done in $(fmt_ms $(($(now_ms) - T0)))"
