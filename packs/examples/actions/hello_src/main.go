// Command hello is the native example action examples.hello: it reads its
// parameters from the environment, as attune delivers them, and prints its
// result as one JSON object.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run() error {
	name := os.Getenv("ATTUNE_ACTION_NAME")
	if name == "" {
		name = "world"
	}
	count := 1
	if s := os.Getenv("ATTUNE_ACTION_COUNT"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			return fmt.Errorf("ATTUNE_ACTION_COUNT must be an integer, got %q", s)
		}
		count = n
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"greeting": fmt.Sprintf("Hello, %s!", name),
		"count":    count,
		"exec_id":  os.Getenv("ATTUNE_EXEC_ID"),
	})
}
