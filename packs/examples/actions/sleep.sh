#!/bin/sh
echo "sleeping ${ATTUNE_ACTION_SECONDS:-30}s"
exec sleep "${ATTUNE_ACTION_SECONDS:-30}"
