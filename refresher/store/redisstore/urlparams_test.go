package redisstore_test

import (
	"context"
	"strings"
	"testing"

	"github.com/tokengate/tokengate/internal/proctest"
	"github.com/tokengate/tokengate/refresher/store/redisstore"
)

// go-redis's own URL parameters reach the connection to a real server.
func TestURLDriverParamsOnRealServer(t *testing.T) {
	t.Parallel()
	r := proctest.StartRedis(t)
	ctx := context.Background()
	s, err := redisstore.Open(ctx, "redis://"+r.Addr+"/3?client_name=tg-url-test&pool_size=2&min_idle_conns=1&read_timeout=2s", redisstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	list, err := s.Client().ClientList(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(list, "name=tg-url-test") || !strings.Contains(list, "db=3") {
		t.Errorf("CLIENT LIST lacks name=tg-url-test db=3:\n%s", list)
	}
	if n := s.Client().PoolStats().TotalConns; n > 2 {
		t.Errorf("%d connections, pool_size=2", n)
	}
}
