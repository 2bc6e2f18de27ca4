package chatsvc

import "encoding/binary"

// A value shared by the members of a conversation (a history page is the
// same for all of them) is cached with the member list in front of the
// response body, so that a hit can refuse a non-member without the database:
//
//	'M' uvarint(n) uvarint(id1) uvarint(id2-id1) … uvarint(idn-idn-1) body
//
// ids ascending (the deltas are then small). A membership change must
// invalidate the conversation (the cache's duties), which replaces the list.

const membersMagic = 'M'

// packMembers returns the cache value of body for the ascending members.
func packMembers(members []int64, body []byte) []byte {
	b := make([]byte, 0, 1+3*(1+len(members))+len(body)) // ids of up to 21 bits: 3 bytes
	b = append(b, membersMagic)
	b = binary.AppendUvarint(b, uint64(len(members)))
	var prev int64
	for _, id := range members {
		b = binary.AppendUvarint(b, uint64(id-prev))
		prev = id
	}
	return append(b, body...)
}

// unpackMembers returns the body of a value made by packMembers and whether
// userID is one of its members. A malformed value is no member's.
func unpackMembers(v []byte, userID int64) (body []byte, member bool) {
	if len(v) == 0 || v[0] != membersMagic {
		return nil, false
	}
	v = v[1:]
	n, k := binary.Uvarint(v)
	if k <= 0 || n > uint64(len(v)) {
		return nil, false
	}
	v = v[k:]
	var id int64
	for range n {
		d, k := binary.Uvarint(v)
		if k <= 0 {
			return nil, false
		}
		v = v[k:]
		id += int64(d)
		if id == userID {
			member = true
		}
	}
	return v, member
}
