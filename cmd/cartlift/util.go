package main

import (
	"encoding/json"
	"io"
)

func jsonEncode(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// plural is n with thousands separators and the noun in the number it
// needs: "1 item", "3 items", "1,204 items".
func plural(n int64, one, many string) string {
	if n == 1 || n == -1 {
		return num(n) + " " + one
	}
	return num(n) + " " + many
}
