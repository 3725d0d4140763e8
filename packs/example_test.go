package packs_test

import (
	"fmt"

	"github.com/attune-system/attune/packs"
)

func ExampleEnvName() {
	fmt.Println("ATTUNE_ACTION_" + packs.EnvName("max-retries"))
	// Output: ATTUNE_ACTION_MAX_RETRIES
}

func ExampleParams_Validate() {
	p := packs.Params{
		"name":  {Type: "string", Default: "world"},
		"count": {Type: "integer", Required: true},
	}
	got, err := p.Validate(map[string]any{"count": 2})
	fmt.Println(got, err)
	_, err = p.Validate(map[string]any{"count": "two"})
	fmt.Println(err)
	// Output:
	// map[count:2 name:world] <nil>
	// parameter "count": expected integer, got string
}

func ExampleRenderParams() {
	ctx := packs.TemplateContext(7, "core.intervaltimer", map[string]any{"execution_count": 3}, "examples.every_second")
	got, err := packs.RenderParams(map[string]any{
		"message": "tick {{ event.payload.execution_count }}",
		"count":   "{{ event.payload.execution_count }}",
	}, ctx)
	fmt.Printf("%q %v %v\n", got["message"], got["count"], err)
	// Output: "tick 3" 3 <nil>
}
