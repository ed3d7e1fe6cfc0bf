package emporix

// Svix signatures (https://docs.svix.com/receiving/verifying-payloads/how-manual):
// the signed content is "<svix-id>.<svix-timestamp>.<raw body>", signed
// with HMAC-SHA256 under the endpoint's secret (base64 after the "whsec_"
// prefix); svix-signature is a space-separated list of "v1,<base64>"
// (several while a secret is being rotated); svix-timestamp is in seconds
// since the epoch.

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// DefaultTolerance is how far a delivery's svix-timestamp may lie from the
// receiver's clock, either way: Svix's own libraries use five minutes.
const DefaultTolerance = 5 * time.Minute

// Errors of Verify. Each is wrapped with detail that names no secret.
var (
	// ErrMissingHeaders: svix-id, svix-timestamp or svix-signature is absent.
	ErrMissingHeaders = errors.New("svix-id, svix-timestamp and svix-signature are required")
	// ErrStale: the timestamp is not a number or lies outside the tolerance.
	ErrStale = errors.New("the svix-timestamp is outside the tolerance")
	// ErrSignature: no v1 signature of the header matches the content.
	ErrSignature = errors.New("no signature matches")
)

// maxSvixIDLen bounds svix-id: it becomes part of cartlift's event ids.
const maxSvixIDLen = 100

// Verifier checks Svix signatures with one secret. It is safe for
// concurrent use.
type Verifier struct {
	key       []byte
	tolerance time.Duration
}

// NewVerifier parses an endpoint secret ("whsec_<base64>"; the prefix is
// optional) and returns a Verifier with the given tolerance (0:
// DefaultTolerance). Its errors never contain the secret.
func NewVerifier(secret string, tolerance time.Duration) (*Verifier, error) {
	s := strings.TrimPrefix(strings.TrimSpace(secret), "whsec_")
	if s == "" {
		return nil, errors.New("the secret is empty")
	}
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, errors.New("the secret is not whsec_ followed by base64")
	}
	if len(key) < 16 {
		return nil, fmt.Errorf("the secret is %d bytes, at least 16 are needed", len(key))
	}
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	return &Verifier{key: key, tolerance: tolerance}, nil
}

// Sign returns the svix-signature header value for a delivery: what Svix
// would send. Tests and the tools that replay deliveries use it.
func (v *Verifier) Sign(id string, ts time.Time, body []byte) string {
	return "v1," + base64.StdEncoding.EncodeToString(v.mac(id, strconv.FormatInt(ts.Unix(), 10), body))
}

func (v *Verifier) mac(id, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, v.key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Verify checks one delivery: the headers are present, the timestamp lies
// within the tolerance of now, and one of the header's v1 signatures is
// the HMAC of id, timestamp and the raw body (compared in constant time,
// every candidate). It returns the delivery's timestamp.
func (v *Verifier) Verify(id, timestamp, signature string, body []byte, now time.Time) (time.Time, error) {
	if id == "" || timestamp == "" || signature == "" {
		return time.Time{}, ErrMissingHeaders
	}
	if len(id) > maxSvixIDLen || strings.ContainsFunc(id, func(r rune) bool { return r <= ' ' || r == 0x7f || r > 0x7e }) {
		return time.Time{}, fmt.Errorf("%w: the svix-id is not up to %d printable ASCII characters", ErrMissingHeaders, maxSvixIDLen)
	}
	secs, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil || secs < 0 || secs > 253402300799 {
		return time.Time{}, fmt.Errorf("%w: %q is not seconds since the epoch", ErrStale, timestamp)
	}
	ts := time.Unix(secs, 0).UTC()
	if d := now.Sub(ts); d > v.tolerance || d < -v.tolerance {
		return ts, fmt.Errorf("%w: it is %s from this server's clock, the tolerance is %s", ErrStale, d.Round(time.Second), v.tolerance)
	}
	want := v.mac(id, timestamp, body)
	ok := 0
	for _, cand := range strings.Fields(signature) {
		version, sig, found := strings.Cut(cand, ",")
		if !found || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(sig)
		if err != nil {
			continue
		}
		ok |= boolInt(hmac.Equal(got, want))
	}
	if ok == 0 {
		return ts, ErrSignature
	}
	return ts, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
