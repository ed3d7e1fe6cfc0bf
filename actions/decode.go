package actions

import (
	"encoding/json"
	"fmt"

	"github.com/cartlift/cartlift/events"
)

// DecisionType is the CloudEvents type of a decision on cart-decisions.
const DecisionType = events.TypeDecision

// DecodeDecision decodes the CloudEvents JSON value of a record of the
// cart-decisions topic.
func DecodeDecision(value []byte) (events.Decision, error) {
	var env events.Envelope
	if err := json.Unmarshal(value, &env); err != nil {
		return events.Decision{}, fmt.Errorf("decision envelope: %w", err)
	}
	if env.Type != DecisionType {
		return events.Decision{}, fmt.Errorf("event type %q is not %s", env.Type, DecisionType)
	}
	var d events.Decision
	if err := json.Unmarshal(env.Data, &d); err != nil {
		return events.Decision{}, fmt.Errorf("decision data: %w", err)
	}
	if d.ID == "" {
		return events.Decision{}, fmt.Errorf("decision without decision_id")
	}
	return d, nil
}
