#!/usr/bin/env bash
# The adversary test on a sparse job (top-k 2-bit uploads with error
# feedback, default trust settings otherwise): replays judge such uploads by
# direction and size where they keep values (state.cpp), scoring as before.
# Every attack below is contained with no honest upload rejected.
# `otherdata` (another slice's rows) is left out: with error feedback its
# upload matches a re-run in direction and size, and on this tiny model
# scoring does not separate it either (see docs/perf.md).
ADVERSARY_JOB='"compression": "sparse"' ADVERSARY_MODES="signflip scale3 noise lazy otherlr" \
  exec bash "$(dirname "$0")/test_pool_adversary.sh" "$@"
