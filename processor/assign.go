package processor

// Assignment of partitions and standby copies to the instances of a group.
// It is a pure function of what the instances report when they join (the
// partitions each owns and those it keeps a warm copy of), computed by the
// group's leader (balancer.go) and the same on every run for the same
// input.
//
// Ownership:
//  1. Balance: each member gets ⌊P/M⌋ or ⌈P/M⌉ partitions, and no more than
//     P mod M members get ⌈P/M⌉.
//  2. Stickiness: a member keeps the partitions it owns, up to its quota.
//  3. Warm copies: a partition without an owner goes, when it can, to a
//     member that has a warm copy of it (the least loaded of them).
//  4. Otherwise to the least loaded member; ties are broken by rendezvous
//     hashing of (member, partition), so that no member is everybody's
//     first choice.
//
// Standbys: the first standby of a partition is the member the partition
// would go to if its owner left the group now (the same rules, run without
// the owner and without any warm copies). When the owner does die, the next
// assignment finds exactly that member with a warm copy and room under its
// quota, so the failover resumes from the standby copy instead of a
// restore. Further standbys (CARTLIFT_STANDBY_REPLICAS > 1) are the other
// members in rendezvous order.

import (
	"hash/fnv"
	"slices"
)

// joinedMember is what a member reports when it joins: its key (the static
// instance id, or the member id), the partitions it owns at generation gen,
// and the partitions it keeps warm copies of.
type joinedMember struct {
	key   string
	owned []int32
	gen   int32
	warm  []int32
}

// assignment is the plan: owners[p] is the index of the member that owns
// partition p, and standbys[m] the partitions member m keeps warm copies
// of, ascending.
type assignment struct {
	owners   []int
	standbys [][]int32
}

// rendezvous ranks member key for partition p; a higher rank is preferred.
func rendezvous(key string, p int32) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	h.Write([]byte{byte(p >> 24), byte(p >> 16), byte(p >> 8), byte(p)})
	return h.Sum64()
}

// assignPartitions plans partitions 0..parts-1 over members (at least one)
// with the given number of standby replicas.
func assignPartitions(members []joinedMember, parts int32, replicas int) assignment {
	owned := make([]int, parts)
	for p := range owned {
		owned[p] = -1
	}
	// A partition claimed by two members (one missed a rebalance) belongs
	// to the claim of the newest generation.
	claimGen := make([]int32, parts)
	for m, jm := range members {
		for _, p := range jm.owned {
			if p < 0 || p >= parts {
				continue
			}
			if owned[p] < 0 || jm.gen > claimGen[p] {
				owned[p], claimGen[p] = m, jm.gen
			}
		}
	}
	all := make([]int, len(members))
	for i := range all {
		all[i] = i
	}
	warm := make([]map[int32]bool, len(members))
	for m, jm := range members {
		warm[m] = map[int32]bool{}
		for _, p := range jm.warm {
			warm[m][p] = true
		}
	}
	owners := planOwners(members, all, owned, warm, parts)

	a := assignment{owners: owners, standbys: make([][]int32, len(members))}
	if replicas <= 0 || len(members) < 2 {
		return a
	}
	for owner := range members {
		// Where each of owner's partitions would go if owner left now.
		var rest []int
		for m := range members {
			if m != owner {
				rest = append(rest, m)
			}
		}
		without := make([]int, parts)
		for p := range without {
			without[p] = owners[p]
			if owners[p] == owner {
				without[p] = -1
			}
		}
		next := planOwners(members, rest, without, nil, parts)
		for p := range parts {
			if owners[p] != owner {
				continue
			}
			first := next[p]
			a.standbys[first] = append(a.standbys[first], p)
			others := slices.DeleteFunc(slices.Clone(rest), func(m int) bool { return m == first })
			slices.SortFunc(others, func(x, y int) int { return rankCompare(members, p, x, y) })
			for _, m := range others[:min(replicas-1, len(others))] {
				a.standbys[m] = append(a.standbys[m], p)
			}
		}
	}
	for m := range a.standbys {
		slices.Sort(a.standbys[m])
	}
	return a
}

// rankCompare orders members x and y by their rendezvous rank for p,
// highest first (member keys are unique, so there are no ties).
func rankCompare(members []joinedMember, p int32, x, y int) int {
	rx, ry := rendezvous(members[x].key, p), rendezvous(members[y].key, p)
	switch {
	case rx > ry:
		return -1
	case rx < ry:
		return 1
	}
	return 0
}

// planOwners assigns every partition to one of the members in eligible
// (indexes into members): prev[p] keeps p where it is eligible and has
// room (-1: no previous owner), then warm copies, then the least loaded.
// warm may be nil.
func planOwners(members []joinedMember, eligible []int, prev []int, warm []map[int32]bool, parts int32) []int {
	n := int32(len(eligible))
	base, extra := parts/n, parts%n
	count := make(map[int]int32, n)
	atCeil := int32(0)
	room := func(m int) bool {
		return count[m] < base || (count[m] == base && atCeil < extra)
	}
	owners := make([]int, parts)
	take := func(m int, p int32) {
		owners[p] = m
		count[m]++
		if count[m] == base+1 {
			atCeil++
		}
	}
	for p := range owners {
		owners[p] = -1
	}
	// Stickiness, member by member so that the quota goes to whole
	// previous assignments in a fixed order.
	for _, m := range eligible {
		for p := range parts {
			if prev[p] == m && room(m) {
				take(m, p)
			}
		}
	}
	best := func(p int32, ok func(m int) bool) int {
		pick := -1
		for _, m := range eligible {
			if !room(m) || !ok(m) {
				continue
			}
			if pick < 0 || count[m] < count[pick] || (count[m] == count[pick] && rankCompare(members, p, m, pick) < 0) {
				pick = m
			}
		}
		return pick
	}
	for p := range parts {
		if owners[p] >= 0 || warm == nil {
			continue
		}
		if m := best(p, func(m int) bool { return warm[m][p] }); m >= 0 {
			take(m, p)
		}
	}
	for p := range parts {
		if owners[p] < 0 {
			take(best(p, func(int) bool { return true }), p)
		}
	}
	return owners
}
