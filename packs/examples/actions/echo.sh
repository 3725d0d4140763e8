#!/bin/sh
printf '%s\n' "$ATTUNE_ACTION_MESSAGE"
