// Package fault holds the fault suite: the built tokengate
// binary (internal/proctest) is killed, starved of disk, or soaked under
// load, and the tests check that nothing is lost, nothing is let through
// and nothing grows. Short variants run in `go test ./...`; the long ones
// run with `make test-fault-long` (TOKENGATE_FAULT_LONG=1). The commands
// and the measured figures are in docs/operations.md, "Fault suite".
package fault
