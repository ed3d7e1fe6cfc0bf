package processor_test

import (
	"testing"
	"time"

	"github.com/cartlift/cartlift/processor"
)

// TestMigrationWritesEveryStateToTheChangelog takes over a store that
// predates the changelog, with more customers per partition than the
// migration puts in one batch, and checks that the changelog then holds
// every customer's state, once per key after compaction, and that the
// API answers from the migrated store.
func TestMigrationWritesEveryStateToTheChangelog(t *testing.T) {
	dir := t.TempDir()
	var exp []expectedCustomer
	// 100k open carts: about 40k customers, 10k per partition, more than
	// one migration chunk (8192 states) each.
	if _, err := processor.SeedStore(dir, testPartitions, seedCustomers(100_000, &exp)); err != nil {
		t.Fatal(err)
	}
	brokers := newCluster(t)
	tp := testTopics(t, brokers)
	a := startAPINode(t, brokers, dir, tp, uniqueName(t, "group"), apiOpts{noProducer: true})
	waitOwnersWithin(t, 2*time.Minute, a)
	waitFor(t, time.Minute, "the migration to reach the changelog", func() bool {
		return a.run.p.Stats().ChangelogLag == 0
	})

	keys := map[string]bool{}
	metas := 0
	for _, r := range readTopic(t, brokers, tp.State) {
		if r.Key == "\x00meta" {
			metas++
			continue
		}
		if len(r.Value) == 0 {
			t.Fatalf("a tombstone for %q in a migration", r.Key)
		}
		keys[r.Key] = true
	}
	if len(keys) != len(exp) {
		t.Fatalf("the changelog holds %d customers' states, the store %d", len(keys), len(exp))
	}
	for i := range exp {
		if !keys[loadKey(i)] {
			t.Fatalf("customer %s is not in the changelog", loadKey(i))
		}
	}
	if metas < testPartitions {
		t.Fatalf("%d metadata records, want at least one per partition (%d)", metas, testPartitions)
	}
}
