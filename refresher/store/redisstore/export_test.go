package redisstore

// SplitKeys makes s write the keys outside a session's slot with separate
// commands, as it does on Redis Cluster, so that path runs against a
// standalone test server too.
func SplitKeys(s *Store) { s.split = true }
