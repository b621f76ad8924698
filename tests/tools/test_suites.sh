#!/usr/bin/env bash
# make test's runner: test_suites.sh BUILD_DIR "BACKGROUND SUITES" "LAB SUITES"
#
# Each suite is a make target, run as `make BUILT=1 SUITE` (the collection and the source copy were made once,
# before: suites running side by side never see them replaced) and timed into BUILD_DIR/suite-times.txt.
# The lab suites run one after another in the foreground: they share lo's traffic shaping, so never two at once.
# Measured, they leave about 70 % of the two cores idle (they wait on guests, shaped links and libvirt), so the
# suites that need no lab (unit tests, sanity, the matrix, lint, docs: pure CPU) run meanwhile in the
# background, one after another, at the idle scheduling class (chrt --idle): they get only CPU that nothing
# else wants, so they do not slow the lab. Their output goes to BUILD_DIR/test-logs/SUITE.log and is printed at
# the end. A background failure ends the run once the lab suite then running has ended; a lab suite's failure
# stops the background at once.
set -uo pipefail

build=$1
logs=$build/test-logs
times=$build/suite-times.txt
make_=${MAKE:-make}

run() {  # SUITE [LOG] [NOTE]: run one suite, time it; its exit status
    local t0 rc
    t0=$(date +%s)
    if [ -n "${2:-}" ]; then
        "$make_" --no-print-directory BUILT=1 "$1" > "$2" 2>&1
    else
        "$make_" --no-print-directory BUILT=1 "$1"
    fi
    rc=$?
    echo "$1 $(( $(date +%s) - t0 )) s${3:-}$( [ "$rc" = 0 ] || echo ' FAILED')" >> "$times"
    return "$rc"
}

if [ "${2:-}" = --background ]; then
    for s in $3; do
        run "$s" "$logs/$s.log" " (in the background)" || { echo "$s" > "$logs/background.done"; exit 1; }
    done
    echo ok > "$logs/background.done"
    exit 0
fi

background=$2
lab_suites=$3
mkdir -p "$logs"
: > "$times"
rm -f "$logs/background.done"
for s in $background; do rm -f "$logs/$s.log"; done

# setsid: a process group of its own, which a failure here can stop as a whole.
setsid chrt --idle 0 "$0" "$build" --background "$background" &
bg=$!
trap 'kill -- -"$bg" 2>/dev/null' EXIT
trap 'exit 130' INT TERM

background_failed() { [ -f "$logs/background.done" ] && [ "$(cat "$logs/background.done")" != ok ]; }

rc=0
for s in $lab_suites; do
    background_failed && break
    run "$s" || { rc=1; break; }
done
if [ "$rc" = 0 ] && ! background_failed; then
    echo "== waiting for the background suites ($background) =="
    wait "$bg"
fi
kill -- -"$bg" 2>/dev/null
wait "$bg" 2>/dev/null
for s in $background; do
    [ -f "$logs/$s.log" ] && { echo "== $s (ran in the background; $logs/$s.log) =="; cat "$logs/$s.log"; }
done
if background_failed || [ ! -f "$logs/background.done" ]; then
    rc=1
    [ -f "$logs/background.done" ] && echo "background suite failed: $(cat "$logs/background.done")"
fi
echo "== suite times =="
cat "$times"
exit "$rc"
