#!/bin/sh
echo "about to fail" >&2
echo "something went wrong on purpose" >&2
exit 2
