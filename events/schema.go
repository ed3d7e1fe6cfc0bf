package events

import (
	"embed"
	"io/fs"
)

//go:embed schema/*.schema.json schema/examples/*.json
var schemaFiles embed.FS

// Schemas returns the published JSON Schemas (draft 2020-12) of contract v1
// and their examples, as a read-only file system rooted at the schema
// directory:
//
//	envelope.schema.json               the CloudEvents 1.0 envelope
//	common.schema.json                 definitions the others share
//	<type>.schema.json                 one per input type (InputTypes) and
//	                                   per output type (TypeDecision, TypeOutcome,
//	                                   TypeSuppressed, TypeDeferred)
//	examples/<type>.json               a valid event of each of those types
//
// Schemas refer to each other by relative URI ("envelope.schema.json",
// "common.schema.json#/$defs/id"), so they resolve when served together
// from one directory. Decode is the authority; the schemas describe what it
// accepts, except what JSON Schema cannot express (see schema/README.md).
// The returned file system is safe for concurrent use.
func Schemas() fs.FS {
	sub, err := fs.Sub(schemaFiles, "schema")
	if err != nil {
		panic(err) // cannot happen: "schema" is a valid, embedded path
	}
	return sub
}
