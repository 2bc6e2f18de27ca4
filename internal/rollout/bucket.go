package rollout

import "strconv"

// Buckets is the number of buckets users are hashed into: percent p covers
// buckets [0, p*Buckets/100), so raising p only adds users.
const Buckets = 10000

// Bucket returns the user's stable bucket in [0, Buckets) for an endpoint:
// FNV-1a (64 bit) of "<endpoint>:<decimal user id>", finalized with
// MurmurHash3's fmix64 (FNV alone mixes low bits poorly), modulo Buckets.
// Other tools (canary, load generator) may compute cohorts with the same
// function; it is part of the contract and must not change.
func Bucket(endpoint string, userID int64) int {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	for i := 0; i < len(endpoint); i++ {
		h ^= uint64(endpoint[i])
		h *= prime
	}
	h ^= ':'
	h *= prime
	var buf [20]byte
	for _, c := range strconv.AppendInt(buf[:0], userID, 10) {
		h ^= uint64(c)
		h *= prime
	}
	// fmix64
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return int(h % Buckets)
}

// InRollout reports whether the user is among the percent of users of the
// endpoint that take the optimized path.
func InRollout(endpoint string, userID int64, percent int) bool {
	if percent <= 0 {
		return false
	}
	if percent >= 100 {
		return true
	}
	return Bucket(endpoint, userID) < percent*(Buckets/100)
}
