// Package faultsuite injects faults into a running ledgerd deployment and
// checks that the ledger's guarantees hold through them. It has only
// tests: TestFaultSuite builds the ledgerd binary, runs two `ledgerd serve`
// processes on one PostgreSQL server and one NATS JetStream server (both
// started by the test, so that it can stop them), drives them with a small
// load of escalations, claims, reads and requests made to be refused, and
// takes away, in turn, the leader (SIGKILL, then SIGSTOP), NATS and
// PostgreSQL.
//
// After each fault it checks that every acknowledged command has exactly
// one event in the log, that no refused request (4xx) wrote one, that
// JetStream holds exactly one message per event in log order, and that the
// read models equal a fold of the log; and, for each fault, what clients
// and the background workers must see: another process takes the lead
// within a few seconds, reads keep answering, the relay resumes promptly
// after NATS returns, and a database outage answers 503 with Retry-After.
//
// `go test ./internal/faultsuite` runs each fault once; -faults.long runs
// more rounds with a longer load and longer outages. docs/fault-suite.md
// describes the checks.
package faultsuite
