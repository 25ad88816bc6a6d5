// Package e2e holds end-to-end tests across real processes: the tokengate
// binary (built once by proctest) run as several refresher replicas and an
// extauthz on one real redis-server, each on free loopback ports. They
// check what only a multi-process setup shows: one rotation across
// replicas, reuse detection across replicas, Redis outages, and sign-out
// reaching extauthz through the revocation feed.
package e2e
