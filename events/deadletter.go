package events

// Headers of a record on any of cartlift's dead-letter topics
// (cart-events.dlq, cart-actions.dlq, cart-analytics.dlq). The key and
// value of a dead-lettered record are the original ones, unchanged, and so
// are its original headers; these are added.
const (
	// HeaderErrorReason is a short machine-readable reason.
	HeaderErrorReason = "cartlift-error-reason"
	// HeaderError is the error message.
	HeaderError = "cartlift-error"
	// HeaderSourceTopic, HeaderSourcePartition and HeaderSourceOffset say
	// where the record was read.
	HeaderSourceTopic     = "cartlift-source-topic"
	HeaderSourcePartition = "cartlift-source-partition"
	HeaderSourceOffset    = "cartlift-source-offset"
)
