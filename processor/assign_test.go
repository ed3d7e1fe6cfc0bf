package processor

import (
	"fmt"
	"slices"
	"testing"
)

func membersNamed(names ...string) []joinedMember {
	out := make([]joinedMember, len(names))
	for i, n := range names {
		out[i] = joinedMember{key: n}
	}
	return out
}

// withPlan returns members reporting a's ownership and standbys as what
// they own and keep warm.
func withPlan(members []joinedMember, a assignment) []joinedMember {
	out := make([]joinedMember, len(members))
	for m := range members {
		out[m] = joinedMember{key: members[m].key, gen: 1, warm: a.standbys[m]}
		for p, o := range a.owners {
			if o == m {
				out[m].owned = append(out[m].owned, int32(p))
			}
		}
	}
	return out
}

func checkBalanced(t *testing.T, a assignment, members int, parts int32) {
	t.Helper()
	counts := make([]int32, members)
	for p, o := range a.owners {
		if o < 0 || o >= members {
			t.Fatalf("partition %d has no owner: %v", p, a.owners)
		}
		counts[o]++
	}
	if slices.Max(counts)-slices.Min(counts) > 1 {
		t.Fatalf("unbalanced: %v partitions per member", counts)
	}
}

func TestAssignmentIsBalancedStickyAndDeterministic(t *testing.T) {
	const parts = 8
	one := membersNamed("a")
	a1 := assignPartitions(one, parts, 1)
	checkBalanced(t, a1, 1, parts)
	if len(a1.standbys[0]) != 0 {
		t.Fatalf("a lone member keeps standbys of its own partitions: %v", a1.standbys)
	}

	// Scale out to three: a keeps what its quota allows, nothing moves
	// between the two that already had partitions.
	three := append(withPlan(one, a1), membersNamed("b", "c")...)
	a3 := assignPartitions(three, parts, 1)
	checkBalanced(t, a3, 3, parts)
	kept := 0
	for p, o := range a3.owners {
		if o == 0 && a1.owners[p] == 0 {
			kept++
		}
	}
	if kept != 3 {
		t.Fatalf("a kept %d of its partitions, want its quota of 3: %v", kept, a3.owners)
	}
	if again := assignPartitions(three, parts, 1); fmt.Sprint(again) != fmt.Sprint(a3) {
		t.Fatalf("the same input planned twice differently: %v and %v", a3, again)
	}
	// Every partition has one standby, never on its owner.
	for p := range int32(parts) {
		var on []int
		for m, sb := range a3.standbys {
			if slices.Contains(sb, p) {
				on = append(on, m)
			}
		}
		if len(on) != 1 || on[0] == a3.owners[p] {
			t.Fatalf("partition %d (owner %d) has standbys on %v", p, a3.owners[p], on)
		}
	}
	// A rebalance with nothing changed changes nothing.
	if same := assignPartitions(withPlan(three, a3), parts, 1); fmt.Sprint(same.owners) != fmt.Sprint(a3.owners) {
		t.Fatalf("a stable group moved partitions: %v then %v", a3.owners, same.owners)
	}
}

// The first standby of each partition is where the partition goes when
// its owner dies: the assignment after the failure gives every orphan to
// the member that kept its warm copy.
func TestFailoverGoesToTheStandby(t *testing.T) {
	for _, tc := range []struct {
		members int
		parts   int32
	}{{2, 8}, {3, 8}, {4, 8}, {3, 16}, {5, 7}, {4, 3}} {
		names := make([]string, tc.members)
		for i := range names {
			names[i] = fmt.Sprintf("cartlift-%x", i*7919)
		}
		a := assignPartitions(membersNamed(names...), tc.parts, 1)
		a = assignPartitions(withPlan(membersNamed(names...), a), tc.parts, 1) // settled
		for dead := range tc.members {
			var survivors []joinedMember
			var index []int // survivor -> old member index
			for m, jm := range withPlan(membersNamed(names...), a) {
				if m != dead {
					survivors = append(survivors, jm)
					index = append(index, m)
				}
			}
			after := assignPartitions(survivors, tc.parts, 1)
			checkBalanced(t, after, len(survivors), tc.parts)
			for p, o := range a.owners {
				if o != dead {
					if index[after.owners[p]] != o {
						t.Errorf("%d members, %d partitions: partition %d moved from %d, which is alive", tc.members, tc.parts, p, o)
					}
					continue
				}
				if got := index[after.owners[p]]; !slices.Contains(a.standbys[got], int32(p)) {
					t.Errorf("%d members, %d partitions, member %d dead: partition %d went to %d, whose standbys are %v",
						tc.members, tc.parts, dead, p, got, a.standbys[got])
				}
			}
		}
	}
}

func TestMoreStandbysThanMembers(t *testing.T) {
	a := assignPartitions(membersNamed("a", "b", "c"), 8, 5)
	for p := range int32(8) {
		n := 0
		for m, sb := range a.standbys {
			if slices.Contains(sb, p) {
				n++
				if m == a.owners[p] {
					t.Fatalf("partition %d has a standby on its owner", p)
				}
			}
		}
		if n != 2 {
			t.Fatalf("partition %d has %d standbys, want every other member (2)", p, n)
		}
	}
}

func TestPartitionListEncoding(t *testing.T) {
	for _, parts := range [][]int32{nil, {0}, {1, 7, 300, 1 << 30}} {
		got, err := parsePartitionList(appendPartitionList(nil, parts))
		if err != nil || !slices.Equal(got, parts) && len(parts) > 0 {
			t.Fatalf("%v decoded as %v, %v", parts, got, err)
		}
	}
	for _, bad := range [][]byte{{2}, {1}, {1, 5, 1}, {1, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}} {
		if _, err := parsePartitionList(bad); err == nil {
			t.Errorf("%x decoded without an error", bad)
		}
	}
}
