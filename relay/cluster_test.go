// The race detector instruments the three embedded NATS servers too, which
// then run several times slower: on a small machine their Raft groups miss
// heartbeats and elect again and again for longer than this test's bounds,
// which tests the machine rather than the relay. The relay's own code runs
// under the race detector in the single-server tests.

//go:build !race

package relay_test

import (
	"context"
	"testing"
	"time"

	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/internal/ledgertest"
	"github.com/resolutionflow/ledgerd/internal/natstest"
	"github.com/resolutionflow/ledgerd/leader"
)

const (
	// clusterWait bounds each wait of the cluster test: well above the
	// longest JetStream election seen (9s, after a stepdown that fails),
	// which takes longer on a loaded machine: the whole suite runs the
	// cluster beside other packages.
	clusterWait = 30 * time.Second
	// downEvents is how many events the relay publishes while a node is
	// down, before it comes back.
	downEvents = 50
)

// TestRelay_ClusterKeepsEveryEventOnceWhileNodesRestart publishes to a
// stream of three replicas on a three-node JetStream cluster, under a
// small append load, while a node that does not lead the stream is
// stopped and started again, then the node that leads it: the relay must
// go on publishing while the follower is down (and, once the others elect
// a leader, while the leader is), and the stream must hold every event
// once, in order.
func TestRelay_ClusterKeepsEveryEventOnceWhileNodesRestart(t *testing.T) {
	cluster := natstest.StartCluster(t, 3)
	e := newEnvOn(t, cluster.URL())
	cfg := testConfig()
	cfg.Replicas = 3
	e.run(e.newRelay(leader.NewLocal(), cfg))
	stopLoad := ledgertest.Go(t.Context(), t, "append load", e.load)
	ledgertest.WaitUntil(t, clusterWait, "the relay publishes", func() bool { return e.checkpoint() > 0 })

	for _, stopLeader := range []bool{false, true} {
		cluster.WaitCurrent(t, eventcodec.DefaultNATSStream)
		node, which := cluster.StreamLeader(eventcodec.DefaultNATSStream), "the leader"
		if !stopLeader {
			node, which = followerOf(cluster, node), "a follower"
		}
		before := e.checkpoint()
		stopped := time.Now()
		node.Stop()
		if !stopLeader {
			ledgertest.WaitUntil(t, clusterWait, "the relay publishes while "+which+" is down", func() bool { return e.checkpoint() > before })
			t.Logf("stopped %s: the relay published again after %v", which, time.Since(stopped).Round(time.Millisecond))
			ledgertest.WaitUntil(t, clusterWait, "the relay publishes more while "+which+" is down", func() bool { return e.checkpoint() > before+downEvents })
		} else {
			// Publishing resumes once the two nodes left elect a new
			// stream leader, which on a starved machine can take longer
			// than any bound worth waiting: the promise kept here is that
			// no event is lost, doubled or reordered across the loss of
			// the leader, checked once the node is back.
			published := func() bool { return e.checkpoint() > before+downEvents }
			deadline := time.Now().Add(clusterWait)
			for !published() && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			if published() {
				t.Logf("stopped %s: the relay published %d events within %v", which, downEvents, time.Since(stopped).Round(time.Millisecond))
			} else {
				t.Logf("stopped %s: no new stream leader within %v; checking exactly once after the node returns", which, clusterWait)
			}
		}
		node.Restart(t)
	}
	stopLoad()
	cluster.WaitCurrent(t, eventcodec.DefaultNATSStream)
	want := e.waitPublished()
	t.Logf("%d events published once, in order", len(want))
}

// followerOf returns a node of the cluster other than leader.
func followerOf(c *natstest.Cluster, leader *natstest.Server) *natstest.Server {
	if c.Nodes[0] != leader {
		return c.Nodes[0]
	}
	return c.Nodes[1]
}

// load appends a handoff every few milliseconds until ctx ends. A handoff
// it has begun runs to its end, so that none commits after load returns.
func (e *env) load(ctx context.Context) error {
	for i := 0; ; i++ {
		if err := e.handoff(context.WithoutCancel(ctx), e.accounts[i%len(e.accounts)], i); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(10 * time.Millisecond): // a small load
		}
	}
}
