package packs

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// ParseText converts a parameter value typed on a command line (`--param
// name=value`) by its declared type, as StackStorm's CLI does: a string
// parameter keeps "02134" and "123" as text, an integer parameter parses
// "3", a boolean "true" or "no", an array "a,b" or JSON, an object JSON.
// Numbers come back as json.Number so large integers stay exact. A
// parameter declared without a type takes the text as JSON when it parses,
// else as a string.
func (p Param) ParseText(name, text string) (any, error) {
	bad := func(want string) error {
		return fmt.Errorf("--param %s=%s: %s is %s parameter; give %s", name, text, name, article(p.Type), want)
	}
	switch p.Type {
	case "string":
		return text, nil
	case "integer":
		n, err := strconv.ParseInt(strings.TrimSpace(text), 10, 64)
		if err != nil {
			return nil, bad("a whole number such as 3")
		}
		return json.Number(strconv.FormatInt(n, 10)), nil
	case "number":
		t := strings.TrimSpace(text)
		f, err := strconv.ParseFloat(t, 64)
		if err != nil || strings.ContainsAny(t, "xXpP_") || isNonFinite(t) {
			return nil, bad("a number such as 2.5")
		}
		if json.Valid([]byte(t)) {
			return json.Number(t), nil // as typed: exact
		}
		return json.Number(strconv.FormatFloat(f, 'g', -1, 64)), nil // ".5" → "0.5": valid JSON
	case "boolean":
		switch strings.ToLower(strings.TrimSpace(text)) {
		case "true", "yes", "y", "on", "1":
			return true, nil
		case "false", "no", "n", "off", "0":
			return false, nil
		}
		return nil, bad("true or false")
	case "array":
		if strings.HasPrefix(strings.TrimSpace(text), "[") {
			v, err := decodeJSONText(text)
			if err != nil {
				return nil, bad(`a JSON array such as '["a","b"]', or items separated by commas`)
			}
			return v, nil
		}
		items := []any{}
		if text != "" {
			for _, s := range strings.Split(text, ",") {
				items = append(items, strings.TrimSpace(s))
			}
		}
		return items, nil
	case "object":
		v, err := decodeJSONText(text)
		if _, ok := v.(map[string]any); err != nil || !ok {
			return nil, bad(`a JSON object such as '{"key": "value"}'`)
		}
		return v, nil
	}
	if v, err := decodeJSONText(text); err == nil {
		return v, nil
	}
	return text, nil
}

func decodeJSONText(text string) (any, error) {
	dec := json.NewDecoder(strings.NewReader(text))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("more than one JSON value")
	}
	return v, nil
}

func isNonFinite(s string) bool {
	s = strings.ToLower(strings.TrimLeft(s, "+-"))
	return s == "inf" || s == "infinity" || s == "nan"
}

func article(typ string) string {
	if typ == "integer" || typ == "object" || typ == "array" {
		return "an " + typ
	}
	return "a " + typ
}
