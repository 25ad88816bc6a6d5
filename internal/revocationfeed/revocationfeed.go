// Package revocationfeed is the wire format of the revocation feed
// (GET /v1/revocations): the refresher encodes a Page, extauthz's
// RevocationFeed decodes it. One definition, so the producer and the
// consumer cannot drift apart; the JSON is a public contract (docs/refresher.md)
// and must not change.
package revocationfeed

import "time"

// Entry is one revoked session: every access token of session SessionID is
// invalid until Until, when the last of them expires.
type Entry struct {
	SessionID string    `json:"sid"`
	Until     time.Time `json:"until"`
}

// Page is one answer of the feed: the entries after the cursor the client
// sent, and the cursor to send next. Revoked is [] (never null) when empty.
type Page struct {
	Cursor  string  `json:"cursor"`
	Revoked []Entry `json:"revoked"`
}
