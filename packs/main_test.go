package packs

import (
	"os"
	"testing"

	"github.com/attune-system/attune/schema/schematest"
)

// TestMain lets schematest stop a private PostgreSQL cluster it may have
// started for the registration tests, then checks that nothing (a pgx pool,
// a listening connection) outlives the tests.
func TestMain(m *testing.M) {
	os.Exit(schematest.MainNoLeaks(m))
}
