package proctest

import (
	"net"
	"testing"
)

func TestStartRedisAnswersPing(t *testing.T) {
	r := StartRedis(t)
	c, err := net.Dial("tcp", r.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 7)
	if _, err := c.Read(buf); err != nil {
		t.Fatal(err)
	}
	if string(buf) != "+PONG\r\n" {
		t.Fatalf("PING answered %q", buf)
	}
}
