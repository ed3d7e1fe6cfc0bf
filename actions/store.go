package actions

import (
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"sync"
	"time"

	"github.com/cockroachdb/pebble"
)

// Record is what the store keeps per decision id: the result of handling it.
type Record struct {
	Kind  string    `json:"kind"`
	At    time.Time `json:"at"`
	Error string    `json:"error,omitempty"`
}

// Store is the durable record of handled decisions, a Pebble database keyed
// by "d/" + decision id. Writes are synced, so a record survives a crash.
//
// Besides the records, it keeps the issued discount codes ("k/" + decision
// id, and "c/" + code to keep codes unique) and the webhook deliveries
// ("w/" + decision id + "|" + endpoint).
type Store struct {
	db *pebble.DB
	mu sync.Mutex // serialises the read-then-write of IssueDiscount and MarkOnce
}

// OpenStore opens (creating if needed) the store in dir.
func OpenStore(dir string) (*Store, error) {
	db, err := pebble.Open(dir, &pebble.Options{Logger: quietLogger{}})
	if err != nil {
		return nil, fmt.Errorf("actions store: %w", err)
	}
	return &Store{db: db}, nil
}

func storeKey(decisionID string) []byte { return []byte("d/" + decisionID) }

// quietLogger drops Pebble's informational messages (WAL replay, ...) and
// keeps its fatal errors.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any) {}

func (quietLogger) Fatalf(format string, args ...any) { log.Fatalf("pebble: "+format, args...) }

// Get returns the record of a decision and whether there is one.
func (s *Store) Get(decisionID string) (Record, bool, error) {
	v, closer, err := s.db.Get(storeKey(decisionID))
	if errors.Is(err, pebble.ErrNotFound) {
		return Record{}, false, nil
	}
	if err != nil {
		return Record{}, false, err
	}
	defer closer.Close()
	var r Record
	if err := json.Unmarshal(v, &r); err != nil {
		return Record{}, false, fmt.Errorf("actions store: record of %s: %w", decisionID, err)
	}
	return r, true, nil
}

// Put writes the record of a decision durably.
func (s *Store) Put(decisionID string, r Record) error {
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return s.db.Set(storeKey(decisionID), v, pebble.Sync)
}

// recordOnce writes the record of a decision durably unless there is one;
// false when there was.
func (s *Store) recordOnce(decisionID string, r Record) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok, err := s.Get(decisionID); err != nil || ok {
		return false, err
	}
	return true, s.Put(decisionID, r)
}

// ClearFailure deletes the record of a decision when it records a failure
// (email.failed or webhook.failed), so that the decision can be handled
// again (Redrive); it returns the record it found, if any. Other records
// (a sent email, an expiry, ...) stay: handling the decision again is then
// a duplicate. Deliveries already made (a webhook endpoint that answered
// 2xx, an issued discount code) are kept and reused.
func (s *Store) ClearFailure(decisionID string) (prev Record, found bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev, found, err = s.Get(decisionID)
	if err != nil || !found || !isFailureKind(prev.Kind) {
		return prev, found, err
	}
	return prev, found, s.db.Delete(storeKey(decisionID), pebble.Sync)
}

func isFailureKind(kind string) bool { return kind == KindEmailFailed || kind == KindWebhookFailed }

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// getJSON reads the JSON value at key into v; false when there is none.
func (s *Store) getJSON(key string, v any) (bool, error) {
	b, closer, err := s.db.Get([]byte(key))
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer closer.Close()
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("actions store: %s: %w", key, err)
	}
	return true, nil
}

// putJSON writes v as JSON at key durably.
func (s *Store) putJSON(key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.db.Set([]byte(key), b, pebble.Sync)
}
