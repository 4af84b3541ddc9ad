#!/usr/bin/env bash
# The test command: installs what is missing, checks formatting, builds (with
# -Werror), runs the whole suite, then the torch-free part again under
# AddressSanitizer + UndefinedBehaviorSanitizer (built by clang with
# -Wthread-safety -Werror, so the lock annotations are checked; with the fuzz
# targets' short runs) and ThreadSanitizer (the concurrency tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/check-format.sh
bash scripts/build.sh
(cd "${BUILD_DIR:-build}" && ctest --output-on-failure --timeout 900 -j "${CTEST_JOBS:-1}")
bash scripts/check-sanitizers.sh
