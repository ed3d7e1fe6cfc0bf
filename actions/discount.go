package actions

import (
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cartlift/cartlift/events"
)

// Discount codes.
const (
	// CodeAlphabet is Crockford's base32 alphabet: digits and upper-case
	// letters without I, L, O and U, so codes are easy to read and type.
	CodeAlphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
	// CodeLength is the number of random characters of a code (50 bits).
	CodeLength = 10
	// DefaultDiscountValidity is the validity of a code whose discount has
	// no valid_for_seconds.
	DefaultDiscountValidity = 72 * time.Hour
	// KindDiscountIssued is the outcome announcing an issued code.
	KindDiscountIssued = "discount.issued"
)

// IssuedDiscount is a discount code issued for one decision: its value
// (a percentage with an optional cap, or an amount), its expiry and its
// scope (the cart and the customer of the decision).
type IssuedDiscount struct {
	Code        string    `json:"code"`
	DecisionID  string    `json:"decision_id"`
	Percent     int64     `json:"percent,omitempty"`
	AmountMinor int64     `json:"amount_minor,omitempty"`
	MaxMinor    int64     `json:"max_minor,omitempty"`
	Currency    string    `json:"currency"`
	CartID      string    `json:"cart_id"`
	CustomerKey string    `json:"customer_key"`
	IssuedAt    time.Time `json:"issued_at"`
	ExpiresAt   time.Time `json:"expires_at"`
}

// NewCode returns prefix followed by CodeLength characters of CodeAlphabet
// drawn from crypto/rand. The alphabet has 32 letters, so every random byte
// gives a letter without bias (its low 5 bits).
func NewCode(prefix string) (string, error) {
	var b [CodeLength]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	var sb strings.Builder
	sb.Grow(len(prefix) + CodeLength)
	sb.WriteString(prefix)
	for _, c := range b {
		sb.WriteByte(CodeAlphabet[c&31])
	}
	return sb.String(), nil
}

// HasDiscount reports whether a decision carries a discount with a value.
func HasDiscount(d events.Decision) bool {
	return d.Discount != nil && (d.Discount.Percent != 0 || d.Discount.AmountMinor != 0)
}

// IssueDiscount returns the code of a decision's discount, issuing it on
// the first call: later calls for the same decision id (a redelivery, a
// restart) return the stored one, and created is false. A new code is
// checked against every code issued before (key "c/" + code), so codes are
// unique. The expiry is decided_at (now when zero) + valid_for_seconds
// (DefaultDiscountValidity when zero).
func (s *Store) IssueDiscount(d events.Decision, now time.Time) (disc IssuedDiscount, created bool, err error) {
	if d.ID == "" {
		return disc, false, errors.New("actions: discount for a decision without id")
	}
	if !HasDiscount(d) {
		return disc, false, fmt.Errorf("actions: decision %s has no discount", d.ID)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if ok, err := s.getJSON("k/"+d.ID, &disc); err != nil || ok {
		return disc, false, err
	}
	issued := d.DecidedAt
	if issued.IsZero() {
		issued = now
	}
	valid := DefaultDiscountValidity
	if d.Discount.ValidForSeconds > 0 {
		valid = time.Duration(d.Discount.ValidForSeconds) * time.Second
	}
	disc = IssuedDiscount{
		DecisionID:  d.ID,
		Percent:     d.Discount.Percent,
		AmountMinor: d.Discount.AmountMinor,
		Currency:    d.Cart.Currency,
		CartID:      d.Cart.CartID,
		CustomerKey: d.Customer.Key,
		IssuedAt:    issued.UTC(),
		ExpiresAt:   issued.Add(valid).UTC(),
	}
	if d.Discount.Percent != 0 {
		disc.MaxMinor = d.Discount.MaxMinor
	}
	for range 8 {
		code, err := NewCode(d.Discount.Prefix)
		if err != nil {
			return disc, false, err
		}
		var owner string
		taken, err := s.getJSON("c/"+code, &owner)
		if err != nil {
			return disc, false, err
		}
		if !taken {
			disc.Code = code
			break
		}
	}
	if disc.Code == "" {
		return disc, false, errors.New("actions: no unused discount code found")
	}
	if err := s.putJSON("c/"+disc.Code, d.ID); err != nil {
		return disc, false, err
	}
	if err := s.putJSON("k/"+d.ID, disc); err != nil {
		return disc, false, err
	}
	return disc, true, nil
}

// Discount returns the code issued for a decision, if any.
func (s *Store) Discount(decisionID string) (IssuedDiscount, bool, error) {
	var disc IssuedDiscount
	ok, err := s.getJSON("k/"+decisionID, &disc)
	return disc, ok, err
}

// DiscountOutcome is the discount.issued outcome of a decision, id
// "o-<decision id>-discount.issued". The events.Outcome has no field for
// the code: the code and its expiry travel in the record headers
// (HeaderDiscountCode, HeaderDiscountExpires) and in the shop webhook.
func DiscountOutcome(d events.Decision, disc IssuedDiscount, now time.Time) events.Outcome {
	o := newOutcome(d, KindDiscountIssued, now)
	if disc.AmountMinor != 0 {
		o.ValueMinor = disc.AmountMinor
	} else {
		o.ValueMinor = disc.MaxMinor
	}
	return o
}

// Headers of a discount.issued record on cart-outcomes.
const (
	HeaderDiscountCode    = "cartlift-discount-code"
	HeaderDiscountExpires = "cartlift-discount-expires"
)
