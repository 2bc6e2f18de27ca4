package httpapi

import (
	"net/http"
	"strings"

	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/wal"
)

// Read consistency (api.md "Read consistency"): a read may ask for the
// primary (X-Consistency: strong) or for at least a given write
// (X-Consistency-Token, the header of that write's answer); by default it
// gets read-your-writes per user, which the service provides. Every read
// answer says where it was served from (X-Read-Source), every write answer
// carries its token.

// Header names of the consistency contract.
const (
	headerConsistency      = "X-Consistency"
	headerConsistencyToken = "X-Consistency-Token"
	headerReadSource       = "X-Read-Source"
)

// parseReadOptions reads X-Consistency and X-Consistency-Token; a value
// either cannot be is EINVALID.
func parseReadOptions(r *http.Request) (chat.ReadOptions, error) {
	var o chat.ReadOptions
	if v := strings.TrimSpace(r.Header.Get(headerConsistency)); v != "" {
		if !strings.EqualFold(v, "strong") {
			return o, chat.Errorf(chat.EINVALID, "%s: %q is not a consistency level; the only one is \"strong\" (leave it out for read-your-writes)", headerConsistency, v)
		}
		o.Strong = true
	}
	if v := strings.TrimSpace(r.Header.Get(headerConsistencyToken)); v != "" {
		lsn, err := wal.Parse(v)
		if err != nil {
			return o, chat.Errorf(chat.EINVALID, "%s: %q is not a token; send back the %s header of a write response as it was", headerConsistencyToken, v, headerConsistencyToken)
		}
		o.Token = lsn
	}
	return o, nil
}

// setToken puts a write's consistency token on its answer (none when the
// write's position is unknown).
func setToken(w http.ResponseWriter, token wal.LSN) {
	if token != 0 {
		w.Header().Set(headerConsistencyToken, token.String())
	}
}
