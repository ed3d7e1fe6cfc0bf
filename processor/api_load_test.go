package processor_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/cartlift/cartlift/processor"
	"github.com/cartlift/cartlift/projections"
)

// TestAPILoad measures GET /v1/customers/{id}/carts against a large
// projection on two instances in one group: requests sent to the owner of
// the customer's partition (local) and to the other instance (forwarded),
// from concurrent keep-alive clients on loopback (2 by default: more than
// the cores of a small machine measure queueing, not the API). Every
// response is checked against the seeded carts.
//
// By default it runs a reduced projection (20k open carts) as a
// correctness test; CARTLIFT_API_LOAD=1 runs the benchmark of the README
// (1M open carts; CARTLIFT_API_LOAD_CARTS, _REQUESTS and _CLIENTS
// override the sizes). Run it with -v to see the figures:
//
//	CARTLIFT_API_LOAD=1 go test -run TestAPILoad -v -timeout 30m ./processor/
func TestAPILoad(t *testing.T) {
	cartsWanted, requests, clients := 20_000, 2_000, 2
	load := os.Getenv("CARTLIFT_API_LOAD") != ""
	if load {
		cartsWanted, requests = 1_000_000, 50_000
	}
	envInt := func(name string, v *int) {
		if s := os.Getenv(name); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n <= 0 {
				t.Fatalf("%s=%q is not a positive number", name, s)
			}
			*v = n
		}
	}
	envInt("CARTLIFT_API_LOAD_CARTS", &cartsWanted)
	envInt("CARTLIFT_API_LOAD_REQUESTS", &requests)
	envInt("CARTLIFT_API_LOAD_CLIENTS", &clients)

	// Seed one store, copy it for the second instance: whichever instance
	// owns a partition has its customers.
	dirA := t.TempDir()
	dirB := filepath.Join(t.TempDir(), "b")
	start := time.Now()
	var exp []expectedCustomer
	openCarts, err := processor.SeedStore(dirA, testPartitions, seedCustomers(cartsWanted, &exp))
	if err != nil {
		t.Fatal(err)
	}
	if err := processor.CheckpointStore(dirA, dirB); err != nil {
		t.Fatal(err)
	}
	seeded := time.Since(start)

	brokers := newCluster(t)
	tp := testTopics(t, brokers)
	group := uniqueName(t, "group")
	a := startAPINode(t, brokers, dirA, tp, group, apiOpts{noProducer: true})
	b := startAPINode(t, brokers, dirB, tp, group, apiOpts{noProducer: true})
	// A seeded store has no changelog yet: taking it over first writes
	// every state to the changelog (the migration), a minute per few
	// million customers.
	owners := waitOwnersWithin(t, time.Minute+time.Duration(cartsWanted/20_000)*time.Second, a, b)
	var storeOpen int64
	for _, n := range []*apiNode{a, b} {
		storeOpen += n.run.p.Stats().OpenCarts
	}
	if storeOpen != openCarts {
		t.Fatalf("the instances report %d open carts, %d were seeded", storeOpen, openCarts)
	}

	check := func(ci int, body []byte) error {
		var r struct {
			CustomerKey string `json:"customer_key"`
			Count       int    `json:"count"`
			Carts       []struct {
				TotalMinor int64  `json:"total_minor"`
				Status     string `json:"status"`
			} `json:"carts"`
			Freshness processor.Freshness `json:"freshness"`
		}
		if err := json.Unmarshal(body, &r); err != nil {
			return err
		}
		var total int64
		for _, c := range r.Carts {
			if c.Status != projections.StatusOpen {
				return fmt.Errorf("a %s cart in the open list", c.Status)
			}
			total += c.TotalMinor
		}
		e := exp[ci]
		if r.CustomerKey != loadKey(ci) || r.Count != e.open || len(r.Carts) != e.open || total != e.total || r.Freshness.Partition != e.part {
			return fmt.Errorf("got %d carts worth %d (partition %d), want %d worth %d (partition %d)",
				len(r.Carts), total, r.Freshness.Partition, e.open, e.total, e.part)
		}
		return nil
	}
	// Request i asks for a customer spread over the whole key space.
	customer := func(i, salt int) int { return int((uint64(i)*0x9E3779B97F4A7C15 + uint64(salt)) % uint64(len(exp))) }
	path := func(ci int) string { return "/v1/customers/" + url.PathEscape(loadKey(ci)) + "/carts" }
	local := func(salt int) func(int) (string, int) {
		return func(i int) (string, int) {
			ci := customer(i, salt)
			return owners[exp[ci].part].url + path(ci), ci
		}
	}
	forwarded := func(salt int) func(int) (string, int) {
		return func(i int) (string, int) {
			ci := customer(i, salt)
			other := a
			if owners[exp[ci].part] == a {
				other = b
			}
			return other.url + path(ci), ci
		}
	}
	warm := max(500, requests/10)
	hammer(t, clients, warm, local(1), check)
	hammer(t, clients, warm, forwarded(2), check)
	fwdBefore := a.forwarded.Load() + b.forwarded.Load()
	tLocal := time.Now()
	lLocal := hammer(t, clients, requests, local(3), check)
	dLocal := time.Since(tLocal)
	tFwd := time.Now()
	lFwd := hammer(t, clients, requests, forwarded(4), check)
	dFwd := time.Since(tFwd)
	if got := a.forwarded.Load() + b.forwarded.Load() - fwdBefore; got != int64(requests) {
		t.Fatalf("%d requests were forwarded, want %d", got, requests)
	}

	t.Logf("projection: %d open carts of %d customers (%d with a closed cart too), seeded in %s; store %.0f MiB per instance",
		openCarts, len(exp), closedCustomers(exp), seeded.Round(time.Millisecond), float64(a.run.p.DiskUsage())/(1<<20))
	t.Logf("machine: %s, %d CPUs (GOMAXPROCS %d), %s/%s; %d clients, %d requests each run, keep-alive, loopback",
		cpuModel(), runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH, clients, requests)
	t.Logf("local     %s  (%.0f req/s)", lLocal.summary(), float64(requests)/dLocal.Seconds())
	t.Logf("forwarded %s  (%.0f req/s)", lFwd.summary(), float64(requests)/dFwd.Seconds())
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	if path := os.Getenv("CARTLIFT_API_LOAD_HEAPPROFILE"); path != "" {
		// The in-process broker's log is in this heap too: the profile
		// tells the two apart.
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.WriteHeapProfile(f); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	blockCache, memTables := a.run.p.StoreMemory()
	t.Logf("memory: Go heap %.0f MiB (both instances, and the test's %d expected answers, %.0f MiB); instance A's block cache %.0f MiB, memtables %.0f MiB",
		float64(ms.HeapAlloc)/(1<<20), len(exp), float64(len(exp)*int(unsafe.Sizeof(expectedCustomer{})))/(1<<20),
		float64(blockCache)/(1<<20), float64(memTables)/(1<<20))
}

