package packs

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/attune-system/attune/schema/schematest"
)

// TestMain lets schematest stop a private PostgreSQL cluster it may have
// started for the registration tests, then checks that nothing (a pgx pool,
// a listening connection) outlives the tests.
func TestMain(m *testing.M) {
	code := schematest.Main(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}
