package redisstore

import (
	"context"
	"log/slog"
	"strings"
)

// Durability is what Redis's persistence settings say about acknowledged
// writes (docs/operations.md, "Redis durability").
type Durability struct {
	// Checked is false when the settings could not be read (CONFIG is
	// disabled or renamed on many managed services).
	Checked bool
	// AppendOnly, AppendFsync and Save are the settings as CONFIG GET
	// answers them.
	AppendOnly, AppendFsync, Save string
	// Loss says what a Redis crash or restart loses; "" when nothing
	// acknowledged is lost (appendonly yes, appendfsync always).
	Loss string
}

// CheckDurability reads Redis's persistence settings (CONFIG GET
// appendonly, appendfsync, save). On Cluster it asks one node.
func (s *Store) CheckDurability(ctx context.Context) (Durability, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	var d Durability
	for _, p := range []struct {
		name string
		dst  *string
	}{{"appendonly", &d.AppendOnly}, {"appendfsync", &d.AppendFsync}, {"save", &d.Save}} {
		m, err := s.rdb.ConfigGet(ctx, p.name).Result()
		if err != nil {
			return d, err
		}
		*p.dst = m[p.name]
	}
	d.Checked = true
	switch {
	case d.AppendOnly != "yes" && strings.TrimSpace(d.Save) == "":
		d.Loss = "everything: Redis has no persistence (appendonly no, no save points), so a Redis restart signs every user out"
	case d.AppendOnly != "yes":
		d.Loss = "every sign-in and rotation since the last RDB snapshot (appendonly no): after a Redis restart those clients get invalid_grant and sign in again"
	case d.AppendFsync == "everysec":
		d.Loss = "up to about one second of acknowledged sign-ins and rotations on a Redis crash (appendfsync everysec): those clients get invalid_grant and sign in again"
	case d.AppendFsync != "always":
		d.Loss = "acknowledged sign-ins and rotations the OS had not flushed on a Redis crash (appendfsync " + d.AppendFsync + "): those clients get invalid_grant and sign in again"
	}
	return d, nil
}

// logDurability warns, once per process start, when acknowledged rotations
// can be lost; when the settings cannot be read it says so at debug level.
func (s *Store) logDurability(ctx context.Context, log *slog.Logger) {
	d, err := s.CheckDurability(ctx)
	switch {
	case err != nil:
		log.DebugContext(ctx, "redis persistence settings not readable (CONFIG GET refused, as on many managed services); check them yourself: appendonly yes, appendfsync always",
			"error", err)
	case d.Loss != "":
		log.WarnContext(ctx, "redis persistence can lose acknowledged rotations; set appendonly yes and appendfsync always (docs/operations.md, Redis durability)",
			"loses", d.Loss, "appendonly", d.AppendOnly, "appendfsync", d.AppendFsync, "save", d.Save)
	default:
		log.DebugContext(ctx, "redis persistence: appendonly yes, appendfsync always", "save", d.Save)
	}
}