// expectedCustomer is what the open list of customer i (key loadKey(i))
// must show. It holds no pointers, so that a million of them cost the
// garbage collector nothing to scan while the latencies are measured.
type expectedCustomer struct {
	part   int32
	open   int
	total  int64 // of the open carts
	closed bool
}

func closedCustomers(exp []expectedCustomer) int {
	n := 0
	for _, e := range exp {
		if e.closed {
			n++
		}
	}
	return n
}

// seedCustomers generates customers until they hold wantOpen open carts:
// 1 to 4 open carts each (shopping, wishlist, quote), 1 to 4 line items
// per cart, and for one customer in five a checked-out cart too (which the
// open list must leave out). It appends what each customer's open list
// must show to exp.
func seedCustomers(wantOpen int, exp *[]expectedCustomer) func(func(*projections.CustomerState) bool) {
	return func(yield func(*projections.CustomerState) bool) {
		rng := rand.New(rand.NewPCG(7, 11))
		base := time.Date(2026, 11, 20, 8, 0, 0, 0, time.UTC)
		types := []string{"shopping", "wishlist", "quote"}
		open := 0
		for i := 0; open < wantOpen; i++ {
			key := loadKey(i)
			st := &projections.CustomerState{Key: key}
			if !strings.HasPrefix(key, "anon:") {
				st.Profile = projections.Profile{CustomerID: key, Email: key + "@example.com", Locale: "en-GB", MarketingConsent: i%2 == 0}
			}
			e := expectedCustomer{part: partitionOf(key, testPartitions), open: 1 + rng.IntN(4), closed: rng.IntN(5) == 0}
			n := e.open
			if e.closed {
				n++
			}
			for c := range n {
				at := base.Add(time.Duration(rng.IntN(7*24*3600)) * time.Second)
				cart := &projections.Cart{ID: "cart-" + strconv.Itoa(c), Type: types[c%len(types)], Site: "eu", Channel: "b2c",
					Currency: "EUR", Status: projections.StatusOpen, CreatedAt: at, ModifiedAt: at.Add(time.Minute),
					LastActivity: at.Add(time.Minute), Metadata: map[string]string{"device": "mobile"}}
				for it := range 1 + rng.IntN(4) {
					sku := fmt.Sprintf("SKU-%05d", rng.IntN(50_000))
					q, price := int64(1+rng.IntN(3)), int64(100+rng.IntN(20_000))
					cart.Items = append(cart.Items, projections.LineItem{SKU: sku, Name: "Product " + sku, Quantity: q,
						UnitPriceMinor: price, LineTotalMinor: q * price, Category: "cat-" + strconv.Itoa(it),
						ImageURL: "https://img.example/" + sku + ".jpg"})
					cart.TotalMinor += q * price
					cart.ItemCount += q
					cart.Version++
				}
				if c == e.open { // the closed one
					cart.Status, cart.ClosedAt, cart.OrderID = projections.StatusCheckedOut, at.Add(time.Hour), "o-"+key
				} else {
					e.total += cart.TotalMinor
				}
				st.Carts = append(st.Carts, cart)
			}
			open += e.open
			*exp = append(*exp, e)
			if !yield(st) {
				return
			}
		}
	}
}

