#!/bin/sh
# The image's entrypoint: prepare the cache volume, render the repository, exec tritonserver.
# Every argument goes to the Python entrypoint: `docker run IMAGE --help` lists them.
set -eu
exec python3 -m hpsv3_repository.entrypoint "$@"
