//go:build !linux

package main

// protectCredentials does nothing here: the re-exec needs memfd and
// /proc/self/exe, and PR_SET_DUMPABLE is Linux's.
func protectCredentials() {}
