#!/usr/bin/env bash
# The main job: install, build, then use the default model (training it only
# when the repository does not hold it) and print its report.
set -euo pipefail
cd "$(dirname "$0")/.."
REPOSITORY=${REPOSITORY:-repository}
MODEL=${MODEL:-fmnist-resnet}
bash scripts/install-deps.sh
bash scripts/build.sh
./build/optimizer/hapi-train --repository="$REPOSITORY" --model="$MODEL"
