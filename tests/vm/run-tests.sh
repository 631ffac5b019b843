#!/usr/bin/env bash
# Runs the tier-2 tests: the `vm` test target, tests/vm/main.rs and its
# modules (output not captured, so that the VM boot and step times are
# printed), each test booting its own qemu VM (tests/vm/vm.sh; vm.sh
# allows two VMs at a time). CI calls this after the main test suite. Needs root; builds the VM image on first
# use (cached in /var/cache/plumb-vm).
set -euo pipefail
cd "$(dirname "$0")/../.."

export PLUMB_VM_REQUIRE=1
# Every VM test is a module of one target (tests/vm/main.rs).
if [ ! -e tests/vm/main.rs ]; then
  echo "run-tests.sh: no tests/vm/main.rs: the vm test target is missing" >&2
  exit 1
fi
targets=(--test vm)

# Build the image once up front, so that parallel tests do not wait on it
# one after the other.
t0=$SECONDS
tests/vm/vm.sh image
tests/vm/vm.sh image --stack
echo "== VM images ready in $((SECONDS - t0))s"

echo "== VM tier: ${targets[*]}"
t1=$SECONDS
status=0
cargo test "${targets[@]}" -- --test-threads=2 --nocapture "$@" || status=$?
if [ "$status" = 0 ]; then verdict=passed; else verdict="failed (exit $status)"; fi
echo "== VM tier: tests $verdict in $((SECONDS - t1))s; $((SECONDS - t0))s in all, with the images"
exit "$status"
