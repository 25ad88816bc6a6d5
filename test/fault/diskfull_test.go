package fault

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tokengate/tokengate/internal/proctest"
)

// fullDisk makes the bolt file's writes fail and lets them succeed again.
type fullDisk interface {
	Fill(t *testing.T)
	Free(t *testing.T)
}

// tmpfsDisk is a small tmpfs filled by a filler file: a real full disk.
type tmpfsDisk struct{ dir string }

func (d tmpfsDisk) Fill(t *testing.T) {
	t.Helper()
	f, err := os.Create(filepath.Join(d.dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill: %v", err)
			}
			break
		}
	}
	// The last partial chunk too: not one free byte left.
	for {
		if _, err := f.Write(chunk[:512]); err != nil {
			break
		}
	}
}

func (d tmpfsDisk) Free(t *testing.T) {
	if err := os.Remove(filepath.Join(d.dir, "filler")); err != nil {
		t.Fatal(err)
	}
}

// rlimitDisk caps the refresher's file size (RLIMIT_FSIZE, prlimit) at the
// bolt file's current size: writes that grow it fail with EFBIG. Used when
// the sandbox does not allow mounting a tmpfs.
type rlimitDisk struct {
	pid  int
	path string
}

func (d rlimitDisk) prlimit(t *testing.T, limit string) {
	t.Helper()
	out, err := exec.Command("prlimit", "--pid", strconv.Itoa(d.pid), "--fsize="+limit).CombinedOutput()
	if err != nil {
		t.Fatalf("prlimit --fsize=%s: %v\n%s", limit, err, out)
	}
}

func (d rlimitDisk) Fill(t *testing.T) {
	d.prlimit(t, strconv.FormatInt(fileSize(t, d.path), 10)+":unlimited")
}

func (d rlimitDisk) Free(t *testing.T) { d.prlimit(t, "unlimited:unlimited") }

// TestDiskFull fills the bolt file's file system (a 16 MiB tmpfs; where
// mounting is not allowed, RLIMIT_FSIZE on the refresher instead) under
// refreshing clients and sign-ins: /readyz must turn 503, refreshes answer
// 200 or 503 and never invalid_grant, and after space returns /readyz is
// 200 again, every session refreshes, none was revoked, and the file
// passes bbolt's check.
func TestDiskFull(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// TOKENGATE_FAULT_DISK=rlimit forces the fallback (to test it).
	mode := "tmpfs"
	if os.Getenv("TOKENGATE_FAULT_DISK") == "rlimit" {
		mode = "rlimit"
	} else if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Logf("mount tmpfs not allowed (%v: %s): using RLIMIT_FSIZE", err, out)
		mode = "rlimit"
	} else {
		t.Cleanup(func() {
			if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
				t.Errorf("umount %s: %v\n%s", dir, err, out)
			}
		})
	}
	path := filepath.Join(dir, "tokengate.db")
	r := startRefresher(t, "bolt://"+path)
	clients := newClients(t, r.URL, "full", 10)
	var disk fullDisk = tmpfsDisk{dir: dir}
	if mode == "rlimit" {
		proctest.RequireBinary(t, "prlimit", "apt-get install -y util-linux")
		disk = rlimitDisk{pid: r.Proc.Cmd.Process.Pid, path: path}
	}

	disk.Fill(t)
	filledAt := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var signIns, signInRefused atomic.Int64
	wg.Add(2)
	go func() {
		defer wg.Done()
		runClients(ctx, r.URL, clients)
	}()
	go func() {
		// Sign-ins add data, so the file must grow.
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			a := signIn(r.URL, "full-new-"+strconv.Itoa(i))
			switch {
			case a.Err == nil && a.Status == http.StatusCreated:
				signIns.Add(1)
			case a.Err == nil && a.Status == http.StatusServiceUnavailable:
				signInRefused.Add(1)
				time.Sleep(20 * time.Millisecond)
			default:
				t.Errorf("sign-in on a full disk: %v, want 201 or 503", a)
				return
			}
		}
	}()
	var notReadyAfter time.Duration
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if status(r.URL+"/readyz") == http.StatusServiceUnavailable {
			notReadyAfter = time.Since(filledAt)
			break
		}
	}
	// Stay full a while longer: readiness must not come back while it is.
	time.Sleep(3 * time.Second)
	stillFull := status(r.URL + "/readyz")
	cancel()
	wg.Wait()
	retries := 0
	for _, c := range clients {
		retries += c.Retries
		if c.Lost != nil {
			t.Errorf("client %s on a full disk: %v, want only 200 or 503", c.Sub, c.Lost)
		}
	}
	if notReadyAfter == 0 {
		t.Fatalf("/readyz stayed 200 for 30 s on a full disk (%d refreshes refused)", retries)
	}
	if stillFull != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d 3 s later with the disk still full, want 503", stillFull)
	}

	disk.Free(t)
	freedAt := time.Now()
	r.Proc.WaitHTTP(t, r.URL+"/readyz", http.StatusOK, 15*time.Second)
	readyAfter := time.Since(freedAt)
	settle(t, r.URL, clients, 30*time.Second)
	for _, c := range clients {
		if c.Lost != nil {
			t.Errorf("client %s after space returned: %v", c.Sub, c.Lost)
		}
	}
	if a := signIn(r.URL, "after-full"); a.Status != http.StatusCreated {
		t.Errorf("sign-in after space returned: %v", a)
	}
	if n := feedLen(t, r.URL); n != 0 {
		t.Errorf("%d sessions revoked, want 0", n)
	}
	r.Stop()
	boltCheck(t, path)
	t.Logf("%s: /readyz 503 %v after the disk filled; %d refreshes and %d sign-ins answered 503 (%d sign-ins succeeded meanwhile); /readyz 200 %v after space returned; every session refreshed, 0 revoked, bolt check clean",
		mode, notReadyAfter.Round(10*time.Millisecond), retries, signInRefused.Load(), signIns.Load(), readyAfter.Round(10*time.Millisecond))
}
