#!/usr/bin/env bash
# The GPU host check: build the toy world, featurize a pool on the GPU, check and time the featurizer
# against the one-at-a-time reference, select, store, train one DPO round; prints timings and a JSON
# summary, exits non-zero when the batched features disagree with the reference. A few minutes on a GPU.
#
#   deploy/gpu-check.sh                                   # in a checkout with the project installed
#   docker run --rm --gpus all --entrypoint bash activedpo:gpu deploy/gpu-check.sh   # not in the image: mount it
#   deploy/gpu-check.sh --device cpu --preset tiny --responses 64 --proj-dim 512    # anywhere, in seconds
#
# Options are python -m activedpo_server.check's (--help). PYTHON picks the interpreter.
set -euo pipefail
"${PYTHON:-python3}" -c "import torch; print('torch', torch.__version__, '| CUDA:', torch.cuda.is_available() and torch.cuda.get_device_name())"
exec "${PYTHON:-python3}" -m activedpo_server.check "$@"
