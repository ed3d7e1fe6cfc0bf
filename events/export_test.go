package events

// ReferenceDecode is the reflection-based decoder Decode replaced (see
// decode_reference_test.go), for the differential tests.
var ReferenceDecode = referenceDecode