// loadKey is the key of the load test's customer i; one in ten is a guest.
func loadKey(i int) string {
	if i%10 == 9 {
		return fmt.Sprintf("anon:load-%07d", i)
	}
	return fmt.Sprintf("load-%07d", i)
}

// cpuModel names the CPU, where /proc/cpuinfo tells.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// BenchmarkCartsAPI measures the handler of GET /v1/customers/{id}/carts
// in-process (no network): lookup in Pebble, decode, filter, JSON.
func BenchmarkCartsAPI(b *testing.B) {
	dir := b.TempDir()
	var exp []expectedCustomer
	if _, err := processor.SeedStore(dir, testPartitions, seedCustomers(100_000, &exp)); err != nil {
		b.Fatal(err)
	}
	brokers := newCluster(b)
	tp := testTopics(b, brokers)
	n := startAPINode(b, brokers, dir, tp, uniqueName(b, "group"), apiOpts{noProducer: true})
	waitOwners(b, n)
	reqs := make([]*http.Request, 4096)
	for i := range reqs {
		reqs[i] = httptest.NewRequest(http.MethodGet, "/v1/customers/"+url.PathEscape(loadKey((i*7919)%len(exp)))+"/carts", nil)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		w := httptest.NewRecorder()
		n.api.ServeHTTP(w, reqs[i%len(reqs)])
		if w.Code != http.StatusOK {
			b.Fatalf("%d %s", w.Code, w.Body)
		}
	}
}
